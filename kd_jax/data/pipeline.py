"""The one data interface of the training loop: a split of examples read by global step.

A run's training data is a ``Split``: ``len(split)`` examples that the loop reads as
``split.train_batches(sampler, start_step, stop_step)``, an iterator over this process's
share of each global batch from ``start_step`` on, and ``split.eval_batches(batch_size, ...)``,
masked sequential batches over the whole split. Two kinds sit behind it:

- ``ArraySplit``: host arrays (digits, MNIST, CIFAR as uint8 images; token ids for text),
  gathered with one fancy-indexing call per batch.
- ``RecordSplit``: a random-access source of encoded records (a TFDS ArrayRecord split read
  with ``tfds.data_source``, a grain ``ArrayRecordDataSource``, or any object with
  ``__len__`` and ``__getitem__``), each decoded and cropped to a fixed size by a host
  transform that runs in a pool of grain worker threads; only this process's examples are
  ever read.

What is the same for both, and what the loop relies on:

- The batches are a pure function of (seed, step): ``kd_jax.data.EpochSampler`` says which
  examples step ``s`` reads, and a host transform's randomness (a random-resized crop) is
  drawn from ``numpy.random.default_rng([seed, step, position in the global batch])``. A
  run resumed at step ``s`` needs no iterator state and sees exactly the batches of an
  uninterrupted run.
- The global batch is the same with 1 or N processes: each process reads and decodes only
  its contiguous share of it (``EpochSampler.local_indices``), and a position's randomness
  does not depend on which process holds it. (A split small enough to be decoded once into
  memory, kd_jax.data.streamed's ``cache``, is decoded whole by every process, as the
  in-memory datasets are loaded whole.)
- Everything after the fixed-size uint8 image (flip, padding crop, normalisation, mixup,
  CutMix, picking, backward samples, policies) runs on the device inside the step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
  from kd_jax.data.in_memory import EpochSampler

# The stream a host transform draws from at (seed, step, position): a fixed first key keeps
# it apart from the sampler's permutation stream, default_rng([seed, epoch]).
_TRANSFORM_STREAM = 0x7A11


class Split(Protocol):
  """What the loop reads (see the module docstring)."""

  def __len__(self) -> int: ...

  def train_batches(
    self, sampler: EpochSampler, start_step: int, stop_step: int
  ) -> Iterator[dict[str, np.ndarray]]: ...

  def eval_batches(
    self, batch_size: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict[str, np.ndarray]]: ...


def transform_rng(seed: int, step: int, position: int) -> np.random.Generator:
  """The generator a host transform uses for the example at ``position`` of the global batch
  of ``step``: the same on every process and on every rerun."""
  return np.random.default_rng([_TRANSFORM_STREAM, seed, step, position])


def _local_slice(batch_size: int, process_index: int, process_count: int) -> slice:
  per_process = batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def _eval_positions(size: int, batch_size: int, process_index: int, process_count: int):
  """``(indices, mask)`` of this process's share of each sequential evaluation batch; the
  last global batch is padded with example 0 and masked."""
  local = _local_slice(batch_size, process_index, process_count)
  for start in range(0, size, batch_size):
    index = np.arange(start, start + batch_size)
    mask = index < size
    yield np.where(mask, index, 0)[local], mask[local].astype(np.float32)


class ArraySplit:
  """A split held in host memory as a dict of arrays with a ``label`` entry (uint8 images
  ``[N, H, W, C]`` under ``image``, or token ids), gathered by one indexing call per batch
  (the loop's prefetch thread runs it ahead of the step)."""

  def __init__(self, arrays: dict[str, np.ndarray]) -> None:
    if "label" not in arrays:
      raise ValueError(f"an ArraySplit needs a 'label' array; got {sorted(arrays)}.")
    sizes = {name: len(values) for name, values in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"every array of a split needs the same length; got {sizes}.")
    self.arrays = arrays

  def __len__(self) -> int:
    return len(self.arrays["label"])

  def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[indices] for name, values in self.arrays.items()}

  def train_batches(
    self, sampler: EpochSampler, start_step: int, stop_step: int
  ) -> Iterator[dict[str, np.ndarray]]:
    return (self.gather(sampler.local_indices(step)) for step in range(start_step, stop_step))

  def eval_batches(
    self, batch_size: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict[str, np.ndarray]]:
    for index, mask in _eval_positions(len(self), batch_size, process_index, process_count):
      yield {**self.gather(index), "mask": mask}


