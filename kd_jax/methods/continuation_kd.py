"""Continuation-KD (Jafari et al. 2022) and Annealing-KD (Jafari et al. 2021) in one place.

Objective: ``ψ·CE + (1 − ψ)·max(0, r_c (z_S − φ·z_T)² − m·φ)`` (kd_jax.losses.
continuation_hinge), ``r_c`` the mean over classes or, as the paper writes it, the sum
(``reduction``, from the ``continuation`` config block: get_method(..., reduction=...)). The teacher's logits are scaled by ``φ = 1 − (T − 1)/T_max``, which grows
from 1/T_max to 1 as the temperature T steps down from T_max to 1; ψ moves the weight from
the hinge to the labels (linear ramp on CIFAR, piecewise on GLUE). Annealing-KD is the
special case with margin 0 and a step ψ: distillation only until T reaches 1, then labels
only. On regression tasks the squared error replaces cross-entropy; the hinge is unchanged
(it already works on raw outputs).

The schedules (kd_jax.continuation) are evaluated on the host once per epoch and enter the
step as arrays: ``continuation_values`` and ``annealing_values`` give one epoch's values.
"""

from __future__ import annotations

from kd_jax import continuation, losses
from kd_jax.methods.vanilla import hard_label_loss


def continuation_objective(student_logits, teacher_logits, labels, hparams, *,
                           regression=False, reduction: str = "mean"):
  """``ψ·CE + (1 − ψ)·max(0, r_c (z_S − φ·z_T)² − m·φ)`` per example; ``r_c`` is the mean
  over classes (default) or the sum (the paper's squared norm): see
  kd_jax.losses.continuation_hinge."""
  hinge = losses.continuation_hinge(student_logits, teacher_logits, hparams["phi"],
                                    hparams["margin"], reduction)
  hard = hard_label_loss(student_logits, labels, regression)
  return hparams["psi"] * hard + (1 - hparams["psi"]) * hinge


def annealing_objective(student_logits, teacher_logits, labels, hparams, *, regression=False,
                        reduction: str = "mean"):
  """Annealing-KD: the continuation objective with margin 0 (ψ steps from 0 to 1)."""
  return continuation_objective(student_logits, teacher_logits, labels,
                                {**hparams, "margin": 0.0}, regression=regression,
                                reduction=reduction)


def continuation_values(epoch: int, num_epochs: int, *, t_max: int = 20, margin: float = 0.1,
                        psi_schedule: str = "linear", psi_ramp_epochs: int = 150,
                        psi_switch_epoch: int | None = None, **objective_options
                        ) -> dict[str, float]:
  """T, φ, ψ and the margin for ``epoch`` (counted from 1) of a Continuation-KD run. The
  block's objective options (``reduction``) are the objective's, not the schedule's."""
  del objective_options
  values = continuation.schedule_values(epoch, num_epochs, t_max, psi_schedule,
                                        ramp_epochs=psi_ramp_epochs,
                                        switch_epoch=psi_switch_epoch or 0)
  return {**values, "margin": float(margin)}


def annealing_values(epoch: int, num_epochs: int, *, t_max: int = 20,
                     psi_switch_epoch: int | None = None, **unused) -> dict[str, float]:
  """Annealing-KD's T, φ and step ψ: labels only after ``psi_switch_epoch`` (None: the epoch
  at which T reaches 1). The continuation block's other keys do not apply."""
  del unused
  switch = psi_switch_epoch or continuation.annealing_switch_epoch(num_epochs, t_max)
  values = continuation.schedule_values(epoch, num_epochs, t_max, "step", ramp_epochs=1,
                                        switch_epoch=switch)
  return {**values, "margin": 0.0}
