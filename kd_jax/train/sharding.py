"""Data parallelism with ``jax.jit`` and ``NamedSharding`` over a ``"data"`` mesh axis.

Parameters and optimiser state are replicated, batches are split on their leading axis, and
XLA inserts the gradient all-reduce. The same program runs on one CPU, eight GPUs or a TPU
pod; BatchNorm statistics are computed over the global batch, so results do not depend on
the device count (up to float summation order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

T = TypeVar("T")

DATA_AXIS = "data"


def initialize_multihost(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins a multi-host job with ``jax.distributed.initialize``.

  With no arguments JAX reads the cluster's environment (TPU pods, SLURM, Open MPI, ...);
  give all three to start processes by hand (e.g. several CPU processes on one machine).
  """
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """A 1-D mesh over ``devices`` (jax.Device objects; None: all global devices) with axis
  ``"data"``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that places an array whole on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The sharding that splits an array's leading (batch) axis over ``"data"``."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
  """Raises ValueError, naming ``what``, unless the mesh's size divides ``batch_size``."""
  if batch_size % mesh.size:
    raise ValueError(
      f"{what} {batch_size} must be divisible by the number of devices "
      f"{mesh.size}; choose a multiple of {mesh.size}."
    )


def replicate(tree: T, mesh: Mesh) -> T:
  """Places every leaf of ``tree`` on all devices of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Builds global arrays, sharded on the leading axis, from this process's slice."""
  sharding = batch_sharded(mesh)
  return {
    name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
    for name, value in local_batch.items()
  }
