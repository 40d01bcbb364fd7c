"""In-memory uint8 image datasets and a seeded, resumable epoch sampler.

Small datasets (digits, MNIST, CIFAR) fit in host memory as uint8; the host hands uint8
batches to the device and every float conversion and augmentation happens inside the
compiled step. The sampler is a pure function of (seed, global step): batch k of epoch e is
always the same, so a run that resumes from step s continues with exactly the batches an
uninterrupted run would have seen, on any number of hosts.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Images ``uint8 [N, H, W, C]`` with integer labels ``[N]``.

  ``mean`` and ``std`` are per-channel statistics of pixel/255, used to normalise on device.
  """

  name: str
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __post_init__(self):
    if self.images.ndim != 4 or self.images.dtype != np.uint8:
      raise ValueError(
        f"{self.name}: images must be uint8 [N, H, W, C]; got "
        f"{self.images.dtype} {self.images.shape}."
      )
    if self.labels.shape != (self.images.shape[0],):
      raise ValueError(
        f"{self.name}: labels must have shape ({self.images.shape[0]},); got {self.labels.shape}."
      )
    channels = self.images.shape[-1]
    if len(self.mean) != channels or len(self.std) != channels:
      raise ValueError(f"{self.name}: mean and std need {channels} values, one per channel.")
    if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < self.num_classes:
      raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes}).")

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of ``images / 255`` (use the training split only)."""
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return tuple(pixels.mean(0).tolist()), tuple(pixels.std(0).tolist())


class EpochSampler:
  """Shuffled fixed-size training batches, a pure function of (seed, step).

  Each epoch is a fresh permutation drawn from ``numpy.random.default_rng([seed, epoch])``;
  the last ``N mod global_batch_size`` examples of each permutation are dropped, so every
  batch has the same shape and the step compiles once. With several hosts, each takes its
  contiguous slice of the global batch.
  """

  def __init__(
    self,
    num_examples: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ) -> None:
    if global_batch_size < 1 or global_batch_size > num_examples:
      raise ValueError(
        f"batch size must be in [1, {num_examples}] (the dataset size); got {global_batch_size}."
      )
    if global_batch_size % process_count:
      raise ValueError(
        f"global batch size {global_batch_size} must be divisible by the "
        f"number of processes {process_count}."
      )
    self.num_examples = num_examples
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.steps_per_epoch = num_examples // global_batch_size
    # The orders of the two newest epochs: decoding threads (kd_jax.data.pipeline) read
    # this per example, and at an epoch boundary some are still in the old epoch.
    self._orders: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      order = self._orders.get(epoch)
      if order is None:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        self._orders[epoch] = order
        while len(self._orders) > 2:
          del self._orders[min(self._orders)]
      return order

  def position(self, step: int) -> dict[str, int]:
    """The (epoch, batch within epoch) that global step ``step`` reads; epochs count from 0."""
    return {"epoch": step // self.steps_per_epoch, "batch_in_epoch": step % self.steps_per_epoch}

  def global_indices(self, step: int) -> np.ndarray:
    position = self.position(step)
    start = position["batch_in_epoch"] * self.global_batch_size
    return self._permutation(position["epoch"])[start : start + self.global_batch_size]

  def local_indices(self, step: int) -> np.ndarray:
    """This process's share of the global batch for ``step``."""
    per_process = self.global_batch_size // self.process_count
    start = self.process_index * per_process
    return self.global_indices(step)[start : start + per_process]


def eval_batches(
  data: ImageDataset | dict[str, np.ndarray],
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Sequential batches over a whole dataset, the last one padded and masked.

  ``data``: an ImageDataset, or a dict of host arrays with a ``label`` entry (token ids,
  ...). Yields dicts with its arrays (``image`` and ``label`` for an ImageDataset) and
  ``mask`` (1 for real examples, 0 for padding), each this process's slice of a global batch
  of ``batch_size``.
  """
  from kd_jax.data.pipeline import ArraySplit

  arrays = data if isinstance(data, dict) else {"image": data.images, "label": data.labels}
  return ArraySplit(arrays).eval_batches(batch_size, process_index, process_count)
