"""Backward-pass KD (Jafari et al. 2023): auxiliary samples where teacher and student disagree.

KD matches the student to the teacher only at the training points. These functions move
inputs along the input gradient of a teacher–student divergence ``D(T(x), S(x))`` — a
gradient that flows back through both networks — to where the two disagree most, so the
student can be trained there too.

``teacher_fn`` and ``student_fn`` map a batch of inputs to logits with their parameters
closed over, in inference mode (no BatchNorm statistics update): any JAX model works,
Flax Linen, NNX (through ``nnx.split``/``nnx.merge``), Equinox or plain functions.
Examples are independent in inference mode, so the gradient of the batch sum is the
per-example gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kd_jax import losses, validation

__all__ = [
  "DIVERGENCES",
  "NORMALIZATIONS",
  "TOKEN_NORMALIZATIONS",
  "auxiliary_samples",
  "divergence_input_grad",
  "per_example_divergence",
  "token_auxiliary_embeddings",
]

Logits = Callable[[jax.Array], jax.Array]

DIVERGENCES = ("kl", "l1", "mse")
NORMALIZATIONS = ("sign", "l2", "none")


def per_example_divergence(
  teacher_logits: jax.Array,
  student_logits: jax.Array,
  kind: str = "kl",
  temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """Per-example divergence between teacher and student logits ``[..., classes] -> [...]``.

  ``kl``: KL(softmax(z_T/τ) || softmax(z_S/τ)) (without the τ² of the KD loss);
  ``l1``: mean over classes of ``|z_T − z_S|``; ``mse``: mean over classes of (z_T − z_S)².
  """
  if kind == "kl":
    return losses.kd_kl(student_logits, teacher_logits, temperature) / jnp.square(
      jnp.asarray(temperature, jnp.float32)
    )
  if kind == "l1":
    return jnp.mean(jnp.abs(teacher_logits - student_logits), axis=-1)
  if kind == "mse":
    return jnp.mean(jnp.square(teacher_logits - student_logits), axis=-1)
  raise ValueError(f"unknown divergence {kind!r}; valid names: {', '.join(DIVERGENCES)}.")


def divergence_input_grad(
  teacher_fn: Logits,
  student_fn: Logits,
  x: jax.Array,
  *,
  divergence: str = "kl",
  temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """``∇_x Σ_i D(T(x_i), S(x_i))``: each example's divergence gradient, shaped like ``x``.

  Args:
    teacher_fn, student_fn: ``x -> logits [batch, classes]`` (inference mode).
    x: inputs ``[batch, ...]`` (floating).
    divergence: "kl" (at ``temperature``), "l1" or "mse" of the logits.
    temperature: τ of the KL divergence.
  """
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; valid names: {', '.join(DIVERGENCES)}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x must be floating (normalised inputs); got {x.dtype}.")
  validation.check_positive("temperature", temperature)
  teacher_fn = validation.logits_function("teacher_fn", teacher_fn)
  student_fn = validation.logits_function("student_fn", student_fn)

  def total(inputs):
    return jnp.sum(
      per_example_divergence(teacher_fn(inputs), student_fn(inputs), divergence, temperature)
    )

  return jax.grad(total)(x)


def _normalize(grad: jax.Array, how: str) -> jax.Array:
  if how == "sign":
    return jnp.sign(grad)
  if how == "l2":
    axes = tuple(range(1, grad.ndim))
    norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=axes, keepdims=True))
    return grad / jnp.maximum(norm, 1e-12)
  return grad


def _project(x_aux: jax.Array, x: jax.Array, epsilon, how: str) -> jax.Array:
  """Back into the ε-ball around x: L2 ball for l2-normalised steps, else L∞."""
  delta = x_aux - x
  if how == "l2":
    axes = tuple(range(1, delta.ndim))
    norm = jnp.sqrt(jnp.sum(jnp.square(delta), axis=axes, keepdims=True))
    delta = delta * jnp.minimum(1.0, epsilon / jnp.maximum(norm, 1e-12))
  else:
    delta = jnp.clip(delta, -epsilon, epsilon)
  return x + delta


def auxiliary_samples(
  teacher_fn: Logits,
  student_fn: Logits,
  x: jax.Array,
  *,
  steps: int = 1,
  step_size: float | jax.Array,
  normalize: str = "sign",
  epsilon: float | jax.Array | None = None,
  clip: tuple[ArrayLike, ArrayLike] | None = None,
  divergence: str = "kl",
  temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """K gradient-ascent steps on the teacher–student divergence, from x.

  ``x_aux ← x_aux + η·normalize(∇_x D(T(x_aux), S(x_aux)))``, then (optionally) projection
  into the ε-ball around x (L2 for ``normalize="l2"``, L∞ otherwise) and clipping to the
  valid input range; the K steps are unrolled inside the caller's compiled program (see the
  comment at the end on why not a ``lax.fori_loop``); the result is under ``stop_gradient``.

  Args:
    teacher_fn, student_fn: ``x -> logits`` in inference mode.
    x: inputs ``[batch, ...]``.
    steps: K ≥ 1 (Python int).
    step_size: η (number or scalar array).
    normalize: "sign", "l2" (per example) or "none".
    epsilon: radius of the ball around x, or None for no projection.
    clip: ``(low, high)`` bounds broadcastable to x (e.g. per-channel valid range of
      normalised pixels), or None.
    divergence, temperature: see ``divergence_input_grad``.

  Returns:
    ``x_aux``, shaped like x and in its dtype (bfloat16 in, bfloat16 out, whatever the
    dtypes of ``step_size``, ``epsilon`` and ``clip``).

  Where neither model's logits depend on x (an untrained teacher with a zero-initialised
  head outputs constant logits, and so does a student at initialisation with big_vision's
  zero head), the gradient is 0 and ``x_aux == x``: the view is then a copy of the batch.
  kd_jax's training loop warns about such a teacher before the first step.

  >>> import jax.numpy as jnp
  >>> teacher = lambda x: jnp.stack([x.sum(axis=1), -x.sum(axis=1)], axis=-1)
  >>> student = lambda x: jnp.zeros((x.shape[0], 2)) + jnp.array([1.0, 0.0])  # likes class 0
  >>> x = jnp.zeros((1, 3), jnp.bfloat16)  # the teacher is unsure: moving x down disagrees more
  >>> auxiliary_samples(teacher, student, x, step_size=0.5, clip=(-0.25, 0.25))
  Array([[-0.25, -0.25, -0.25]], dtype=bfloat16)
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"unknown normalize {normalize!r}; valid names: {', '.join(NORMALIZATIONS)}.")
  steps = validation.static_int("steps", steps, minimum=1)

  def body(x_aux):
    grad = divergence_input_grad(
      teacher_fn, student_fn, x_aux, divergence=divergence, temperature=temperature
    )
    # Each result back in x's dtype: a float32 step size, radius or clip bound (a NumPy
    # per-channel range) must not promote bfloat16 inputs.
    x_aux = (x_aux + step_size * _normalize(grad, normalize)).astype(x.dtype)
    if epsilon is not None:
      x_aux = _project(x_aux, x, epsilon, normalize).astype(x.dtype)
    if clip is not None:
      x_aux = jnp.clip(x_aux, clip[0], clip[1]).astype(x.dtype)
    return x_aux

  # The K steps are unrolled into the one compiled program rather than run in a
  # lax.fori_loop: K is small, and XLA:CPU ran the convolutions of a loop body (even an
  # "unrolled" fori_loop) about 5 times slower than the same straight-line code (measured:
  # 1.1 s against 0.2 s for K = 1, resnet20 -> resnet8, batch 64, 2 cores).
  x_aux = x
  for _ in range(steps):
    x_aux = body(x_aux)
  return jax.lax.stop_gradient(x_aux)


