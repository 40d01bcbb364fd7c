"""What every method is made of: an objective on x, an optional extra view x', per-epoch values.

A method (DESIGN.md) is a recipe of independent parts, so they compose:

  * an objective on the original view, ``(student_logits, teacher_logits, labels, hparams, *,
    regression) -> [batch]`` (kd_jax.methods.vanilla, kd_jax.methods.continuation_kd);
  * a view maker that adds an extra view x' of the batch, made on device inside the step
    (kd_jax.methods.strong_aug, kd_jax.methods.backward_kd); the student gets the KD term
    on x' (``ViewMaker.loss``);
  * per-epoch values (temperature, weights, φ, ψ) that enter the compiled step as arrays.

``hparams`` is a dict of scalar arrays, so changing a value never recompiles the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from kd_jax import losses, validation


class View(NamedTuple):
  """An extra view of ``n`` samples and what its loss needs."""

  inputs: Any  # what the student takes: images [n, H, W, C] or a token dict
  teacher_logits: jax.Array  # [n, classes]
  # Labels as the batch has them: integer class ids [n] or one-hot / soft rows [n, classes].
  labels: jax.Array  # the label of the example each sample is mostly made of
  partner_labels: jax.Array  # the label of the example mixed in
  lam: jax.Array  # [n] weight of ``labels`` (kept-area fraction for CutMix)


def teacher_labelled(
  inputs: Any, teacher_fn: Callable[[Any], jax.Array], labels: jax.Array
) -> View:
  """A view of generated samples, labelled by the teacher only (their class is unknown)."""
  lam = jnp.ones(labels.shape[:1], jnp.float32)
  return View(inputs, teacher_fn(inputs), labels, labels, lam)


@dataclasses.dataclass(frozen=True)
class ViewMaker:
  """``make(key, inputs, labels, teacher_fn, student_fn, hparams) -> View`` and its loss.

  ``inputs`` is the preprocessed batch x (normalised, crop/flipped images, or a token dict);
  ``teacher_fn`` and ``student_fn`` map inputs to logits in inference mode with no
  parameter gradient (kd_jax.models.adapters.Bound, or any function).
  """

  make: Callable[..., View]
  name: str
  label_mixing: bool = False
  # What the student gets on x': "kd", the KD term (``loss``), or "objective", the method's
  # own objective as on x (the dual view's default).
  term: str = "kd"

  def __call__(self, key, inputs, labels, teacher_fn, student_fn, hparams) -> View:
    if isinstance(labels, (list, tuple)):  # a Python list of class ids works too
      labels = jnp.asarray(labels)
    return self.make(
      key,
      inputs,
      labels,
      validation.logits_function("teacher_fn", teacher_fn),
      validation.logits_function("student_fn", student_fn),
      hparams,
    )

  def loss(self, student_logits, view: View, hparams, objective=None) -> jax.Array:
    """Batch-mean loss on x': ``view_weight·kd_weight·τ²·KL(p_T^τ(x') ‖ p_S^τ(x'))``, on
    standardised logits where ``hparams`` say so (``config.kd.standardize``); with
    ``term="objective"``, ``view_weight·mean objective(z_S(x'), z_T(x'), labels, hparams)``
    (``objective``: the method's, its static options bound).

    The teacher-labelled mixing of Wang et al. (2022): x' gets only the KD term, never the
    mixed labels. ``label_mixing`` adds the mixed-label cross-entropy
    ``ce_weight·[λ·CE(S(x'), y) + (1 − λ)·CE(S(x'), y[perm])]`` (the paper's comparison
    row, which it found to hurt).
    """
    if self.term == "objective":
      if objective is None:
        raise ValueError(
          f"the {self.name} view applies the method's objective on x': pass objective=."
        )
      per_example = objective(student_logits, view.teacher_logits, view.labels, hparams)
      return hparams["view_weight"] * jnp.mean(per_example)
    kd = losses.kd_kl(
      student_logits,
      view.teacher_logits,
      hparams["temperature"],
      standardize=hparams.get("standardize", False),
    )
    loss = hparams["view_weight"] * hparams["kd_weight"] * jnp.mean(kd)
    if self.label_mixing:
      epsilon = hparams.get("label_smoothing", 0.0)
      ce = view.lam * losses.cross_entropy(student_logits, view.labels, epsilon) + (
        1 - view.lam
      ) * losses.cross_entropy(student_logits, view.partner_labels, epsilon)
      loss = loss + hparams["ce_weight"] * jnp.mean(ce)
    return loss


@dataclasses.dataclass(frozen=True)
class Method:
  """A named recipe: an objective on x, the default extra view, per-epoch values.

  ``objective(student_logits, teacher_logits, labels, hparams, *, regression=False)``;
  ``view``: the name of the default view (kd_jax.methods.VIEW_NAMES) or None;
  ``schedule(epoch, num_epochs, **options) -> dict``: the values this method adds to the
  KD values for ``epoch`` (counted from 1); ``options`` are its config block's keys.
  """

  name: str
  objective: Callable[..., jax.Array]
  view: str | None = None
  uses_teacher_on_x: bool = True
  schedule: Callable[..., dict] | None = None
  schedule_block: str | None = None  # the config block ``schedule`` reads
  # ``phases(optimizer, num_epochs, steps_per_epoch, schedule, replicate, score=...,
  # **block)``: an object with initial_state / start_of_epoch / end_of_epoch / lr_at for a
  # method that changes the run between epochs (Annealing-KD's two phases), or None.
  phases: Callable[..., Any] | None = None
  # The options each part takes, by name (kd_jax.methods.get_method, ``split_block``): the
  # objective's static options, the keys of ``schedule_block`` its schedule and its phases
  # read, and the keys of that (shared) block this method accepts and does not read.
  objective_options: tuple[str, ...] = ()
  schedule_options: tuple[str, ...] = ()
  phases_options: tuple[str, ...] = ()
  unused_block_keys: tuple[str, ...] = ()

  @property
  def needs_teacher(self) -> bool:
    return self.uses_teacher_on_x or self.view is not None

  def split_block(self, options: Mapping[str, Any]) -> BlockOptions:
    """The method's config block (``config.continuation``) split into the options of its
    objective, its schedule and its phases; a key none of them takes raises, naming the
    valid ones."""
    parts = (self.objective_options, self.schedule_options, self.phases_options)
    valid = sorted({*self.unused_block_keys, *(name for part in parts for name in part)})
    unknown = sorted(set(options) - set(valid))
    if unknown:
      raise ValueError(
        f"{self.name} takes no {self.schedule_block or 'block'} option "
        f"{', '.join(map(repr, unknown))}; valid options: {', '.join(valid) or 'none'}."
      )
    objective, schedule, phases = (
      {name: options[name] for name in part if name in options} for part in parts
    )
    return BlockOptions(objective, schedule, phases)


class BlockOptions(NamedTuple):
  """A method's config block, by the part that reads each key (``Method.split_block``)."""

  objective: dict[str, Any]
  schedule: dict[str, Any]
  phases: dict[str, Any]