class RecordSource(Protocol):
  """A random-access source of records: a TFDS ArrayRecord split, a grain data source, a list."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int, /) -> Any: ...


class RecordSplit:
  """A split read record by record from ``source`` (``len`` and ``[i]``), each record turned
  into a dict of fixed-shape arrays by a host transform in ``workers`` grain threads.

  ``train_transform(record, rng)`` and ``eval_transform(record)`` return e.g.
  ``{"image": uint8 [S, S, 3], "label": int32}`` (kd_jax.data.images makes them for encoded
  images). ``prefetch``: how many batches the threads decode ahead of the step (at least one
  per worker). A record that
  cannot be read or decoded raises ``RecordError`` naming the split and the record, and where
  it lies when ``locate(index)`` says (a shard file and the record's position in it).
  """

  def __init__(
    self,
    source: RecordSource,
    train_transform: Callable[[Any, np.random.Generator], dict],
    eval_transform: Callable[[Any], dict],
    *,
    name: str = "split",
    workers: int = 2,
    prefetch: int = 2,
    locate: Callable[[int], str] | None = None,
  ) -> None:
    if workers < 1:
      raise ValueError(f"workers must be ≥ 1 (threads that decode records); got {workers}.")
    self.source = source
    self.train_transform = train_transform
    self.eval_transform = eval_transform
    self.name = name
    self.workers = workers
    self.prefetch = prefetch
    self.locate = locate

  def __len__(self) -> int:
    return len(self.source)

  def _where(self, index: int) -> str:
    where = f"{self.name}: record {index}"
    if self.locate is not None:
      try:
        where += f" ({self.locate(index)})"
      except Exception:
        pass
    return where

  def _read(self, index: int, transform, *args) -> dict:
    try:
      record = self.source[int(index)]
    except Exception as error:
      raise RecordError(
        f"{self._where(int(index))} cannot be read ({type(error).__name__}: {error})"
      ) from error
    try:
      return transform(record, *args)
    except RecordError:
      raise
    except Exception as error:
      raise RecordError(
        f"{self._where(int(index))} cannot be decoded ({type(error).__name__}: {error})"
      ) from error

  def _threaded(self, dataset, per_batch: int):
    """Batches made in the worker threads, each thread decoding a whole batch (the least
    overhead per example: results/bench_input_cpu.md), at most ``max(prefetch, workers)``
    batches ahead of the consumer, in order."""
    grain = _grain()
    options = grain.ReadOptions(
      num_threads=self.workers, prefetch_buffer_size=max(self.prefetch, self.workers, 1)
    )
    return iter(dataset.batch(per_batch).to_iter_dataset(options))

  def train_batches(
    self, sampler: EpochSampler, start_step: int, stop_step: int
  ) -> Iterator[dict[str, np.ndarray]]:
    grain = _grain()
    per_process = sampler.global_batch_size // sampler.process_count
    first_position = sampler.process_index * per_process

    def example(flat: int) -> dict:
      step, offset = divmod(flat, per_process)
      index = sampler.local_indices(step)[offset]  # the sampler caches the epoch's order
      return self._read(
        index, self.train_transform, transform_rng(sampler.seed, step, first_position + offset)
      )

    flat = grain.MapDataset.range(start_step * per_process, stop_step * per_process)
    return self._threaded(flat.map(example), per_process)

  def materialize(self, train: bool = True, chunk: int = 256) -> ArraySplit:
    """Every record decoded once, in the worker threads, into host arrays: for a split whose
    transform draws no randomness (a training transform that only decodes and resizes, or
    any evaluation transform), reading the arrays gives the same batches as streaming it,
    without decoding every epoch again."""
    grain = _grain()
    if train:
      transform = lambda index: self._read(index, self.train_transform, None)
    else:
      transform = lambda index: self._read(index, self.eval_transform)
    examples = grain.MapDataset.range(len(self)).map(transform)
    arrays: dict[str, np.ndarray] = {}
    start = 0
    batches = self._threaded(examples, chunk)
    try:
      for batch in batches:
        if not arrays:
          arrays = {
            name: np.empty((len(self), *values.shape[1:]), values.dtype)
            for name, values in batch.items()
          }
        size = len(batch["label"])
        for name, values in batch.items():
          arrays[name][start : start + size] = values
        start += size
    finally:
      close_iterator(batches)
    return ArraySplit(arrays)

  def eval_batches(
    self, batch_size: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict[str, np.ndarray]]:
    grain = _grain()
    per_process = batch_size // process_count
    positions = list(_eval_positions(len(self), batch_size, process_index, process_count))
    if not positions:
      return iter(())
    indices = np.concatenate([index for index, _ in positions])
    masks = [mask for _, mask in positions]
    examples = grain.MapDataset.source(indices.tolist()).map(
      lambda index: self._read(index, self.eval_transform)
    )
    return self._masked(self._threaded(examples, per_process), masks)

  @staticmethod
  def _masked(batches, masks):
    try:
      for batch, mask in zip(batches, masks):
        yield {**batch, "mask": mask}
    finally:  # also when evaluation stops early (an error, a signal): stop the threads
      close_iterator(batches)


def _grain():
  try:
    import grain
  except ImportError as error:
    raise ImportError(
      "streamed datasets are read with grain: pip install -e '.[tfds]' (or pip install grain)"
    ) from error
  return grain


def close_iterator(iterator: object) -> None:
  """Stops an input pipeline's threads: ``close()`` where the iterator has one."""
  close = getattr(iterator, "close", None)
  if close is not None:
    close()


class RecordError(RuntimeError):
  """A record of a streamed split cannot be read or decoded (the message names which)."""


_DONE = object()


def prefetch(iterator: Iterator, size: int, transform: Callable | None = None) -> Iterator:
  """``iterator``'s items (through ``transform``), produced ``size`` ahead in a background
  thread: host gathering, decoding and the copy to the devices overlap the running step. An
  error in the thread is raised where its item would have been; ``close()`` stops the
  thread (and closes ``iterator``). ``size`` 0: no thread."""
  if size <= 0:
    return (transform(item) if transform else item for item in iterator)
  return _Prefetched(iterator, size, transform)


class _Prefetched:
  """The iterator ``prefetch`` returns (a class, so that ``close`` works before the first
  item too). The thread holds only the queue, the stop flag and the source, never this
  object, so dropping an unclosed one stops its thread too."""

  def __init__(self, iterator: Iterator, size: int, transform: Callable | None):
    self._iterator = iterator
    self._items: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._finished = False
    self._thread = threading.Thread(
      target=_produce,
      args=(iterator, transform, self._items, self._stop),
      daemon=True,
      name="kd_jax-prefetch",
    )
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._finished:
      raise StopIteration
    item, error = self._items.get()
    if error is not None:
      self.close()
      raise error
    if item is _DONE:
      self.close()
      raise StopIteration
    return item

  def close(self) -> None:
    """Stops the thread after the item it is making, then closes the source iterator."""
    if self._finished:
      return
    self._finished = True
    self._stop.set()
    self._thread.join()
    close_iterator(self._iterator)

  def __del__(self):
    self._stop.set()


def _put(items: queue.Queue, stop: threading.Event, entry) -> bool:
  while not stop.is_set():
    try:
      items.put(entry, timeout=0.1)
      return True
    except queue.Full:
      continue
  return False


def _produce(iterator, transform, items: queue.Queue, stop: threading.Event) -> None:
  try:
    for item in iterator:
      if not _put(items, stop, (transform(item) if transform else item, None)):
        return
    _put(items, stop, (_DONE, None))
  except BaseException as error:  # handed to the consumer, raised in its thread
    _put(items, stop, (_DONE, error))
