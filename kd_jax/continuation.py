"""Schedules of Continuation-KD and Annealing-KD (Jafari et al. 2021, 2022).

Continuation-KD optimises a smoothed objective first and sharpens it over training: the
teacher's logits are scaled by φ, which grows from 1/T_max to 1 as the temperature T steps
down from T_max to 1, and ψ moves the weight from the distillation hinge to cross-entropy.
All schedules are functions of the epoch, counted from 1. The training loop evaluates them on
the host once per epoch (Python numbers in, Python numbers out, arguments checked) and feeds
the values to the compiled step as arrays (no recompilation). Given jax arrays (e.g. a traced
epoch under ``jax.jit`` or ``jax.vmap``), they compute the same values with jax.numpy and
skip the argument checks, which would need concrete values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import overload

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "PSI_SCHEDULES",
  "annealing_switch_epoch",
  "phi",
  "psi_at",
  "psi_linear",
  "psi_piecewise",
  "psi_step",
  "schedule_values",
  "temperature_at",
]

# Each schedule takes Python numbers and returns one, or takes jax arrays (e.g. a traced epoch)
# and returns a jax array: the overloads give Python numbers in, a Python number out.
_Int = int | jax.Array
_Float = float | jax.Array


def _on_host(*values: object) -> bool:
  """Python or NumPy numbers (checked, computed in Python) rather than jax arrays."""
  return all(isinstance(v, (int, float, np.integer, np.floating)) for v in values)


def _check_epoch(epoch: _Float) -> None:
  if epoch < 1:
    raise ValueError(f"epochs count from 1; got {epoch}.")


def _check_ramp(ramp_epochs: _Float) -> None:
  if not ramp_epochs > 0:  # also refuses NaN
    raise ValueError(f"psi_ramp_epochs (ψ's ramp length) must be > 0; got {ramp_epochs}.")


@overload
def temperature_at(epoch: int, num_epochs: int, t_max: int) -> int: ...
@overload
def temperature_at(epoch: _Int, num_epochs: _Int, t_max: _Int) -> _Int: ...
def temperature_at(epoch: _Int, num_epochs: _Int, t_max: _Int) -> _Int:
  """``T = max(1, t_max − floor(epoch / k))`` with ``k = max(1, floor(num_epochs / t_max))``.

  T starts at t_max and steps down by one every k epochs. The paper's algorithm lets T reach
  0 (which would make φ > 1); it is clamped at 1. ``k ≥ 1`` also covers runs shorter than
  t_max epochs.
  """
  if not _on_host(epoch, num_epochs, t_max):
    step = jnp.maximum(1, num_epochs // t_max)
    return jnp.maximum(1, t_max - epoch // step)
  _check_epoch(epoch)
  if t_max < 1 or num_epochs < 1:
    raise ValueError(f"t_max and num_epochs must be ≥ 1; got {t_max} and {num_epochs}.")
  step = max(1, num_epochs // t_max)
  return max(1, t_max - epoch // step)


@overload
def phi(temperature: float, t_max: float) -> float: ...
@overload
def phi(temperature: _Float, t_max: _Float) -> _Float: ...
def phi(temperature: _Float, t_max: _Float) -> _Float:
  """``φ = 1 − (T − 1) / t_max``: 1/t_max at T = t_max, 1 at T = 1."""
  if not _on_host(temperature, t_max):
    return 1.0 - (temperature - 1.0) / t_max
  if not 1 <= temperature <= t_max:
    raise ValueError(f"temperature must lie in [1, t_max={t_max}]; got {temperature}.")
  return 1.0 - (temperature - 1.0) / t_max


@overload
def psi_linear(epoch: int, ramp_epochs: float) -> float: ...
@overload
def psi_linear(epoch: _Int, ramp_epochs: _Float) -> _Float: ...
def psi_linear(epoch: _Int, ramp_epochs: _Float) -> _Float:
  """``ψ = min(epoch / ramp_epochs, 1)`` (CIFAR: ramp over 150 of 200 epochs)."""
  if not _on_host(epoch, ramp_epochs):
    return jnp.minimum(epoch / ramp_epochs, 1.0)
  _check_epoch(epoch)
  _check_ramp(ramp_epochs)
  return min(epoch / ramp_epochs, 1.0)


@overload
def psi_piecewise(epoch: int, ramp_epochs: float = 40, switch_epoch: int = 20) -> float: ...
@overload
def psi_piecewise(epoch: _Int, ramp_epochs: _Float = 40, switch_epoch: _Int = 20) -> _Float: ...
def psi_piecewise(epoch: _Int, ramp_epochs: _Float = 40, switch_epoch: _Int = 20) -> _Float:
  """GLUE schedule: ``ψ = epoch / ramp_epochs`` for ``epoch ≤ switch_epoch``, then 1."""
  if not _on_host(epoch, ramp_epochs, switch_epoch):
    return jnp.where(epoch <= switch_epoch, epoch / ramp_epochs, 1.0)
  _check_epoch(epoch)
  _check_ramp(ramp_epochs)
  return epoch / ramp_epochs if epoch <= switch_epoch else 1.0


@overload
def psi_step(epoch: int, switch_epoch: int) -> float: ...
@overload
def psi_step(epoch: _Int, switch_epoch: _Int) -> _Float: ...
def psi_step(epoch: _Int, switch_epoch: _Int) -> _Float:
  """Annealing-KD: ψ = 0 (distillation only) up to ``switch_epoch``, then 1 (labels only)."""
  if not _on_host(epoch, switch_epoch):
    return jnp.where(epoch <= switch_epoch, 0.0, 1.0)
  _check_epoch(epoch)
  return 0.0 if epoch <= switch_epoch else 1.0


PSI_SCHEDULES = ("linear", "piecewise", "step")


@overload
def psi_at(schedule: str, epoch: int, *, ramp_epochs: float, switch_epoch: int) -> float: ...
@overload
def psi_at(schedule: str, epoch: _Int, *, ramp_epochs: _Float, switch_epoch: _Int) -> _Float: ...
def psi_at(schedule: str, epoch: _Int, *, ramp_epochs: _Float, switch_epoch: _Int) -> _Float:
  """ψ of the named schedule (see PSI_SCHEDULES)."""
  if schedule == "linear":
    return psi_linear(epoch, ramp_epochs)
  if schedule == "piecewise":
    return psi_piecewise(epoch, ramp_epochs, switch_epoch)
  if schedule == "step":
    return psi_step(epoch, switch_epoch)
  raise ValueError(f"unknown psi schedule {schedule!r}; valid names: {', '.join(PSI_SCHEDULES)}.")


@overload
def schedule_values(
  epoch: int,
  num_epochs: int,
  t_max: int,
  psi_schedule: str,
  *,
  ramp_epochs: float,
  switch_epoch: int,
) -> dict[str, float]: ...
@overload
def schedule_values(
  epoch: _Int,
  num_epochs: _Int,
  t_max: _Int,
  psi_schedule: str,
  *,
  ramp_epochs: _Float,
  switch_epoch: _Int,
) -> Mapping[str, _Float]: ...
def schedule_values(
  epoch: _Int,
  num_epochs: _Int,
  t_max: _Int,
  psi_schedule: str,
  *,
  ramp_epochs: _Float,
  switch_epoch: _Int,
) -> Mapping[str, _Float]:
  """T, φ and ψ for one epoch."""
  temperature: _Float = temperature_at(epoch, num_epochs, t_max)
  if _on_host(temperature):
    temperature = float(temperature)
  return {
    "continuation_temperature": temperature,
    "phi": phi(temperature, t_max),
    "psi": psi_at(psi_schedule, epoch, ramp_epochs=ramp_epochs, switch_epoch=switch_epoch),
  }


@overload
def annealing_switch_epoch(num_epochs: int, t_max: int) -> int: ...
@overload
def annealing_switch_epoch(num_epochs: _Int, t_max: _Int) -> _Int: ...
def annealing_switch_epoch(num_epochs: _Int, t_max: _Int) -> _Int:
  """The epoch at which T reaches 1, where Annealing-KD switches to labels."""
  if not _on_host(num_epochs, t_max):
    return jnp.minimum(num_epochs, (t_max - 1) * jnp.maximum(1, num_epochs // t_max))
  step = max(1, num_epochs // t_max)
  return min(num_epochs, math.ceil((t_max - 1) * step))
