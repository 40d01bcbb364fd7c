"""Trace-time argument checks shared by the pure functions.

Shapes and dtypes are static under ``jax.jit``, so these checks run once, at trace time,
and cost nothing in the compiled program. Each error names the argument, what it got
and what it should have been.
"""

from __future__ import annotations

import jax.numpy as jnp


def check_floating(name: str, x) -> None:
  """Raises TypeError unless ``x`` has a floating dtype."""
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype (float32, bfloat16, ...); got {jnp.asarray(x).dtype}.")


def check_logits(name: str, logits) -> None:
  """Logits are floating with at least one axis: ``[..., num_classes]``."""
  check_floating(name, logits)
  if jnp.ndim(logits) < 1:
    raise ValueError(f"{name} must have shape [batch, num_classes]; got a scalar.")


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(
        f"{name_a} and {name_b} must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}.")


def check_labels(logits_name: str, logits, labels_name: str, labels) -> None:
  """Labels are integer class ids ``[...]`` or class probabilities ``[..., num_classes]``."""
  logits_shape, labels_shape = jnp.shape(logits), jnp.shape(labels)
  dtype = jnp.asarray(labels).dtype
  if jnp.issubdtype(dtype, jnp.integer):
    if labels_shape != logits_shape[:-1]:
      raise ValueError(
          f"integer {labels_name} must have shape {logits_shape[:-1]} (the shape of "
          f"{logits_name} {logits_shape} without its class axis); got {labels_shape}.")
  elif jnp.issubdtype(dtype, jnp.floating):
    if labels_shape != logits_shape:
      raise ValueError(
          f"probability {labels_name} must have the shape of {logits_name} {logits_shape}; "
          f"got {labels_shape}.")
  else:
    raise TypeError(f"{labels_name} must be integer class ids or floating probabilities; "
                    f"got dtype {dtype}.")


def check_positive_if_concrete(name: str, value) -> None:
  """Checks ``value > 0`` when it is a Python number; traced values are left alone."""
  if isinstance(value, (int, float)) and not value > 0:
    raise ValueError(f"{name} must be > 0; got {value}.")


def compute_dtype(*arrays):
  """At least float32: softmax and logs of bfloat16 logits lose too much precision."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)
