"""Streamed image datasets: prepared ArrayRecord files read record by record, no TensorFlow.

``imagenet2012`` (TFDS's builder over the ILSVRC2012 tarballs), ``tiny_imagenet`` and
``image_folder`` (kd_jax.data.builders) are prepared once, offline, by

  python -m kd_jax.experiments.prepare_data --dataset=NAME --manual_dir=RAW --data_dir=OUT

and read here with ``tfds.builder_from_directory(...).as_data_source`` (ArrayRecord random
access; TensorFlow is never imported) with the image left encoded: each process decodes
and crops only its own examples, in the pipeline's worker threads
(kd_jax.data.pipeline.RecordSplit, kd_jax.data.images).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from kd_jax.data import images as images_lib
from kd_jax.data.pipeline import RecordSplit
from kd_jax.data.tfds_loaders import DatasetNotPreparedError, num_classes_of

if TYPE_CHECKING:
  from kd_jax.data import ImageData

# The per-channel statistics of pixel/255 that torchvision's ImageNet models were trained
# with; ImageNet's own, so a converted torchvision teacher sees the inputs it expects.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclasses.dataclass(frozen=True)
class StreamedSpec:
  """How a streamed dataset is read: its TFDS name, evaluation split, default image size,
  host crops (kd_jax.data.images) and where its channel statistics come from
  (``stats`` None: the training split's, recorded in the metadata when it was prepared)."""

  tfds_name: str
  eval_split: str
  image_size: int
  train_crop: str
  eval_crop: str
  stats: tuple | None = None
  manual_files: str = ""


STREAMED_DATASETS = {
  "imagenet2012": StreamedSpec(
    "imagenet2012",
    "validation",
    224,
    "random_resized",
    "center",
    IMAGENET_STATS,
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar",
  ),
  # 64×64 already: the host only decodes; the padding crop and flip run on the device.
  "tiny_imagenet": StreamedSpec(
    "tiny_imagenet",
    "validation",
    64,
    "resize",
    "resize",
    None,
    "tiny-imagenet-200.zip or tiny-imagenet-200/",
  ),
  "image_folder": StreamedSpec(
    "image_folder",
    "validation",
    224,
    "random_resized",
    "center",
    None,
    "<class>/<image> folders (optionally train/, val/)",
  ),
}


def prepare_command(name: str, data_dir: str | None) -> str:
  """The command that prepares dataset ``name`` into ``data_dir``."""
  return (
    f"python -m kd_jax.experiments.prepare_data --dataset={name} "
    f"--manual_dir=RAW --data_dir={data_dir or 'OUT'}"
  )


def prepared_directory(name: str, data_dir: str | None) -> str:
  """The newest prepared version of ``name`` under ``data_dir`` (``<data_dir>/<tfds
  name>/<version>``, as TFDS lays it out)."""
  spec = STREAMED_DATASETS[name]
  if not data_dir:
    raise DatasetNotPreparedError(
      f"dataset {name!r} is streamed from prepared files: set --config.data_dir to the "
      f"directory `{prepare_command(name, None)}` wrote ({spec.manual_files} in RAW)."
    )
  root = os.path.join(os.path.expanduser(data_dir), spec.tfds_name)
  versions = []
  if os.path.isdir(root):
    for version in os.listdir(root):
      if os.path.isfile(os.path.join(root, version, "dataset_info.json")):
        try:
          versions.append((tuple(int(part) for part in version.split(".")), version))
        except ValueError:
          continue
  if not versions:
    raise DatasetNotPreparedError(
      f"dataset {name!r} is not prepared in {data_dir}: run "
      f"`{prepare_command(name, data_dir)}` with {spec.manual_files} in RAW."
    )
  return os.path.join(root, max(versions)[1])


def _info(directory: str) -> dict:
  with open(os.path.join(directory, "dataset_info.json")) as f:
    return json.load(f)


def _metadata(directory: str) -> dict:
  path = os.path.join(directory, "metadata.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def shard_locator(directory: str, info: dict, split: str) -> Callable[[int], str]:
  """``index -> "shard FILE, record j"`` for a TFDS split, from the shard lengths its
  dataset_info.json records (the files hold the split's records in order)."""
  entry = next(e for e in info["splits"] if e["name"] == split)
  lengths = [int(length) for length in entry.get("shardLengths", [])]
  ends = np.cumsum(lengths)
  template = entry.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")

  def locate(index: int) -> str:
    shard = int(np.searchsorted(ends, index, side="right"))
    first = int(ends[shard - 1]) if shard else 0
    name = (
      template.replace("{DATASET}", info["name"])
      .replace("{SPLIT}", split)
      .replace("{FILEFORMAT}", "array_record")
      .replace("{SHARD_X_OF_Y}", f"{shard:05d}-of-{len(lengths):05d}")
    )
    return f"shard {os.path.join(directory, name)}, record {index - first}"

  return locate


def dataset_fingerprint(directory: str, info: dict) -> str:
  """What identifies a prepared dataset without reading it: its name, version, the records
  and bytes of each shard of each split, and its recorded statistics (estimated from the
  images). A run resumed on other data (another folder at the same data_dir, a newer
  version) is refused by it (kd_jax.train.loop.check_resume_identity)."""
  described = {
    "name": info.get("name"),
    "version": info.get("version"),
    "splits": sorted(
      (entry["name"], entry.get("shardLengths"), entry.get("numBytes"))
      for entry in info.get("splits", [])
    ),
    "metadata": _metadata(directory),
  }
  return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


CACHE_MODES = ("auto", "memory", "stream")


def load_streamed(
  name: str,
  split: str,
  data_dir: str | None,
  *,
  image_size: int = 0,
  workers: int = 2,
  prefetch: int = 2,
  jpeg_draft: bool = False,
  cache: str = "auto",
  cache_limit_gb: float = 4.0,
) -> ImageData:
  """Split ``split`` ("train" or "test", the dataset's evaluation split) of the prepared
  dataset ``name``, read record by record; images come out ``image_size`` square (0: the
  dataset's default) as uint8. Returns a kd_jax.data.ImageData whose split is a RecordSplit,
  or the ArraySplit it was decoded into (``cache``).

  ``cache``: "stream" decodes every batch as it is read; "memory" decodes the split once
  into host memory (kd_jax.data.pipeline.RecordSplit.materialize), which needs a transform
  without randomness (an evaluation split, or a training crop of "resize"); "auto" takes
  memory when that holds and the decoded split is under ``cache_limit_gb`` (Tiny ImageNet:
  1.2 GB for training; results/bench_input_cpu.md compares the two), else streams. Both
  give the same batches.
  """
  if cache not in CACHE_MODES:
    raise ValueError(f"unknown input cache {cache!r}; valid: {', '.join(CACHE_MODES)}.")
  import tensorflow_datasets as tfds

  spec = STREAMED_DATASETS[name]
  directory = prepared_directory(name, data_dir)
  info = _info(directory)
  if info.get("fileFormat", "tfrecord") != "array_record":
    raise DatasetNotPreparedError(
      f"{directory} was prepared as {info.get('fileFormat', 'tfrecord')} files; kd_jax reads "
      f"ArrayRecord (random access): run `{prepare_command(name, data_dir)}`, which writes "
      "them."
    )
  tfds_split = "train" if split == "train" else spec.eval_split
  splits = [entry["name"] for entry in info.get("splits", [])]
  if tfds_split not in splits:
    raise DatasetNotPreparedError(
      f"{directory} has splits {splits}, not {tfds_split!r}: "
      f"prepare it again with its {spec.manual_files}."
    )
  builder = tfds.builder_from_directory(directory)
  # TFDS's logging decorator hides as_data_source's `split` parameter from type checkers.
  source = builder.as_data_source(
    split=tfds_split,  # pyright: ignore[reportCallIssue]
    decoders={"image": tfds.decode.SkipDecoding()},
  )
  size = image_size or spec.image_size
  stats = spec.stats
  if stats is None:
    metadata = _metadata(directory)
    if "mean" not in metadata or "std" not in metadata:
      raise DatasetNotPreparedError(
        f"{directory} has no channel statistics in metadata.json; "
        f"prepare it again: `{prepare_command(name, data_dir)}`."
      )
    stats = (tuple(metadata["mean"]), tuple(metadata["std"]))
  record_split = RecordSplit(
    source,
    images_lib.train_transform(size, spec.train_crop, jpeg_draft),
    images_lib.eval_transform(size, spec.eval_crop),
    name=f"{name} {tfds_split}",
    workers=workers,
    prefetch=prefetch,
    locate=shard_locator(directory, info, tfds_split),
  )
  num_classes = num_classes_of(builder.info)
  deterministic = split != "train" or spec.train_crop == "resize"
  decoded_gb = len(record_split) * size * size * 3 / 2**30
  if cache == "memory" and not deterministic:
    raise ValueError(
      f"input.cache='memory' would freeze one random crop per image: {name}'s "
      f"training crop is {spec.train_crop!r}. Use 'stream' (or 'auto')."
    )
  chosen = record_split
  if cache == "memory" or (cache == "auto" and deterministic and decoded_gb <= cache_limit_gb):
    chosen = record_split.materialize(train=split == "train")
  from kd_jax.data import ImageData

  return ImageData(
    name,
    chosen,
    num_classes,
    tuple(stats[0]),
    tuple(stats[1]),
    (size, size, 3),
    streamed=True,
    fingerprint=dataset_fingerprint(directory, info),
  )
