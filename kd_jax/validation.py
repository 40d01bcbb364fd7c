"""Trace-time argument checks shared by the pure functions.

Shapes and dtypes are static under ``jax.jit``, so these checks run once, at trace time,
and cost nothing in the compiled program. Each error names the argument, what it got
and what it should have been.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core
from jax.experimental import checkify


def check_floating(name: str, x) -> None:
  """Raises TypeError unless ``x`` has a floating dtype."""
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
    raise TypeError(
      f"{name} must have a floating dtype (float32, bfloat16, ...); got {jnp.asarray(x).dtype}."
    )


def check_logits(name: str, logits) -> None:
  """Logits are floating with at least one axis: ``[..., num_classes]``."""
  check_floating(name, logits)
  if jnp.ndim(logits) < 1:
    raise ValueError(f"{name} must have shape [batch, num_classes]; got a scalar.")


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
  """Raises ValueError, naming both arguments, unless ``a`` and ``b`` have one shape."""
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(
      f"{name_a} and {name_b} must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}."
    )


def check_labels(logits_name: str, logits, labels_name: str, labels) -> None:
  """Labels are integer class ids ``[...]`` or class probabilities ``[..., num_classes]``."""
  logits_shape, labels_shape = jnp.shape(logits), jnp.shape(labels)
  dtype = jnp.asarray(labels).dtype
  if jnp.issubdtype(dtype, jnp.integer):
    if labels_shape != logits_shape[:-1]:
      raise ValueError(
        f"integer {labels_name} must have shape {logits_shape[:-1]} (the shape of "
        f"{logits_name} {logits_shape} without its class axis); got {labels_shape}."
      )
    _check_label_range(labels_name, labels, logits_shape[-1])
  elif jnp.issubdtype(dtype, jnp.floating):
    if labels_shape != logits_shape:
      raise ValueError(
        f"probability {labels_name} must have the shape of {logits_name} {logits_shape}; "
        f"got {labels_shape}."
      )
  else:
    raise TypeError(
      f"{labels_name} must be integer class ids or floating probabilities; got dtype {dtype}."
    )


def _check_label_range(name: str, labels, num_classes: int) -> None:
  """Class ids in [0, num_classes), checked at once when the labels are concrete (a traced
  label ≥ num_classes gives NaN and −1 reads the last class: see ``checked_labels``)."""
  if not isinstance(labels, jax_core.Tracer):
    values = np.asarray(labels)
    if values.size and not 0 <= values.min() <= values.max() < num_classes:
      raise ValueError(
        f"{name} must be class ids in [0, {num_classes}); got values from "
        f"{values.min()} to {values.max()}."
      )


def checked_labels(labels, num_classes: int, name: str = "labels"):
  """``labels``, checked to be class ids in [0, num_classes), also inside ``jax.jit``.

  The losses check concrete labels themselves, and the training loop checks every dataset
  when it loads it. Inside a compiled function labels are data, not known at trace time, so
  an out-of-range label gives NaN (≥ num_classes) or reads the last class (−1) without an
  error. Pass them through this function and run under ``jax.experimental.checkify``::

    def loss_fn(logits, labels):
      labels = validation.checked_labels(labels, logits.shape[-1])
      return losses.cross_entropy(logits, labels)

    error, loss = checkify.checkify(jax.jit(loss_fn))(logits, labels)
    error.throw()  # raises, naming the bad labels

  Traced, it needs checkify (JAX refuses an unfunctionalised check under jit).
  """
  if isinstance(labels, jax_core.Tracer):
    checkify.check(
      jnp.all((labels >= 0) & (labels < num_classes)),
      f"{name} must be class ids in [0, {num_classes}); got {{}}.",
      labels,
    )
  else:
    _check_label_range(name, labels, num_classes)
  return labels


def concrete_number(value):
  """``value`` as a Python number if it is a Python or NumPy number or a concrete 0-d array
  (not traced), else None."""
  if isinstance(value, jax_core.Tracer):
    return None
  if isinstance(value, (int, float, np.number)) or (
    isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0
  ):
    return np.asarray(value).item()
  return None


def _check_number_type(name: str, value) -> None:
  """Numbers, NumPy and JAX arrays pass; a string (``"-4"`` from a config file), None or a
  bool is refused instead of being converted somewhere inside."""
  if isinstance(value, (str, bytes, bool)) or value is None:
    raise TypeError(
      f"{name} must be a number or a numeric array; got {value!r} ({type(value).__name__})."
    )


def _check_traced(name: str, value, condition: str, holds) -> None:
  """A traced value's check, active only where the caller asks for checks: under
  ``checkify.checkify(fn, errors=checkify.user_checks)`` it raises with the value; without
  checkify it costs nothing and checks nothing (JAX cannot raise from inside a compiled
  function, and an unconditional ``checkify.check`` would refuse to compile)."""
  checkify.debug_check(jnp.all(holds), f"{name} must be {condition}; got {{}}.", value)


def check_positive(name: str, value) -> None:
  """``value > 0``, checked as far as it can be: a string is refused; a Python or NumPy
  number or a concrete array is checked now (NaN fails: it is not > 0); a traced value is
  checked under ``jax.experimental.checkify`` (see ``_check_traced``), as in::

    checked = checkify.checkify(jax.jit(loss_fn), errors=checkify.user_checks)
    error, loss = checked(student_logits, teacher_logits, temperature)
    error.throw()  # ValueError-like JaxRuntimeError naming the temperature
  """
  _check_number_type(name, value)
  if isinstance(value, jax_core.Tracer):
    _check_traced(name, value, "> 0", value > 0)
    return
  values = np.asarray(value)
  if values.dtype.kind not in "iuf":
    raise TypeError(f"{name} must be a real number; got {value!r} (dtype {values.dtype}).")
  if not np.all(values > 0):
    raise ValueError(f"{name} must be > 0; got {value}.")


def check_non_negative(name: str, value) -> None:
  """``value ≥ 0`` (NaN fails), checked as ``check_positive`` checks ``> 0``."""
  _check_number_type(name, value)
  if isinstance(value, jax_core.Tracer):
    _check_traced(name, value, "≥ 0", value >= 0)
    return
  values = np.asarray(value)
  if values.dtype.kind not in "iuf":
    raise TypeError(f"{name} must be a real number; got {value!r} (dtype {values.dtype}).")
  if not np.all(values >= 0):
    raise ValueError(f"{name} must be ≥ 0; got {value}.")


def static_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
  """A shape-fixing argument as a Python int: Python and NumPy integers pass (``np.int64``
  from an array's ``.shape`` arithmetic or a config), anything else is a clear error."""
  try:
    number = operator.index(value)
  except TypeError:
    number = None
  if (
    number is None
    or isinstance(value, bool)
    or (minimum is not None and number < minimum)
    or (maximum is not None and number > maximum)
  ):
    bounds = (
      f" in [{minimum}, {maximum}]"
      if maximum is not None
      else (f" ≥ {minimum}" if minimum is not None else "")
    )
    raise ValueError(
      f"{name} must be an integer{bounds} (a Python or NumPy int: it fixes shapes); got {value!r}."
    )
  return number


def check_image_layout(name: str, images) -> None:
  """Images are ``[batch, height, width, channels]`` (NHWC). A batch that looks like NCHW
  (1 or 3 on axis 1, more than 4 on the last axis) is refused: mixing and cropping would run
  over the wrong axes without any error."""
  shape = jnp.shape(images)
  if len(shape) != 4:
    raise ValueError(f"{name} must have shape [batch, height, width, channels]; got shape {shape}.")
  if shape[1] in (1, 3) and shape[3] > 4:
    raise ValueError(
      f"{name} has shape {shape}, which looks like [batch, channels, height, "
      f"width] (NCHW); kd_jax takes [batch, height, width, channels] (NHWC): "
      f"use images.transpose(0, 2, 3, 1)."
    )


def compute_dtype(*arrays):
  """At least float32: softmax and logs of bfloat16 logits lose too much precision."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


class _CheckedLogits:
  """``fn`` with its output checked (``logits_function``); every attribute of ``fn`` (a
  bound model's ``constants``, ``module``) reads through."""

  def __init__(self, name: str, fn):
    self._name, self._fn = name, fn

  def __call__(self, inputs):
    out = self._fn(inputs)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
      kind = type(out).__name__
      size = f" of {len(out)} items" if isinstance(out, (tuple, list, dict)) else ""
      raise TypeError(
        f"{self._name} must return the logits array [batch, classes]; it "
        f"returned a {kind}{size}. Return the logits alone, e.g. "
        "lambda x: model.apply(variables, x)[0]."
      )
    return out

  def __getattr__(self, attribute):
    return getattr(self._fn, attribute)


def logits_function(name: str, fn):
  """``fn`` checked to return one logits array: a model that returns a tuple (logits and
  features, or ``(logits, state)`` from ``apply(..., mutable=...)``) is named at trace time
  instead of failing later in a concatenate or a softmax."""
  if not callable(fn) or isinstance(fn, _CheckedLogits):  # None (no student) passes as is
    return fn
  return _CheckedLogits(name, fn)
