"""The distillation methods, one module per family, and the registry that composes them.

Where to find a method (its formula, its schedule and its contribution to the step):

  ======================  ==========================================  ==========================
  method                  module                                      paper
  ======================  ==========================================  ==========================
  ce, kd                  kd_jax.methods.vanilla                      Hinton et al. 2015
  kd_mixup, kd_cutmix,    kd_jax.methods.strong_aug                   Wang et al. 2022
  kd_cutmix_pick (and     (views identity, flip, crop_flip, cutout,
  any method + a view)    autoaugment, mixup, cutmix, cutmix_pick)
  backward_kd             kd_jax.methods.backward_kd (images, text)   Jafari et al. 2023
  dkd                     kd_jax.methods.dkd                          Zhao et al. 2022
  mlkd (default view      kd_jax.methods.mlkd                         Jin et al. 2023
  dual: weak + strong)    (views randaugment, dual: strong_aug)
  continuation_kd,        kd_jax.methods.continuation_kd              Jafari et al. 2022, 2021
  annealing_kd
  role-wise policies      kd_jax.methods.rolewise (a preprocess)      Fu et al. 2020
  ======================  ==========================================  ==========================

``get_method(name, view)`` returns a ``Method``; any objective composes with any view
(``get_method("continuation_kd", "cutmix_pick")``) and any preprocess (the step builder's
third part). ``make_view(name, modality, **options)`` builds a view maker from keywords.
Options are explicit everywhere: one a method, view or block does not take raises a
ValueError that names the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from kd_jax.methods import backward_kd, continuation_kd, dkd, mlkd, strong_aug, vanilla
from kd_jax.methods.base import BlockOptions, Method, View, ViewMaker, teacher_labelled

METHODS: dict[str, Method] = {
  "ce": Method("ce", vanilla.ce_objective, uses_teacher_on_x=False),
  "kd": Method("kd", vanilla.kd_objective),
  "kd_mixup": Method("kd_mixup", vanilla.kd_objective, "mixup"),
  "kd_cutmix": Method("kd_cutmix", vanilla.kd_objective, "cutmix"),
  "kd_cutmix_pick": Method("kd_cutmix_pick", vanilla.kd_objective, "cutmix_pick"),
  "backward_kd": Method("backward_kd", vanilla.kd_objective, "backward"),
  "continuation_kd": Method(
    "continuation_kd",
    continuation_kd.continuation_objective,
    schedule=continuation_kd.continuation_values,
    schedule_block="continuation",
    objective_options=continuation_kd.OBJECTIVE_OPTIONS,
    schedule_options=continuation_kd.CONTINUATION_SCHEDULE_OPTIONS,
    unused_block_keys=continuation_kd.CONTINUATION_UNUSED,
  ),
  "dkd": Method(
    "dkd",
    dkd.dkd_objective,
    schedule=dkd.dkd_values,
    schedule_block="dkd",
    schedule_options=dkd.SCHEDULE_OPTIONS,
  ),
  "mlkd": Method(
    "mlkd",
    mlkd.mlkd_objective,
    "dual",
    schedule_block="mlkd",
    objective_options=mlkd.OBJECTIVE_OPTIONS,
  ),
  "annealing_kd": Method(
    "annealing_kd",
    continuation_kd.annealing_objective,
    schedule=continuation_kd.annealing_values,
    schedule_block="continuation",
    phases=continuation_kd.annealing_phases,
    objective_options=continuation_kd.OBJECTIVE_OPTIONS,
    schedule_options=continuation_kd.ANNEALING_SCHEDULE_OPTIONS,
    phases_options=continuation_kd.ANNEALING_PHASES_OPTIONS,
    unused_block_keys=continuation_kd.ANNEALING_UNUSED,
  ),
}

# View makers by modality and name: factories taking keyword options.
VIEWS: dict[str, dict[str, Callable[..., ViewMaker]]] = {
  "image": {
    "identity": strong_aug.identity,
    "flip": strong_aug.flip,
    "crop_flip": strong_aug.crop_flip,
    "cutout": strong_aug.cutout,
    "autoaugment": strong_aug.autoaugment,
    "randaugment": strong_aug.randaugment,
    "dual": strong_aug.dual,
    "mixup": strong_aug.mixup,
    "cutmix": strong_aug.cutmix,
    "cutmix_pick": strong_aug.cutmix_pick,
    "backward": backward_kd.image_view,
  },
  "text": {"backward": backward_kd.token_view},
}
VIEW_NAMES = (
  "none",
  "identity",
  "flip",
  "crop_flip",
  "cutout",
  "autoaugment",
  "randaugment",
  "dual",
  "mixup",
  "cutmix",
  "cutmix_pick",
  "backward",
)


def get_method(name: str, view: str | None = None, **objective_options: Any) -> Method:
  """The method called ``name``; a ``view`` replaces its view maker ("none" removes it).

  Objectives and views compose freely: ``get_method("continuation_kd", "cutmix_pick")``
  is Continuation-KD on x plus the KD term on a CutMix-pick view. ``objective_options`` fix
  static options of the objective (``reduction="sum"`` for Continuation-KD's hinge: the
  method's ``objective_options``); any other keyword raises, naming the valid ones. To pass
  a method's whole config block, split it first: ``method.split_block(block).objective``.

  >>> get_method("continuation_kd", "cutmix_pick", reduction="mean").name
  'continuation_kd+cutmix_pick'
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid names: {', '.join(sorted(METHODS))}.")
  method = METHODS[name]
  unknown = sorted(set(objective_options) - set(method.objective_options))
  if unknown:
    valid = ", ".join(method.objective_options) or "none"
    raise ValueError(
      f"method {name!r} takes no objective option {', '.join(map(repr, unknown))}; "
      f"valid options: {valid}."
    )
  if view:
    if view not in VIEW_NAMES:
      raise ValueError(f"unknown view {view!r}; valid names: {', '.join(VIEW_NAMES)}.")
    method = dataclasses.replace(
      method, name=f"{name}+{view}", view=None if view == "none" else view
    )
  if objective_options:
    method = dataclasses.replace(
      method, objective=functools.partial(method.objective, **objective_options)
    )
  return method


def _view_factory(name: str, modality: str) -> Callable[..., ViewMaker]:
  factories = VIEWS.get(modality)
  if factories is None:
    raise ValueError(f"unknown modality {modality!r}; valid: {', '.join(VIEWS)}.")
  if name not in factories:
    valid = ", ".join(factories) or "none"
    raise ValueError(f"unknown {modality} view {name!r}; valid names: {valid}.")
  return factories[name]


def view_options(name: str, modality: str = "image") -> tuple[str, ...]:
  """The options the view ``name`` takes: the keywords of ``make_view(name, modality)``.

  >>> view_options("cutmix_pick")
  ('alpha', 'pool_rounds', 'score', 'n_pick', 'label_mixing')
  """
  parameters = inspect.signature(_view_factory(name, modality)).parameters.values()
  return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


def make_view(
  name: str | None,
  modality: str = "image",
  *,
  input_range: Any = None,
  **options: Any,
) -> ViewMaker | None:
  """The view maker ``name`` for ``modality`` ("image" | "text"), from keyword options.

  ``options`` are the view's own (``view_options(name)``); one it does not take raises,
  naming the valid ones. ``input_range`` is where pixel values 0 and 255 land after
  normalisation (the preprocess's ``valid_range()``): context rather than an option, given
  to the views that work on pixels (crop_flip, autoaugment, randaugment, dual) and unused by
  the others.
  None or "none" gives None.

  >>> make_view("cutmix_pick", pool_rounds=4, score="kl").name
  'cutmix_pick'
  >>> make_view("mixup", alpah=0.2)
  Traceback (most recent call last):
  ...
  ValueError: the mixup view takes no option 'alpah'; valid options: alpha, label_mixing.
  """
  if name in (None, "none"):
    return None
  factory = _view_factory(name, modality)
  valid = view_options(name, modality)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(
      f"the {name} view takes no option {', '.join(map(repr, unknown))}; "
      f"valid options: {', '.join(valid) or 'none'}."
    )
  if "input_range" in valid and "input_range" not in options:
    options["input_range"] = input_range
  return factory(**options)


def hparams_at(
  method: Method,
  epoch: int,
  num_epochs: int,
  *,
  kd: Mapping[str, Any],
  view_weight: float = 1.0,
  schedule_options: Mapping[str, Any] | None = None,
  label_smoothing: float = 0.0,
) -> dict[str, float]:
  """Every value the step reads during ``epoch`` (counted from 1): KD's constants and the
  label smoothing ε, then the method's own schedule (φ, ψ, margin, ...). φ = ψ = 1 where the
  method has none. ``schedule_options``: the method's config block (``config.continuation``),
  whose keys are checked and split by ``Method.split_block``."""
  values = {
    **vanilla.kd_values(**kd, view_weight=view_weight, label_smoothing=label_smoothing),
    "phi": 1.0,
    "psi": 1.0,
    "margin": 0.0,
  }
  if method.schedule is not None:
    options = method.split_block(schedule_options or {}).schedule
    values.update(method.schedule(epoch, num_epochs, **options))
  return values


__all__ = [
  "METHODS",
  "VIEWS",
  "VIEW_NAMES",
  "BlockOptions",
  "Method",
  "View",
  "ViewMaker",
  "get_method",
  "hparams_at",
  "make_view",
  "teacher_labelled",
  "view_options",
]
