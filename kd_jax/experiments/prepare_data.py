"""Prepares a dataset once, so that runs read it with --config.dataset=NAME --config.data_dir=OUT.

  # Streamed datasets, from files you downloaded (offline; needs the tfds extra):
  python -m kd_jax.experiments.prepare_data --dataset=imagenet2012 \\
      --manual_dir=RAW --data_dir=OUT     # RAW: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar
  python -m kd_jax.experiments.prepare_data --dataset=tiny_imagenet \\
      --manual_dir=RAW --data_dir=OUT     # RAW: tiny-imagenet-200.zip or tiny-imagenet-200/
  python -m kd_jax.experiments.prepare_data --dataset=image_folder \\
      --manual_dir=RAW --data_dir=OUT     # RAW: <class>/<image>, optionally train/ and val/
  # In-memory TFDS datasets, downloaded (a machine with internet):
  python -m kd_jax.experiments.prepare_data --dataset=cifar100 --data_dir=OUT

Streamed datasets are written as ArrayRecord files (random access, read without TensorFlow)
holding each image's file bytes as they are; a folder without val/ holds out
--holdout_fraction of each class for evaluation. TFDS writes into a temporary directory and
renames it when complete, so an interrupted preparation leaves no half dataset behind;
preparing an already prepared dataset does nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from absl import flags

from kd_jax.data import STREAMED_DATASETS, TFDS_DATASETS

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

_DATASET = flags.DEFINE_enum(
  "dataset",
  None,
  list(TFDS_DATASETS + STREAMED_DATASETS),
  "Dataset to prepare.",
  required=True,
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "Where the prepared dataset is written (pass the same as --config.data_dir)."
)
_MANUAL_DIR = flags.DEFINE_string(
  "manual_dir", None, "The downloaded raw files (streamed datasets)."
)
_HOLDOUT = flags.DEFINE_float(
  "holdout_fraction",
  0.1,
  "image_folder without val/: the fraction of each class held out for evaluation.",
)


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as error:
    raise ImportError(
      "preparing datasets needs tensorflow-datasets and tensorflow-cpu: pip install -e '.[tfds]'"
    ) from error
  return tfds


def streamed_builder(
  name: str, data_dir: str, manual_dir: str, holdout_fraction: float = 0.1
) -> tfds.core.DatasetBuilder:
  """The TFDS builder that writes ``name`` as ArrayRecord into ``data_dir``."""
  tfds = _import_tfds()
  if name == "imagenet2012":
    missing = [
      file
      for file in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
      if not os.path.isfile(os.path.join(manual_dir, file))
    ]
    if missing:
      raise FileNotFoundError(
        f"{manual_dir} has no {' and no '.join(missing)}: download them "
        "from https://image-net.org/download-images (registration "
        "needed) into --manual_dir."
      )
    return tfds.builder("imagenet2012", data_dir=data_dir, file_format="array_record")
  from kd_jax.data import builders

  if name == "tiny_imagenet":
    builders.tiny_imagenet_files(manual_dir)  # names a missing file before anything starts
    return builders.TinyImagenet(data_dir=data_dir, file_format="array_record")
  classes, _ = builders.image_folder_layout(manual_dir, holdout_fraction)
  return builders.ImageFolder(
    class_names=classes,
    holdout_fraction=holdout_fraction,
    data_dir=data_dir,
    file_format="array_record",
  )


def prepare(
  name: str, data_dir: str | None, manual_dir: str | None = None, holdout_fraction: float = 0.1
) -> str:
  """Prepares ``name`` and returns the directory it is in."""
  if name in TFDS_DATASETS:
    from kd_jax.data import tfds_loaders

    return os.fspath(tfds_loaders.prepare(name, data_dir, download=True).data_dir)
  if not data_dir:
    raise ValueError(
      f"--data_dir is needed: where {name} is written (then pass "
      "--config.data_dir with the same path)."
    )
  if not manual_dir:
    raise ValueError(f"--manual_dir is needed: the folder with {name}'s downloaded files.")
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"--manual_dir {manual_dir} does not exist.")
  tfds = _import_tfds()
  builder = streamed_builder(name, data_dir, manual_dir, holdout_fraction)
  if builder.is_prepared():
    check_prepared_from(name, os.fspath(builder.data_dir), manual_dir, holdout_fraction)
  else:
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
  return os.fspath(builder.data_dir)


def check_prepared_from(
  name: str, directory: str, manual_dir: str, holdout_fraction: float
) -> None:
  """Preparing an already prepared dataset does nothing, unless ``manual_dir`` now holds
  other files than it was prepared from (other classes, other image counts): that is
  refused, since a run resumed on the new files would mix two datasets."""
  if name == "imagenet2012":  # its layout is fixed; listing the 150 GB tarball is not cheap
    return
  from kd_jax.data import builders

  if name == "tiny_imagenet":
    _, _, classes, splits = builders.tiny_imagenet_layout(manual_dir)
  else:
    classes, splits = builders.image_folder_layout(manual_dir, holdout_fraction)
  with open(os.path.join(directory, "dataset_info.json")) as f:
    info = json.load(f)
  stored = {
    entry["name"]: sum(int(n) for n in entry.get("shardLengths", []))
    for entry in info.get("splits", [])
  }
  found = {split: len(examples) for split, examples in splits.items()}
  labels_file = os.path.join(directory, "label.labels.txt")
  stored_classes = (
    open(labels_file).read().split() if os.path.isfile(labels_file) else list(classes)
  )
  if stored != found or stored_classes != list(classes):
    raise ValueError(
      f"{directory} holds {name} prepared from other files (splits {stored}, "
      f"{len(stored_classes)} classes) than {manual_dir} has now (splits {found}, "
      f"{len(classes)} classes); runs resuming on it would mix two datasets. Use another "
      "--data_dir, or delete that directory to prepare it again."
    )


def main(argv: Sequence[str]) -> None:
  del argv
  where = prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value, _HOLDOUT.value)
  print(
    f"prepared {_DATASET.value} in {where}; train with --config.dataset={_DATASET.value} "
    f"--config.data_dir={_DATA_DIR.value or '(TFDS default)'}"
  )


if __name__ == "__main__":
  from kd_jax.experiments import launch

  launch.run_app(main)
