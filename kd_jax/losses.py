"""Per-example distillation losses, optax style: no reduction over the batch.

Every function takes logits of shape ``[..., num_classes]`` (usually ``[batch, classes]``)
and returns one value per example, shape ``[...]``. The arithmetic runs in at least float32
(bfloat16 logits are upcast), through ``log_softmax``, so logits of magnitude 1e4 give finite
results. Inputs of a wrong shape or dtype fail at trace time with a message naming the
argument. Values are checked where they are known: a temperature that is a string, ≤ 0 or
NaN raises at once when it is a Python or NumPy number or a concrete array; a traced one
(a schedule value inside ``jax.jit``) is checked only under ``jax.experimental.checkify``
(``checkify.checkify(fn, errors=checkify.user_checks)``), since a compiled function cannot
raise: without checkify, τ = 0 gives NaN and τ < 0 a meaningless value
(kd_jax.validation.check_positive). Gradients flow into both arguments: callers that want a
frozen teacher wrap its logits in ``jax.lax.stop_gradient`` (the training step does), while
backward-pass KD needs the gradient through the teacher.

Notation: p^τ = softmax(z / τ), KL(p || q) = Σ_c p_c (log p_c − log q_c).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core

from kd_jax import validation

__all__ = [
  "HINGE_REDUCTIONS",
  "MLKD_MASKS",
  "continuation_hinge",
  "cross_entropy",
  "dkd",
  "entropy",
  "kd_kl",
  "kd_objective",
  "mlkd",
  "standardize_logits",
]


def _log_softmax(logits: jax.Array, temperature: float | jax.Array, dtype: jnp.dtype) -> jax.Array:
  # τ in the logits' compute dtype: a float64 NumPy schedule value (x64 mode) must not
  # promote float32 logits.
  return jax.nn.log_softmax(logits.astype(dtype) / jnp.asarray(temperature, dtype), axis=-1)


# Added to the standard deviation in logit standardisation, as the official code does.
STANDARDIZE_EPSILON = 1e-7


def standardize_logits(logits: jax.Array) -> jax.Array:
  """Each example's logits z-scored over the classes: ``(z − mean_c z) / (std_c z + 1e-7)``.

  Logit standardisation (Sun et al., CVPR 2024): the softened KL then compares the shapes
  of the two logit vectors, not their ranges. The standard deviation is the sample one
  (``ddof=1``, PyTorch's ``Tensor.std``, as the official code), so constant logits give 0.

  >>> import jax.numpy as jnp
  >>> standardize_logits(jnp.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])).round(4)
  Array([[-1.,  0.,  1.],
         [ 0.,  0.,  0.]], dtype=float32)
  """
  validation.check_logits("logits", logits)
  if logits.shape[-1] < 2:
    raise ValueError(
      f"standardising logits needs at least 2 classes (a standard deviation); got shape "
      f"{logits.shape}."
    )
  z = logits.astype(validation.compute_dtype(logits))
  mean = jnp.mean(z, axis=-1, keepdims=True)
  std = jnp.std(z, axis=-1, keepdims=True, ddof=1)
  return (z - mean) / (std + STANDARDIZE_EPSILON)


def _standardized(logits: jax.Array, standardize: bool | jax.Array) -> jax.Array:
  """``logits`` z-scored when ``standardize``: a Python bool decides while tracing (the plain
  graph stays exactly the plain one); an array (an hparams value, 0 or 1) selects per call."""
  if isinstance(standardize, (bool, np.bool_)):
    return standardize_logits(logits) if standardize else logits
  flag = jnp.asarray(standardize) > 0
  z = logits.astype(validation.compute_dtype(logits))
  # The unselected branch still gets a gradient: feed it distinct values when off, so a
  # constant row (std 0) cannot make it NaN.
  spread = jnp.broadcast_to(jnp.arange(z.shape[-1], dtype=z.dtype), z.shape)
  return jnp.where(flag, standardize_logits(jnp.where(flag, z, spread)), z)


def kd_kl(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  temperature: float | jax.Array = 4.0,
  *,
  standardize: bool | jax.Array = False,
) -> jax.Array:
  """Hinton et al. (2015) distillation term, per example.

  ``τ² · KL(softmax(teacher/τ) || softmax(student/τ))``. The τ² factor keeps the gradient
  magnitude independent of τ (Hinton et al. §2); the direction is teacher-to-student, the
  one every KD paper uses (PyTorch's ``kl_div(log_softmax(s/τ), softmax(t/τ))``).

  With ``standardize=True`` both logit vectors are first z-scored per example
  (``standardize_logits``; Sun et al. 2024), τ is then a base temperature on unit-variance
  logits (the official code uses 2 where plain KD uses 4), and the τ² factor stays.

  Args:
    student_logits: ``[..., num_classes]``.
    teacher_logits: same shape as ``student_logits``.
    temperature: τ > 0, a Python number or a scalar array (a schedule value).
    standardize: z-score the logits first: a Python bool, or a scalar array (an hparams
      value: > 0 standardises), so one compiled step serves both.

  Returns:
    ``[...]``, non-negative, in at least float32.
  """
  validation.check_logits("student_logits", student_logits)
  validation.check_logits("teacher_logits", teacher_logits)
  validation.check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
  validation.check_positive("temperature", temperature)
  dtype = validation.compute_dtype(student_logits, teacher_logits)
  student_logits = _standardized(student_logits, standardize)
  teacher_logits = _standardized(teacher_logits, standardize)
  log_p_teacher = _log_softmax(teacher_logits, temperature, dtype)
  log_p_student = _log_softmax(student_logits, temperature, dtype)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return jnp.asarray(temperature, dtype) ** 2 * kl


def dkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  alpha: float | jax.Array = 1.0,
  beta: float | jax.Array = 8.0,
  temperature: float | jax.Array = 4.0,
  standardize: bool | jax.Array = False,
) -> jax.Array:
  """Decoupled KD (Zhao et al., CVPR 2022), per example: ``α·TCKD + β·NCKD``.

  The KD term split at the target class t. With ``p = softmax(z/τ)``:
  ``TCKD = τ²·KL([p_T,t, 1 − p_T,t] ‖ [p_S,t, 1 − p_S,t])`` (the binary target-vs-rest
  distribution) and ``NCKD = τ²·KL(p̂_T ‖ p̂_S)`` with ``p̂`` the softmax over the non-target
  classes only. ``KD = TCKD + (1 − p_T,t)·NCKD``; DKD weights the two parts freely (the
  official CIFAR-100 setting: α = 1, β = 8 or 6, τ = 4, next to the cross-entropy with weight
  1, the whole DKD term ramped up over the first 20 epochs). Computed in log space (the
  official code masks the target with ``−1000`` and takes ``log`` of probabilities).

  Args:
    student_logits: ``[..., num_classes]``.
    teacher_logits: same shape.
    labels: integer class ids ``[...]`` or one-hot rows ``[..., num_classes]``.
    alpha: weight α of TCKD.
    beta: weight β of NCKD.
    temperature: τ > 0.
    standardize: z-score both logit vectors first (``kd_kl``'s option; Sun et al. 2024
      apply it to DKD as well).

  Returns:
    ``[...]``, non-negative, in at least float32.

  >>> import jax.numpy as jnp
  >>> z = jnp.array([[2.0, 1.0, 0.0]])
  >>> dkd(z, z, jnp.array([0])).tolist()  # the same logits: nothing to distil
  [0.0]
  """
  validation.check_logits("student_logits", student_logits)
  validation.check_logits("teacher_logits", teacher_logits)
  validation.check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
  labels = jnp.asarray(labels)
  validation.check_labels("student_logits", student_logits, "labels", labels)
  validation.check_positive("temperature", temperature)
  dtype = validation.compute_dtype(student_logits, teacher_logits)
  num_classes = student_logits.shape[-1]
  if jnp.issubdtype(labels.dtype, jnp.integer):
    target = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  else:
    if not isinstance(labels, jax_core.Tracer):  # concrete rows are checked to be one-hot
      rows = np.asarray(labels)
      if not (np.isin(rows, (0.0, 1.0)).all() and (rows.sum(-1) == 1).all()):
        raise ValueError(
          "dkd splits the KD term at one target class: labels must be class ids or one-hot "
          "rows, not mixed or smoothed probabilities."
        )
    target = labels > 0.5
  tau = jnp.asarray(temperature, dtype)
  student_logits = _standardized(student_logits, standardize)
  teacher_logits = _standardized(teacher_logits, standardize)

  def parts(logits):
    """(log p_t, log(1 − p_t), log p̂ over the non-target classes; 0 at the target)."""
    scaled = logits.astype(dtype) / tau
    log_all = jax.nn.logsumexp(scaled, axis=-1)
    masked = jnp.where(target, -jnp.inf, scaled)
    log_rest = jax.nn.logsumexp(masked, axis=-1)
    log_target = jnp.sum(jnp.where(target, scaled, 0.0), axis=-1) - log_all
    log_non_target = jnp.where(target, 0.0, scaled - log_rest[..., None])
    return log_target, log_rest - log_all, log_non_target

  t_target, t_rest, t_hat = parts(teacher_logits)
  s_target, s_rest, s_hat = parts(student_logits)
  tckd = jnp.exp(t_target) * (t_target - s_target) + jnp.exp(t_rest) * (t_rest - s_rest)
  nckd = jnp.sum(jnp.where(target, 0.0, jnp.exp(t_hat) * (t_hat - s_hat)), axis=-1)
  return tau**2 * (jnp.asarray(alpha, dtype) * tckd + jnp.asarray(beta, dtype) * nckd)


MLKD_MASKS = ("fraction", "per_example", "none")


def mlkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  temperatures: float | jax.Array | tuple = (4.0, 3.0, 5.0, 2.0, 6.0),
  *,
  mask: str = "fraction",
  standardize: bool | jax.Array = False,
  correlation_weight: float | jax.Array = 1.0,
) -> jax.Array:
  """Multi-level logit distillation (Jin et al., CVPR 2023), per example: for every τ,
  instance + batch + class terms.

  With ``P = softmax(z/τ)`` ``[B, C]``: the instance term is ``τ²·KL(p_T^τ ‖ p_S^τ)`` (on
  standardised logits with ``standardize``, as Sun et al. 2024 apply it; the other two keep
  the raw logits, as their code); the batch term compares the ``[B, B]`` sample-similarity
  matrices ``G = P Pᵀ``: ``‖G_T − G_S‖² / B``; the class term the ``[C, C]`` class-correlation
  matrices ``M = Pᵀ P``: ``‖M_T − M_S‖² / C`` (no τ² on either, as the official code).
  They are summed over ``temperatures`` with equal weights (official: the KD τ and 3, 5, 2,
  6). The batch and class terms are spread over the examples so that the batch mean of
  the result is the official loss: row i of the batch term goes to example i, the class
  term is the same for all.

  Confidence masks, from the teacher's predictions at τ = 1: an example counts when the
  teacher's top probability is at most the batch median, a class when its summed probability
  over the batch is at most the median over classes (the official code's ``le``).
  ``mask``: ``"fraction"`` (default, the official code's effect: it reduces each term to a
  scalar before masking, so a mask only scales the instance and batch terms by the fraction
  of kept examples and the class term by that of kept classes, ≈ 1/2), ``"per_example"``
  (the masks select: kept examples and classes only, still divided by B and C) or
  ``"none"``. The masks carry no gradient.

  Args:
    student_logits: ``[batch, num_classes]`` (the batch and class terms need the batch).
    teacher_logits: same shape.
    temperatures: τ values (Python numbers or scalar arrays), each > 0.
    mask: one of MLKD_MASKS.
    standardize: z-score the logits of the instance term (``kd_kl``'s option).
    correlation_weight: weight of the batch and class terms next to the instance term (1,
      the official equal weights). Their size is not invariant to the batch and class
      counts: ``M = Pᵀ P`` sums over the batch, so with B = 64 the class term is about
      (B / C)² times larger on 10 classes than on CIFAR-100's 100, and the batch term,
      whose large entries are same-class pairs, about B / C times
      (results/strong_view_recipes_digits.md).

  Returns:
    ``[batch]`` in at least float32; the official scalar is its mean.

  >>> import jax.numpy as jnp
  >>> z = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
  >>> mlkd(z, z).tolist()  # the same logits: nothing to distil
  [0.0, 0.0]
  """
  validation.check_logits("student_logits", student_logits)
  validation.check_logits("teacher_logits", teacher_logits)
  validation.check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
  if student_logits.ndim != 2:
    raise ValueError(
      f"mlkd's batch and class terms need logits [batch, classes]; got shape "
      f"{student_logits.shape}."
    )
  if mask not in MLKD_MASKS:
    raise ValueError(f"unknown mlkd mask {mask!r}; valid: {', '.join(MLKD_MASKS)}.")
  if not isinstance(temperatures, (tuple, list)):
    temperatures = (temperatures,)
  if not temperatures:
    raise ValueError("mlkd needs at least one temperature; the official set is (4, 3, 5, 2, 6).")
  for temperature in temperatures:
    validation.check_positive("temperature", temperature)
  dtype = validation.compute_dtype(student_logits, teacher_logits)
  batch, num_classes = student_logits.shape
  teacher = jax.lax.stop_gradient(teacher_logits.astype(dtype))
  student = student_logits.astype(dtype)

  p_teacher = jax.nn.softmax(teacher, axis=-1)
  confidence = jnp.max(p_teacher, axis=-1)
  keep_example = confidence <= jnp.percentile(confidence, 50)
  class_mass = jnp.sum(p_teacher, axis=0)
  keep_class = class_mass <= jnp.percentile(class_mass, 50)
  if mask == "fraction":
    example_weight = jnp.broadcast_to(jnp.mean(keep_example.astype(dtype)), (batch,))
    class_weight = jnp.broadcast_to(jnp.mean(keep_class.astype(dtype)), (num_classes,))
  elif mask == "per_example":
    example_weight, class_weight = keep_example.astype(dtype), keep_class.astype(dtype)
  else:
    example_weight, class_weight = jnp.ones((batch,), dtype), jnp.ones((num_classes,), dtype)

  total = jnp.zeros((batch,), dtype)
  for temperature in temperatures:
    instance = kd_kl(student, teacher, temperature, standardize=standardize)
    p_s = jnp.exp(_log_softmax(student, temperature, dtype))
    p_t = jnp.exp(_log_softmax(teacher, temperature, dtype))
    # Row i of ‖G_T − G_S‖² goes to example i: the batch mean is then ‖·‖² / B.
    # Full float32 products: a TF32 matmul (the accelerators' default) would blur the gaps.
    gram = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    batch_gap = jnp.sum(jnp.square(gram(p_t, p_t.T) - gram(p_s, p_s.T)), axis=-1)
    class_gap = jnp.sum(jnp.square(gram(p_t.T, p_t) - gram(p_s.T, p_s)), axis=-1) / num_classes
    correlation = jnp.asarray(correlation_weight, dtype)
    total = total + example_weight * (instance + correlation * batch_gap)
    # The whole class term, on every example.
    total = total + correlation * jnp.sum(class_weight * class_gap)
  return total


def cross_entropy(
  logits: jax.Array, labels: jax.Array, label_smoothing: float | jax.Array = 0.0
) -> jax.Array:
  """Cross-entropy ``−Σ_c y_c log softmax(z)_c``, per example.

  With label smoothing ε the target is ``(1 − ε)·y + ε/C`` (Szegedy et al. 2016; PyTorch's
  ``CrossEntropyLoss(label_smoothing=ε)``): ``(1 − ε)·CE(y) − ε·mean_c log softmax(z)_c``.
  ε = 0 gives exactly the plain cross-entropy.

  Args:
    logits: ``[..., num_classes]``.
    labels: integer class ids ``[...]``, or class probabilities ``[..., num_classes]``
      (soft or mixed labels).
    label_smoothing: ε in [0, 1) (may be traced).

  Returns:
    ``[...]`` in at least float32.
  """
  validation.check_logits("logits", logits)
  labels = jnp.asarray(labels)  # a Python list of class ids works too
  validation.check_labels("logits", logits, "labels", labels)
  dtype = validation.compute_dtype(logits)
  log_p = _log_softmax(logits, 1.0, dtype)
  if jnp.issubdtype(labels.dtype, jnp.integer):
    ce = -jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  else:
    ce = -jnp.sum(labels.astype(dtype) * log_p, axis=-1)
  if isinstance(label_smoothing, (int, float)):
    if not 0 <= label_smoothing < 1:
      raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}.")
    if label_smoothing == 0:
      return ce  # the graph without smoothing is exactly the plain one
  epsilon = jnp.asarray(label_smoothing, dtype)
  return (1 - epsilon) * ce - epsilon * jnp.mean(log_p, axis=-1)


def entropy(logits: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """Shannon entropy ``−Σ_c p_c log p_c`` of ``p = softmax(logits / τ)``, per example (nats).

  Used to score augmented samples for CutMix-pick (Wang et al. 2022).

  Returns:
    ``[...]`` in ``[0, log num_classes]``, at least float32.
  """
  validation.check_logits("logits", logits)
  validation.check_positive("temperature", temperature)
  log_p = _log_softmax(logits, temperature, validation.compute_dtype(logits))
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def kd_objective(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  temperature: float | jax.Array,
  ce_weight: float | jax.Array,
  kd_weight: float | jax.Array,
  label_smoothing: float | jax.Array = 0.0,
  standardize: bool | jax.Array = False,
) -> jax.Array:
  """Vanilla KD objective (Hinton et al. 2015), per example.

  ``ce_weight · CE(labels, student) + kd_weight · τ² · KL(p_T^τ || p_S^τ)``.
  The weights are named explicitly because "alpha" means the CE weight in some libraries
  and the KD weight in others. The CIFAR-100 protocol of RepDistiller uses τ = 4,
  ce_weight = 0.1, kd_weight = 0.9.

  Args:
    student_logits, teacher_logits: ``[..., num_classes]``, same shape.
    labels: integer ids ``[...]`` or probabilities ``[..., num_classes]``.
    label_smoothing: ε of the cross-entropy term (``cross_entropy``); the KD term is the
      teacher's, unsmoothed.
    standardize: logit standardisation of the KD term (``kd_kl``); the cross-entropy keeps
      the raw logits, as in Sun et al.'s code.

  Returns:
    ``[...]`` in at least float32.
  """
  ce = cross_entropy(student_logits, labels, label_smoothing)
  kd = kd_kl(student_logits, teacher_logits, temperature, standardize=standardize)
  return ce_weight * ce + kd_weight * kd


HINGE_REDUCTIONS = ("mean", "sum")


def continuation_hinge(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  phi: float | jax.Array,
  margin: float | jax.Array,
  reduction: str = "sum",
) -> jax.Array:
  """Continuation-KD's hinge (Jafari et al. 2022), per example.

  ``max(0, r_c (z_S − φ·z_T)² − margin·φ)`` on logits, not probabilities, where ``r_c`` is
  the sum over classes (``reduction="sum"``, the default: the paper's squared L2 norm in Eq.
  4) or the mean (``"mean"``, Annealing-KD's official code, which trains with an MSE loss).
  The sum is C times the mean, so it gives the distillation term C times the weight next to
  the labels and the learning rate, and the margin is on C times the scale. With ``margin = 0`` this is
  Annealing-KD's squared error to the scaled teacher ``φ·z_T``.

  Args:
    student_logits, teacher_logits: ``[..., num_classes]``, same shape.
    phi: teacher scale φ ∈ (0, 1] (a schedule value, may be traced).
    margin: m ≥ 0; gaps whose reduced squared error is below ``m·φ`` cost nothing.
    reduction: "sum" (default) or "mean" over classes (see above).

  Returns:
    ``[...]`` in at least float32.
  """
  validation.check_logits("student_logits", student_logits)
  validation.check_logits("teacher_logits", teacher_logits)
  validation.check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
  validation.check_non_negative("margin", margin)
  if reduction not in HINGE_REDUCTIONS:
    raise ValueError(
      f"unknown hinge reduction {reduction!r}; valid: {', '.join(HINGE_REDUCTIONS)}."
    )
  dtype = validation.compute_dtype(student_logits, teacher_logits)
  phi = jnp.asarray(phi, dtype)
  gap = student_logits.astype(dtype) - phi * teacher_logits.astype(dtype)
  reduce = jnp.sum if reduction == "sum" else jnp.mean
  return jnp.maximum(0.0, reduce(jnp.square(gap), axis=-1) - jnp.asarray(margin, dtype) * phi)
