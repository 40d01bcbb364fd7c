"""Datasets by name: ``load_dataset(name, split)`` and ``DATASET_NAMES``."""

from __future__ import annotations

from kd_jax.data.in_memory import EpochSampler, ImageDataset, eval_batches

EMBEDDED_DATASETS = ("digits",)
TFDS_DATASETS = ("cifar10", "cifar100")
DATASET_NAMES = EMBEDDED_DATASETS + TFDS_DATASETS


def load_dataset(name: str, split: str, data_dir: str | None = None,
                 download: bool = False) -> ImageDataset:
  """Loads split ``split`` of dataset ``name`` into memory.

  Embedded datasets need nothing; TFDS datasets must be prepared in ``data_dir`` (or be
  downloadable, with ``download=True``).
  """
  if name in EMBEDDED_DATASETS:
    from kd_jax.data import embedded
    return embedded.load_digits(split)
  if name in TFDS_DATASETS:
    from kd_jax.data import tfds_loaders
    return tfds_loaders.load_tfds_images(name, split, data_dir, download)
  raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}.")


__all__ = ["DATASET_NAMES", "EpochSampler", "ImageDataset", "eval_batches", "load_dataset"]
