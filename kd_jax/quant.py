"""DoReFa-Net quantisation (Zhou et al. 2016) with straight-through gradients.

  weights:      w_q = 2·Q_k(tanh(w) / (2·max|tanh w|) + 1/2) − 1
  activations:  a_q = Q_k(clip(a, 0, 1))
  Q_k(v) = round(v·(2^k − 1)) / (2^k − 1)

The rounding passes the gradient straight through (identity); everything around it (tanh,
the max normalisation, the clip) is differentiated normally. ``bits >= 32`` returns the input
unchanged (full precision).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kd_jax import validation

__all__ = ["dorefa_activations", "dorefa_weights", "quantize_unit"]


def quantize_unit(v: jax.Array, bits: int) -> jax.Array:
  """Q_k on [0, 1] with a straight-through gradient."""
  levels = 2**bits - 1
  rounded = jnp.round(v * levels) / levels
  return v + jax.lax.stop_gradient(rounded - v)


def _check_bits(bits: int) -> None:
  validation.static_int("bits", bits, minimum=1)


def dorefa_weights(w: jax.Array, bits: int) -> jax.Array:
  """DoReFa weight quantisation to ``bits`` (1 bit: sign(w)·E|w|, as the paper)."""
  _check_bits(bits)
  if bits >= 32:
    return w
  if bits == 1:
    scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(w)))
    return w + jax.lax.stop_gradient(jnp.sign(w) * scale - w)
  t = jnp.tanh(w)
  unit = t / (2 * jnp.max(jnp.abs(t))) + 0.5
  return 2 * quantize_unit(unit, bits) - 1


def dorefa_activations(a: jax.Array, bits: int) -> jax.Array:
  """DoReFa activation quantisation: Q_k(clip(a, 0, 1))."""
  _check_bits(bits)
  if bits >= 32:
    return a
  # Gradient 1 on the closed interval [0, 1], as TF's clip_by_value in the DoReFa reference
  # code and torch.clamp: jnp.clip alone gives 1/2 at a bound, and post-ReLU activations
  # sit exactly at 0 often enough to change the step.
  clipped = jnp.where((a >= 0.0) & (a <= 1.0), a, jnp.clip(a, 0.0, 1.0))
  return quantize_unit(clipped, bits)