# --- Text: perturbing a relaxed one-hot sequence through each model's own embeddings. ---

TOKEN_NORMALIZATIONS = ("l2", "none")


def token_auxiliary_embeddings(
  teacher_fn: Callable,
  student_fn: Callable,
  teacher_table,
  student_table,
  input_ids,
  perturb_mask,
  *,
  steps: int = 1,
  step_size,
  normalize: str = "l2",
  divergence: str = "kl",
  temperature=1.0,
  project_to_tokens: bool = False,
  teacher_gram=None,
):
  """Backward-pass KD over tokens: K ascent steps on a relaxed one-hot sequence X.

  Teacher and student share a vocabulary but have their own embedding tables E_T ``[V, d_T]``
  and E_S ``[V, d_S]``; each sees ``X·E``. With ``a = ∇_{e_T} D`` and ``b = ∇_{e_S} D``, the
  gradient with respect to X is ``g = a·E_Tᵀ + b·E_Sᵀ`` (``[batch, length, V]``), and a step
  ``X ← X + c·g`` moves the embeddings by ``c·g·E_T = c·(a·E_TᵀE_T + b·E_SᵀE_T)`` and
  ``c·g·E_S = c·(a·E_TᵀE_S + b·E_SᵀE_S)``. Only the three Gram matrices (``d × d``) are
  formed, never the batch × length × vocabulary tensor; the per-example L2 norm of g is
  ``a·G_TT·aᵀ + 2·a·G_TS·bᵀ + b·G_SS·bᵀ`` summed over positions.

  Args:
    teacher_fn, student_fn: ``word_embeddings [B, L, d] -> logits`` in inference mode (the
      rest of the inputs — types, attention mask — closed over).
    teacher_table, student_table: the word-embedding matrices ``[V, d_T]``, ``[V, d_S]``.
    input_ids: int ``[B, L]``.
    perturb_mask: bool ``[B, L]``: positions that may move (not special, not padding).
    steps: K ≥ 1; step_size: η.
    normalize: "l2" (per example, over positions and vocabulary) or "none". The sign of g
      would need the V-wide tensor, so it is not offered for tokens.
    divergence, temperature: see ``divergence_input_grad``.
    teacher_gram: ``E_TᵀE_T`` if already computed (the teacher is frozen, so a training
      loop computes it once instead of every step; it is the largest of the three products
      when the teacher is the wider model).
    project_to_tokens: also return the nearest discrete sentence ``argmax_v X'`` (computed
      one example at a time, so only ``L × V`` scores exist at once); frozen positions keep
      their token.

  Returns:
    ``(teacher_embeddings, student_embeddings)`` of the auxiliary samples, and the projected
    token ids when ``project_to_tokens``; all under ``stop_gradient``.
  """
  if normalize not in TOKEN_NORMALIZATIONS:
    raise ValueError(
      f"unknown token normalize {normalize!r}; valid names: "
      f"{', '.join(TOKEN_NORMALIZATIONS)} (sign needs the vocabulary-wide "
      "gradient, which this formulation never forms)."
    )
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; valid names: {', '.join(DIVERGENCES)}.")
  steps = validation.static_int("steps", steps, minimum=1)
  validation.check_positive("temperature", temperature)
  teacher_fn = validation.logits_function("teacher_fn", teacher_fn)
  student_fn = validation.logits_function("student_fn", student_fn)
  if input_ids.shape != perturb_mask.shape:
    raise ValueError(
      f"perturb_mask has shape {perturb_mask.shape}; input_ids has {input_ids.shape}."
    )
  teacher_table = jax.lax.stop_gradient(jnp.asarray(teacher_table, jnp.float32))
  student_table = jax.lax.stop_gradient(jnp.asarray(student_table, jnp.float32))
  gram_tt = (
    teacher_table.T @ teacher_table
    if teacher_gram is None  # [d_T, d_T]
    else jax.lax.stop_gradient(jnp.asarray(teacher_gram, jnp.float32))
  )
  gram_ts = teacher_table.T @ student_table  # [d_T, d_S]
  gram_ss = student_table.T @ student_table  # [d_S, d_S]
  mask = perturb_mask[..., None].astype(jnp.float32)

  def total(e_teacher, e_student):
    return jnp.sum(
      per_example_divergence(teacher_fn(e_teacher), student_fn(e_student), divergence, temperature)
    )

  e_teacher = jnp.take(teacher_table, input_ids, axis=0)
  e_student = jnp.take(student_table, input_ids, axis=0)
  coef_teacher = jnp.zeros_like(e_teacher)  # Σ_k c_k·a_k: X' − X = coef_T·E_Tᵀ + coef_S·E_Sᵀ
  coef_student = jnp.zeros_like(e_student)
  for _ in range(steps):  # unrolled, as auxiliary_samples (see there)
    a, b = jax.grad(total, argnums=(0, 1))(e_teacher, e_student)
    a, b = a * mask, b * mask
    scale = step_size
    if normalize == "l2":
      squared = (
        jnp.einsum("bld,de,ble->b", a, gram_tt, a)
        + 2 * jnp.einsum("bld,de,ble->b", a, gram_ts, b)
        + jnp.einsum("bld,de,ble->b", b, gram_ss, b)
      )
      scale = step_size / jnp.sqrt(jnp.maximum(squared, 1e-24))[:, None, None]
    e_teacher = e_teacher + scale * (a @ gram_tt + b @ gram_ts.T)
    e_student = e_student + scale * (a @ gram_ts + b @ gram_ss)
    coef_teacher = coef_teacher + scale * a
    coef_student = coef_student + scale * b
  outputs = (jax.lax.stop_gradient(e_teacher), jax.lax.stop_gradient(e_student))
  if not project_to_tokens:
    return outputs

  def nearest(args):
    ids, c_t, c_s = args
    scores = c_t @ teacher_table.T + c_s @ student_table.T  # [L, V]
    scores = scores + jax.nn.one_hot(ids, teacher_table.shape[0], dtype=scores.dtype)
    return jnp.argmax(scores, axis=-1).astype(input_ids.dtype)

  projected = jax.lax.map(nearest, (input_ids, coef_teacher, coef_student))
  projected = jnp.where(perturb_mask, projected, input_ids)
  return (*outputs, jax.lax.stop_gradient(projected))
