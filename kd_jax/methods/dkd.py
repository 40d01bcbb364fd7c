"""Decoupled KD (Zhao et al., CVPR 2022) as a method: ``--config.method=dkd``.

Objective per example: ``ce_weight·CE + w(epoch)·(α·TCKD + β·NCKD)`` at the KD temperature τ
(``config.kd.temperature``), with ``kd_jax.losses.dkd`` splitting the KD term at the target
class into the target-vs-rest part (TCKD) and the distribution over the other classes
(NCKD), and ``w = min(epoch / warmup_epochs, 1)`` the official code's linear warm-up of the
whole DKD term. The ``dkd`` config block holds α, β, the warm-up and the cross-entropy's
weight; the defaults are the official CIFAR-100 setting (mdistiller: CE weight 1.0, α 1,
β 8, warm-up 20 epochs; τ 4 is the KD block's default), which overrides KD's 0.1 for CE.
Any view composes with it: x' gets the usual KD term (kd_weight·τ²·KL). With
``config.kd.standardize`` both terms compare z-scored logits (DKD + LS of Sun et al. 2024).
"""

from __future__ import annotations

from typing import Any

import jax

from kd_jax import losses
from kd_jax.methods.vanilla import hard_label_loss, label_smoothing, standardize

# The keys of the ``dkd`` config block (all read by ``dkd_values``).
SCHEDULE_OPTIONS = ("ce_weight", "alpha", "beta", "warmup_epochs")


def dkd_objective(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  hparams: dict[str, Any],
  *,
  regression: bool = False,
) -> jax.Array:
  """``ce_weight·CE + dkd_warmup·(α·TCKD + β·NCKD)`` per example (kd_jax.losses.dkd)."""
  if regression:
    raise ValueError(
      "dkd splits the KD term at the target class: it needs classes, not a regression output "
      "(use kd or continuation_kd)."
    )
  hard = hard_label_loss(student_logits, labels, False, label_smoothing(hparams))
  decoupled = losses.dkd(
    student_logits,
    teacher_logits,
    labels,
    alpha=hparams["dkd_alpha"],
    beta=hparams["dkd_beta"],
    temperature=hparams["temperature"],
    standardize=standardize(hparams),
  )
  return hparams["ce_weight"] * hard + hparams["dkd_warmup"] * decoupled


def dkd_values(
  epoch: int,
  num_epochs: int,
  *,
  ce_weight: float = 1.0,
  alpha: float = 1.0,
  beta: float = 8.0,
  warmup_epochs: int = 20,
) -> dict[str, float]:
  """The values of epoch ``epoch`` (counted from 1): the weights and the warm-up factor
  ``min(epoch / warmup_epochs, 1)`` (1 throughout with ``warmup_epochs = 0``).

  >>> dkd_values(5, 240)["dkd_warmup"]
  0.25
  """
  del num_epochs
  for name, value in (("ce_weight", ce_weight), ("alpha", alpha), ("beta", beta)):
    if value < 0:
      raise ValueError(f"dkd {name} must be ≥ 0; got {value}.")
  if warmup_epochs < 0:
    raise ValueError(f"dkd warmup_epochs must be ≥ 0 (0: no warm-up); got {warmup_epochs}.")
  warmup = min(epoch / warmup_epochs, 1.0) if warmup_epochs else 1.0
  return {
    "ce_weight": float(ce_weight),
    "dkd_alpha": float(alpha),
    "dkd_beta": float(beta),
    "dkd_warmup": float(warmup),
  }


__all__ = ["SCHEDULE_OPTIONS", "dkd_objective", "dkd_values"]
