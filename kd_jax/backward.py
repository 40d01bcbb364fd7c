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

from typing import Callable

import jax
import jax.numpy as jnp

from kd_jax import losses

DIVERGENCES = ("kl", "l1", "mse")
NORMALIZATIONS = ("sign", "l2", "none")


def per_example_divergence(teacher_logits, student_logits, kind: str = "kl", temperature=1.0):
  """Per-example divergence between teacher and student logits ``[..., classes] -> [...]``.

  ``kl``: KL(softmax(z_T/τ) || softmax(z_S/τ)) (without the τ² of the KD loss);
  ``l1``: mean over classes of |z_T − z_S|; ``mse``: mean over classes of (z_T − z_S)².
  """
  if kind == "kl":
    return losses.kd_kl(student_logits, teacher_logits, temperature) / jnp.square(
        jnp.asarray(temperature, jnp.float32))
  if kind == "l1":
    return jnp.mean(jnp.abs(teacher_logits - student_logits), axis=-1)
  if kind == "mse":
    return jnp.mean(jnp.square(teacher_logits - student_logits), axis=-1)
  raise ValueError(f"unknown divergence {kind!r}; valid names: {', '.join(DIVERGENCES)}.")


def divergence_input_grad(teacher_fn: Callable, student_fn: Callable, x: jax.Array, *,
                          divergence: str = "kl", temperature=1.0) -> jax.Array:
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
  def total(inputs):
    return jnp.sum(per_example_divergence(teacher_fn(inputs), student_fn(inputs), divergence,
                                          temperature))

  return jax.grad(total)(x)


def _normalize(grad, how: str):
  if how == "sign":
    return jnp.sign(grad)
  if how == "l2":
    axes = tuple(range(1, grad.ndim))
    norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=axes, keepdims=True))
    return grad / jnp.maximum(norm, 1e-12)
  return grad


def _project(x_aux, x, epsilon, how: str):
  """Back into the ε-ball around x: L2 ball for l2-normalised steps, else L∞."""
  delta = x_aux - x
  if how == "l2":
    axes = tuple(range(1, delta.ndim))
    norm = jnp.sqrt(jnp.sum(jnp.square(delta), axis=axes, keepdims=True))
    delta = delta * jnp.minimum(1.0, epsilon / jnp.maximum(norm, 1e-12))
  else:
    delta = jnp.clip(delta, -epsilon, epsilon)
  return x + delta


def auxiliary_samples(teacher_fn: Callable, student_fn: Callable, x: jax.Array, *,
                      steps: int = 1, step_size, normalize: str = "sign", epsilon=None,
                      clip=None, divergence: str = "kl", temperature=1.0) -> jax.Array:
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
    ``x_aux``, shaped like x.
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"unknown normalize {normalize!r}; valid names: {', '.join(NORMALIZATIONS)}.")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive Python int; got {steps!r}.")

  def body(x_aux):
    grad = divergence_input_grad(teacher_fn, student_fn, x_aux, divergence=divergence,
                                 temperature=temperature)
    x_aux = x_aux + step_size * _normalize(grad, normalize).astype(x_aux.dtype)
    if epsilon is not None:
      x_aux = _project(x_aux, x, epsilon, normalize)
    if clip is not None:
      x_aux = jnp.clip(x_aux, clip[0], clip[1])
    return x_aux

  # The K steps are unrolled into the one compiled program rather than run in a
  # lax.fori_loop: K is small, and XLA:CPU ran the convolutions of a loop body (even an
  # "unrolled" fori_loop) about 5 times slower than the same straight-line code (measured:
  # 1.1 s against 0.2 s for K = 1, resnet20 -> resnet8, batch 64, 2 cores).
  x_aux = x
  for _ in range(steps):
    x_aux = body(x_aux)
  return jax.lax.stop_gradient(x_aux)
