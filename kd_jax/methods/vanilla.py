"""Cross-entropy and Hinton KD: the objectives every other method builds on.

``ce``: teachers and students from scratch. ``kd`` (Hinton et al. 2015):
``ce_weight·CE(z_S, y) + kd_weight·τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ))``, explicit weights
(no "alpha"). On a regression task (GLUE STS-B, one output) the squared error replaces
cross-entropy, and KD matches the teacher's score by squared error instead of the KL.

The values these objectives read from ``hparams`` (temperature, ce_weight, kd_weight, the
view weight, label_smoothing, the ε of every hard-label cross-entropy, and standardize, the
logit standardisation of every KD term) are constant over training; ``kd_values`` builds
them.
"""

from __future__ import annotations

import jax.numpy as jnp

from kd_jax import losses


def hard_label_loss(
  student_logits, labels, regression: bool = False, label_smoothing: float | jnp.ndarray = 0.0
):
  """Cross-entropy on classes (with ``label_smoothing`` ε: kd_jax.losses.cross_entropy);
  ``(z_S[:, 0] − y)²`` on a regression task (ε does not apply). ``[batch]``."""
  if regression:
    return jnp.square(student_logits[:, 0].astype(jnp.float32) - labels)
  return losses.cross_entropy(student_logits, labels, label_smoothing)


def label_smoothing(hparams) -> float | jnp.ndarray:
  """ε from ``hparams`` (0 where they have none: hand-made hparams in tests and notebooks)."""
  return hparams.get("label_smoothing", 0.0)


def standardize(hparams) -> bool | jnp.ndarray:
  """Whether every KD term z-scores the logits first (logit standardisation, Sun et al.
  2024; ``config.kd.standardize``): the ``standardize`` value of ``hparams`` (> 0: yes), False
  where they have none, so a run without it compiles the plain step."""
  return hparams.get("standardize", False)


def ce_objective(student_logits, teacher_logits, labels, hparams, *, regression=False):
  """Plain cross-entropy (squared error for regression); the teacher is not used."""
  del teacher_logits
  return hard_label_loss(student_logits, labels, regression, label_smoothing(hparams))


def kd_objective(student_logits, teacher_logits, labels, hparams, *, regression=False):
  """Hinton KD: ``ce_weight·CE + kd_weight·τ²·KL(p_T^τ ‖ p_S^τ)`` per example.

  Regression: ``ce_weight·(z_S − y)² + kd_weight·mean_j (z_S,j − z_T,j)²``.
  """
  if regression:
    soft = jnp.mean(jnp.square(student_logits - teacher_logits), -1)
    return (
      hparams["ce_weight"] * hard_label_loss(student_logits, labels, True)
      + hparams["kd_weight"] * soft
    )
  return losses.kd_objective(
    student_logits,
    teacher_logits,
    labels,
    temperature=hparams["temperature"],
    ce_weight=hparams["ce_weight"],
    kd_weight=hparams["kd_weight"],
    label_smoothing=label_smoothing(hparams),
    standardize=standardize(hparams),
  )


def kd_values(
  *,
  temperature: float = 4.0,
  ce_weight: float = 0.1,
  kd_weight: float = 0.9,
  view_weight: float = 1.0,
  label_smoothing: float = 0.0,
  standardize: bool = False,
) -> dict[str, float]:
  """The constant values of KD: τ, the two loss weights, the weight of the view term, the
  label smoothing ε of the hard-label cross-entropy (a key only when ε > 0) and whether the
  KD terms standardise the logits (``standardize``: a key, 1.0, only when True; τ is then a
  base temperature on unit-variance logits: Sun et al. use 2 on CIFAR-100 where KD uses 4)."""
  if temperature <= 0:
    raise ValueError(f"the KD temperature must be > 0; got {temperature}.")
  if not 0 <= label_smoothing < 1:
    raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}.")
  values = {
    "temperature": float(temperature),
    "ce_weight": float(ce_weight),
    "kd_weight": float(kd_weight),
    "view_weight": float(view_weight),
  }
  if label_smoothing:  # absent when 0: a run without it compiles the same step as before
    values["label_smoothing"] = float(label_smoothing)
  if not isinstance(standardize, bool):
    raise ValueError(f"kd standardize must be True or False; got {standardize!r}.")
  if standardize:  # absent when off, for the same reason
    values["standardize"] = 1.0
  return values
