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
  continuation_kd,        kd_jax.methods.continuation_kd              Jafari et al. 2022, 2021
  annealing_kd
  role-wise policies      kd_jax.methods.rolewise (a preprocess)      Fu et al. 2020
  ======================  ==========================================  ==========================

``get_method(name, view)`` returns a ``Method``; any objective composes with any view
(``get_method("continuation_kd", "cutmix_pick")``) and any preprocess (the step builder's
third part). ``make_view(name, modality, **options)`` builds a view maker from keywords.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

from kd_jax.methods import backward_kd, continuation_kd, strong_aug, vanilla
from kd_jax.methods.base import Method, View, ViewMaker, teacher_labelled

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
  ),
  "annealing_kd": Method(
    "annealing_kd",
    continuation_kd.annealing_objective,
    schedule=continuation_kd.annealing_values,
    schedule_block="continuation",
    phases=continuation_kd.annealing_phases,
  ),
}

# View makers by modality and name: factories taking keyword options.
VIEWS = {
  "image": {
    "identity": strong_aug.identity,
    "flip": strong_aug.flip,
    "crop_flip": strong_aug.crop_flip,
    "cutout": strong_aug.cutout,
    "autoaugment": strong_aug.autoaugment,
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
  "mixup",
  "cutmix",
  "cutmix_pick",
  "backward",
)


def get_method(name: str, view: str | None = None, **objective_options) -> Method:
  """The method called ``name``; a ``view`` replaces its view maker ("none" removes it).

  Objectives and views compose freely: ``get_method("continuation_kd", "cutmix_pick")``
  is Continuation-KD on x plus the KD term on a CutMix-pick view. ``objective_options`` fix
  static options of the objective (``reduction="sum"`` for Continuation-KD's hinge); options
  the objective does not take are ignored, so a method's whole config block can be passed.
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid names: {', '.join(sorted(METHODS))}.")
  method = METHODS[name]
  if view:
    if view not in VIEW_NAMES:
      raise ValueError(f"unknown view {view!r}; valid names: {', '.join(VIEW_NAMES)}.")
    method = dataclasses.replace(
      method, name=f"{name}+{view}", view=None if view == "none" else view
    )
  accepted = inspect.signature(method.objective).parameters
  options = {k: v for k, v in objective_options.items() if k in accepted}
  if options:
    method = dataclasses.replace(method, objective=functools.partial(method.objective, **options))
  return method


def make_view(name: str | None, modality: str = "image", **options) -> ViewMaker | None:
  """The view maker ``name`` for ``modality`` ("image" | "text"), from keyword options.

  Options a view does not take are ignored, so one options mapping can serve every view;
  None or "none" gives None.
  """
  if name in (None, "none"):
    return None
  factories = VIEWS.get(modality, {})
  if name not in factories:
    valid = ", ".join(factories) or "none"
    raise ValueError(f"unknown {modality} view {name!r}; valid names: {valid}.")
  factory = factories[name]
  accepted = inspect.signature(factory).parameters
  takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
  if takes_any:  # backward_kd.image_view forwards to sample_options
    accepted = inspect.signature(backward_kd.sample_options).parameters
  return factory(**{k: v for k, v in options.items() if k in accepted})


def hparams_at(
  method: Method,
  epoch: int,
  num_epochs: int,
  *,
  kd: dict,
  view_weight: float = 1.0,
  schedule_options: dict | None = None,
  label_smoothing: float = 0.0,
) -> dict[str, float]:
  """Every value the step reads during ``epoch`` (counted from 1): KD's constants and the
  label smoothing ε, then the method's own schedule (φ, ψ, margin, ...). φ = ψ = 1 where the
  method has none."""
  values = {
    **vanilla.kd_values(**kd, view_weight=view_weight, label_smoothing=label_smoothing),
    "phi": 1.0,
    "psi": 1.0,
    "margin": 0.0,
  }
  if method.schedule is not None:
    values.update(method.schedule(epoch, num_epochs, **(schedule_options or {})))
  return values


__all__ = [
  "METHODS",
  "VIEWS",
  "VIEW_NAMES",
  "Method",
  "View",
  "ViewMaker",
  "get_method",
  "hparams_at",
  "make_view",
  "teacher_labelled",
]
