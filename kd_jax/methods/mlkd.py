"""Multi-level logit distillation (Jin et al., CVPR 2023) as a method: ``--config.method=mlkd``.

Objective per example: ``ce_weight·CE + kd_weight·Σ_τ (instance_τ + batch_τ + class_τ)``
(kd_jax.losses.mlkd): the KD term at several temperatures (the KD block's τ plus
``extra_temperatures``, officially 3, 5, 2, 6) next to batch-level and class-level
prediction-correlation terms, with the confidence masks of the official code (``mask``). The
weights are the KD block's (the official code's defaults are KD's: CE 0.1, KD 0.9, τ 4);
with ``config.kd.standardize`` the instance terms compare z-scored logits (MLKD + LS of Sun
et al. 2024, who use τ 2 and KD weight 9, or 6 on the VGG13 and ShuffleV2 pairs).

MLKD trains on a weak and a strong view: the method's default view is ``dual`` (kd_jax.
methods.strong_aug.dual), which gives the student the whole objective on the strong view
x' too, cross-entropy included, as the official code does. Departures from the official
code, and why:

* On x' the official code adds CE and unmasked KD terms only, at τ 4, 3 and 5 (its terms
  at τ = 2 and 6 re-read the weak view's logits, a copy slip); it computes the batch and
  class terms on x' but does not add them. Here x' gets the same objective as x, masks
  included (the fraction ≈ 1/2 by default, from the teacher's predictions on x'), so the
  strong view is distilled at every level and temperature. ``config.dual.term = "kd"``
  gives x' the single-τ KD term alone instead.
* ``correlation_weight`` (1: official) scales the batch and class terms, whose size grows
  with (batch / classes): at the official weight MLKD fails on the 10-class digits, and the
  digits config uses 0.01 (results/strong_view_recipes_digits.md).
* The official strong view draws its own crop and flip and a FixMatch-style RandAugment
  (a fresh random magnitude per operation) with Cutout of random size; here x' is
  RandAugment of the weak view x (``config.randaugment``; ``random_magnitude`` draws a bin per
  operation) then Cutout of ``config.dual.cutout_size`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from kd_jax import losses
from kd_jax.methods.vanilla import hard_label_loss, label_smoothing, standardize

# The keys of the ``mlkd`` config block: the objective's static options.
OBJECTIVE_OPTIONS = ("extra_temperatures", "mask", "correlation_weight")
# The official temperatures next to the KD block's τ.
EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def mlkd_objective(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  hparams: dict[str, Any],
  *,
  regression: bool = False,
  extra_temperatures: Sequence[float] = EXTRA_TEMPERATURES,
  mask: str = "fraction",
  correlation_weight: float = 1.0,
) -> jax.Array:
  """``ce_weight·CE + kd_weight·mlkd(z_S, z_T; τ and extra_temperatures)`` per example, the
  batch and class terms weighted by ``correlation_weight`` (1: the official code)."""
  if regression:
    raise ValueError(
      "mlkd compares class probabilities: it needs classes, not a regression output "
      "(use kd or continuation_kd)."
    )
  hard = hard_label_loss(student_logits, labels, False, label_smoothing(hparams))
  multi_level = losses.mlkd(
    student_logits,
    teacher_logits,
    (hparams["temperature"], *extra_temperatures),
    mask=mask,
    standardize=standardize(hparams),
    correlation_weight=correlation_weight,
  )
  return hparams["ce_weight"] * hard + hparams["kd_weight"] * multi_level


def check_options(
  extra_temperatures: Sequence[float] = EXTRA_TEMPERATURES,
  mask: str = "fraction",
  correlation_weight: float = 1.0,
):
  """The ``mlkd`` block's values, checked before a run starts (one-line errors)."""
  if not isinstance(correlation_weight, (int, float)) or correlation_weight < 0:
    raise ValueError(
      f"mlkd correlation_weight must be a number ≥ 0 (1: the official equal weights); got "
      f"{correlation_weight!r}."
    )
  if mask not in losses.MLKD_MASKS:
    raise ValueError(f"unknown mlkd mask {mask!r}; valid: {', '.join(losses.MLKD_MASKS)}.")
  if isinstance(extra_temperatures, (str, bytes)) or not all(
    isinstance(t, (int, float)) and t > 0 for t in extra_temperatures
  ):
    raise ValueError(
      f"mlkd extra_temperatures must be numbers > 0 (official: {EXTRA_TEMPERATURES}); "
      f"got {extra_temperatures!r}."
    )


__all__ = ["EXTRA_TEMPERATURES", "OBJECTIVE_OPTIONS", "check_options", "mlkd_objective"]
