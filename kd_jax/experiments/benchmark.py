"""The one timing harness of the benchmarks: warm-up, alternating rounds, median and spread.

Every benchmark script (bench_views, bench_policies, bench_population, and the clone's
experiments.bench_vs_torch)
times its candidates the same way: each is called once untimed (compilation), then
``warmup`` untimed rounds, then ``repeats`` rounds in which every candidate takes its turn,
so that drifts in machine load (other jobs on a shared CPU) hit all of them alike. Reported
for every time: the median and the spread (min–max, and the interquartile range).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds of one candidate over the timed rounds."""

  samples: tuple[float, ...]

  @property
  def median(self) -> float:
    return float(np.median(self.samples))

  @property
  def min(self) -> float:
    return float(np.min(self.samples))

  @property
  def max(self) -> float:
    return float(np.max(self.samples))

  @property
  def iqr(self) -> tuple[float, float]:
    """The 25th and 75th percentiles."""
    low, high = np.percentile(self.samples, [25, 75])
    return float(low), float(high)

  def ms(self, digits: int = 1) -> str:
    """``"median (min–max)"`` in milliseconds, for a table cell."""
    return (
      f"{1000 * self.median:.{digits}f} ({1000 * self.min:.{digits}f}–{1000 * self.max:.{digits}f})"
    )


def _wait(value: Any) -> None:
  """Blocks until a JAX result is computed (a no-op for anything else)."""
  import jax

  jax.block_until_ready(value)


def time_alternating(
  candidates: Mapping[K, Callable[[], Any]],
  *,
  warmup: int,
  repeats: int,
  first_call: bool = False,
) -> dict[K, Timing]:
  """Times each candidate (a function of no argument; JAX results are waited for).

  ``first_call``: also make one untimed call of each first (compilation), for candidates
  that were not called yet. Then ``warmup`` untimed rounds and ``repeats`` timed rounds,
  every candidate taking its turn in each round, in the mapping's order.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be at least 1, got {repeats}.")
  for _ in range(int(first_call) + warmup):
    for run in candidates.values():
      _wait(run())
  samples: dict[K, list[float]] = {key: [] for key in candidates}
  for _ in range(repeats):
    for key, run in candidates.items():
      start = time.perf_counter()
      _wait(run())
      samples[key].append(time.perf_counter() - start)
  return {key: Timing(tuple(values)) for key, values in samples.items()}


def time_one(run: Callable[[], Any], *, warmup: int, repeats: int) -> Timing:
  """One candidate alone: a first (compiling) call, warm-up calls, timed calls."""
  return time_alternating({0: run}, warmup=warmup, repeats=repeats, first_call=True)[0]


def timed_call(run: Callable[[], Any]) -> float:
  """Seconds of one call, waited for (a first call: compile time)."""
  start = time.perf_counter()
  _wait(run())
  return time.perf_counter() - start


def protocol(warmup: int, repeats: int) -> str:
  """How the times were taken, for a report's first line."""
  return f"median (min–max) of {repeats} alternating rounds after {warmup} warm-up rounds"


def from_samples(samples: Sequence[float]) -> Timing:
  return Timing(tuple(float(s) for s in samples))
