"""TFDS image classification datasets, loaded whole into memory as uint8.

TensorFlow Datasets (and TensorFlow, which reading its prepared files needs) are imported
here only, lazily, so the library and its pure functions never import them. Offline
machines must have the dataset prepared in ``data_dir`` beforehand; otherwise the loader
says how to prepare it instead of failing inside a download.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from kd_jax.data.in_memory import ImageDataset, channel_stats

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

# Per-channel statistics used by RepDistiller and the CIFAR literature (pixel / 255).
CIFAR_STATS = {
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


class DatasetNotPreparedError(RuntimeError):
  """The dataset is not prepared in the data directory and could not be downloaded."""


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as error:
    raise ImportError(
      "TFDS datasets need tensorflow-datasets and tensorflow-cpu: pip install -e '.[tfds]'"
    ) from error
  return tfds


def label_feature(info: tfds.core.DatasetInfo) -> tfds.features.ClassLabel:
  """The ``label`` feature of a dataset whose features are a dict with a ClassLabel ``label``
  (TFDS types ``info.features`` as any feature or None)."""
  features = cast("tfds.features.FeaturesDict", info.features)
  return cast("tfds.features.ClassLabel", features["label"])


def num_classes_of(info: tfds.core.DatasetInfo) -> int:
  """The number of classes of the ``label`` feature (``label_feature``)."""
  num_classes = label_feature(info).num_classes
  if num_classes is None:
    raise ValueError(f"{info.name}'s label feature does not say how many classes it has.")
  return num_classes


def _how_to_prepare(name: str, data_dir) -> str:
  where = data_dir or "~/tensorflow_datasets"
  return (
    f"dataset {name!r} is not prepared in {where}. On a machine with internet run "
    f"`python -m kd_jax.experiments.prepare_data --dataset {name} --data_dir {where}` "
    f"(or `tfds build {name} --data_dir {where}`) and copy that directory here, or "
    f"pass --config.data_dir to where it is."
  )


def prepare(
  name: str, data_dir: str | None = None, download: bool = True
) -> tfds.core.DatasetBuilder:
  """Downloads and prepares ``name`` with its TFDS builder; returns the builder."""
  tfds = _import_tfds()
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  if not download:
    raise DatasetNotPreparedError(_how_to_prepare(name, data_dir))
  try:
    builder.download_and_prepare()
  except Exception as error:  # network errors come in many types; name the remedy
    raise DatasetNotPreparedError(
      f"{_how_to_prepare(name, data_dir)} Downloading it failed: {error}"
    ) from error
  return builder


def load_tfds_images(
  name: str, split: str, data_dir: str | None = None, download: bool = False
) -> ImageDataset:
  """Loads a prepared TFDS image dataset with ``image`` and ``label`` features."""
  builder = prepare(name, data_dir, download)
  if split not in builder.info.splits:
    raise ValueError(f"{name} has splits {sorted(builder.info.splits)}; got {split!r}.")
  tfds = _import_tfds()
  # TFDS's logging decorator hides as_dataset's `split` parameter from type checkers.
  dataset = builder.as_dataset(
    split=split,  # pyright: ignore[reportCallIssue]
    batch_size=-1,
  )
  arrays = tfds.as_numpy(dataset)
  images = np.asarray(arrays["image"], np.uint8)
  labels = np.asarray(arrays["label"], np.int32)
  num_classes = num_classes_of(builder.info)
  mean, std = CIFAR_STATS.get(name) or channel_stats(images)
  return ImageDataset(name, images, labels, num_classes, mean, std)
