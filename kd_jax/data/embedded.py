"""Real data sets that ship inside installed packages: usable offline, no download.

``digits``: scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels, UCI). The pixel
values 0..16 are mapped to uint8 by ``round(v · 255 / 16)``. The split is fixed: a
stratified 80/20 split with seed 0 (1,438 train / 359 test), the same on every machine.
"""

from __future__ import annotations

import numpy as np

from kd_jax.data.in_memory import ImageDataset, channel_stats

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


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

  if split not in ("train", "test"):
    raise ValueError(f"digits has splits 'train' and 'test'; got {split!r}.")
  raw = sklearn_digits()
  images = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = raw.target.astype(np.int32)
  train_index, test_index = _stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
  mean, std = channel_stats(images[train_index])
  index = train_index if split == "train" else test_index
  return ImageDataset("digits", images[index], labels[index], 10, mean, std)
