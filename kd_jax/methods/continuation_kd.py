"""Continuation-KD (Jafari et al. 2022) and Annealing-KD (Jafari et al. 2021) in one place.

Objective: ``ψ·CE + (1 − ψ)·max(0, r_c (z_S − φ·z_T)² − m·φ)`` (kd_jax.losses.
continuation_hinge), ``r_c`` the mean over classes or, as the paper writes it, the sum
(``reduction``, from the ``continuation`` config block: get_method(..., reduction=...)).
The teacher's logits are scaled by ``φ = 1 − (T − 1)/T_max``, which grows
from 1/T_max to 1 as the temperature T steps down from T_max to 1; ψ moves the weight from
the hinge to the labels (linear ramp on CIFAR, piecewise on GLUE). Annealing-KD is the
special case with margin 0 and a step ψ: distillation only until T reaches 1, then labels
only. On regression tasks the squared error replaces cross-entropy; the hinge is unchanged
(it already works on raw outputs).

The schedules (kd_jax.continuation) are evaluated on the host once per epoch and enter the
step as arrays: ``continuation_values`` and ``annealing_values`` give one epoch's values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from kd_jax import continuation, losses
from kd_jax.methods.vanilla import hard_label_loss, label_smoothing


def continuation_objective(
  student_logits, teacher_logits, labels, hparams, *, regression=False, reduction: str = "sum"
):
  """``ψ·CE + (1 − ψ)·max(0, r_c (z_S − φ·z_T)² − m·φ)`` per example; ``r_c`` is the sum
  over classes (default, the paper's squared norm) or the mean: see
  kd_jax.losses.continuation_hinge."""
  hinge = losses.continuation_hinge(
    student_logits, teacher_logits, hparams["phi"], hparams["margin"], reduction
  )
  hard = hard_label_loss(student_logits, labels, regression, label_smoothing(hparams))
  return hparams["psi"] * hard + (1 - hparams["psi"]) * hinge


def annealing_objective(
  student_logits, teacher_logits, labels, hparams, *, regression=False, reduction: str = "sum"
):
  """Annealing-KD: the continuation objective with margin 0 (ψ steps from 0 to 1)."""
  return continuation_objective(
    student_logits,
    teacher_logits,
    labels,
    {**hparams, "margin": 0.0},
    regression=regression,
    reduction=reduction,
  )


def continuation_values(
  epoch: int,
  num_epochs: int,
  *,
  t_max: int = 20,
  margin: float = 3.0,
  psi_schedule: str = "linear",
  psi_ramp_epochs: int = 150,
  psi_switch_epoch: int | None = None,
) -> dict[str, float]:
  """T, φ, ψ and the margin for ``epoch`` (counted from 1) of a Continuation-KD run.

  The defaults are the config schema's (kd_jax/experiments/configs/common.py, continuation
  block): the margin 3.0 is on the scale of the summed hinge, the objective's default
  reduction (results/sweep_continuation_margin_digits.md); with ``reduction="mean"`` the
  squared gap is C times smaller, so scale the margin with it."""
  values = continuation.schedule_values(
    epoch,
    num_epochs,
    t_max,
    psi_schedule,
    ramp_epochs=psi_ramp_epochs,
    switch_epoch=psi_switch_epoch or 0,
  )
  return {**values, "margin": float(margin)}


ANNEALING_PHASE2_INITS = ("last", "best")

# The keys of the ``continuation`` config block, which both methods read, by who reads them.
OBJECTIVE_OPTIONS = ("reduction",)
CONTINUATION_SCHEDULE_OPTIONS = (
  "t_max",
  "margin",
  "psi_schedule",
  "psi_ramp_epochs",
  "psi_switch_epoch",
)
ANNEALING_SCHEDULE_OPTIONS = (
  "t_max",
  "psi_switch_epoch",
  "annealing_phase2_epochs",
  "annealing_phase2_init",
)
ANNEALING_PHASES_OPTIONS = ("annealing_phase2_epochs", "annealing_phase2_init")
# Continuation-KD's keys that Annealing-KD (margin 0, a step ψ) does not read, and the other
# way round: accepted in the shared block, not used.
ANNEALING_UNUSED = ("margin", "psi_schedule", "psi_ramp_epochs")
CONTINUATION_UNUSED = ("annealing_phase2_epochs", "annealing_phase2_init")


def annealing_values(
  epoch: int,
  num_epochs: int,
  *,
  t_max: int = 20,
  psi_switch_epoch: int | None = None,
  annealing_phase2_epochs: int = 0,
  annealing_phase2_init: str = "last",
) -> dict[str, float]:
  """Annealing-KD's T, φ and step ψ: labels only after ``psi_switch_epoch`` (None: the epoch
  at which T reaches 1). The continuation block's margin and ψ ramp are Continuation-KD's
  (``ANNEALING_UNUSED``): Annealing-KD's margin is 0 and its ψ a step.

  With ``annealing_phase2_epochs`` N > 0, the official code's protocol: phase 1 is the first
  ``num_epochs − N`` epochs, with T stepping from t_max to 1 over all of them and ψ = 0;
  phase 2 is the last N epochs, labels only (ψ = 1), from a fresh optimiser
  (``AnnealingPhases``)."""
  if annealing_phase2_init not in ANNEALING_PHASE2_INITS:
    raise ValueError(
      f"unknown annealing_phase2_init {annealing_phase2_init!r}; valid: "
      f"{', '.join(ANNEALING_PHASE2_INITS)}."
    )
  if annealing_phase2_epochs:
    phase1 = num_epochs - annealing_phase2_epochs
    if annealing_phase2_epochs < 0 or phase1 < 1:
      raise ValueError(
        f"annealing_phase2_epochs must lie in [0, num_epochs − 1 = "
        f"{num_epochs - 1}]; got {annealing_phase2_epochs}."
      )
    values = continuation.schedule_values(
      min(epoch, phase1), phase1, t_max, "step", ramp_epochs=1, switch_epoch=phase1
    )
    return {**values, "psi": 0.0 if epoch <= phase1 else 1.0, "margin": 0.0}
  switch = psi_switch_epoch or continuation.annealing_switch_epoch(num_epochs, t_max)
  values = continuation.schedule_values(
    epoch, num_epochs, t_max, "step", ramp_epochs=1, switch_epoch=switch
  )
  return {**values, "margin": 0.0}


@dataclasses.dataclass
class AnnealingPhases:
  """The bookkeeping of Annealing-KD's two phases (the official code's protocol).

  At the start of phase 2 (epoch ``phase1_epochs + 1``) the optimiser state is replaced by a
  fresh one, so momentum starts from zero and the learning-rate schedule (which optax
  evaluates on the optimiser's own step count) starts again; with ``init="best"`` the
  parameters are first set back to phase 1's best epoch (by test ``score``, as the official
  code selects on its evaluation set), which the state carries (``annealing_best``) so that
  a resumed run is exact. ``lr_at(step)`` is the learning rate the step at ``step`` uses.
  """

  optimizer: Any
  phase1_epochs: int
  steps_per_epoch: int
  schedule: Callable[[int], Any]
  replicate: Callable[[Any], Any]
  init: str = "last"
  score: str = "top1"

  @property
  def boundary(self) -> int:
    return self.phase1_epochs * self.steps_per_epoch

  def lr_at(self, step: int):
    return self.schedule(step - self.boundary if step >= self.boundary else step)

  def initial_state(self, state: dict) -> dict:
    if self.init != "best":
      return state
    return {
      **state,
      "annealing_best": jax.tree.map(jnp.copy, state["params"]),
      "annealing_best_batch_stats": jax.tree.map(jnp.copy, state["batch_stats"]),
      "annealing_best_score": self.replicate(jnp.float32(-jnp.inf)),
    }

  def start_of_epoch(self, state: dict, epoch: int) -> dict:
    if epoch != self.phase1_epochs + 1:
      return state
    if self.init == "best":
      state = {
        **state,
        "params": jax.tree.map(jnp.copy, state["annealing_best"]),
        "batch_stats": jax.tree.map(jnp.copy, state["annealing_best_batch_stats"]),
      }
    return {**state, "opt_state": self.replicate(self.optimizer.init(state["params"]))}

  def end_of_epoch(self, state: dict, epoch: int, row: dict) -> dict:
    if (
      self.init != "best"
      or epoch > self.phase1_epochs
      or self.score not in row
      or not row[self.score] > float(state["annealing_best_score"])
    ):
      return state
    return {
      **state,
      "annealing_best": jax.tree.map(jnp.copy, state["params"]),
      "annealing_best_batch_stats": jax.tree.map(jnp.copy, state["batch_stats"]),
      "annealing_best_score": self.replicate(jnp.float32(row[self.score])),
    }


def annealing_phases(
  optimizer,
  num_epochs: int,
  steps_per_epoch: int,
  schedule,
  replicate,
  *,
  score: str = "top1",
  annealing_phase2_epochs: int = 0,
  annealing_phase2_init: str = "last",
) -> AnnealingPhases | None:
  """The two-phase bookkeeping for a run of ``num_epochs`` (None in the one-run form)."""
  if not annealing_phase2_epochs:
    return None
  return AnnealingPhases(
    optimizer,
    num_epochs - annealing_phase2_epochs,
    steps_per_epoch,
    schedule,
    replicate,
    annealing_phase2_init,
    score,
  )
