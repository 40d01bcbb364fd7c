"""TFDS builders of ours: Tiny ImageNet and a folder of class sub-folders of images.

Both store each image's file bytes as they are (no re-encoding) with its label, in
ArrayRecord files that ``kd_jax.data.streamed`` reads without TensorFlow. Preparing needs
``tensorflow-datasets`` and ``tensorflow-cpu`` (``pip install -e '.[tfds]'``); the one command
is ``python -m kd_jax.experiments.prepare_data --dataset=NAME --manual_dir=RAW --data_dir=OUT``.

Each builder records the per-channel mean and std of pixel/255 of its training split in
the dataset's metadata, estimated from ``STATS_SAMPLE`` training images drawn with a fixed
seed (the whole split when smaller): a user's folder has no published statistics, and
the estimate from 10,000 images is within about 1e-3 of the full split's.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from kd_jax.data.tfds_loaders import label_feature

# torchvision's ImageFolder extensions (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
STATS_SAMPLE = 10_000
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_ZIP = "tiny-imagenet-200.zip"


class ManualDataError(ValueError):
  """The manual directory is missing a file or holds a layout we cannot read (named)."""


def channel_stats_of(
  read_image: Callable[[int], bytes],
  count: int,
  where: Callable[[int], str],
  sample: int = STATS_SAMPLE,
  seed: int = 0,
) -> tuple[list[float], list[float]]:
  """Mean and std per channel of pixel/255 over ``sample`` of ``count`` images
  (``read_image(i)`` gives image ``i``'s bytes, ``where(i)`` names it), decoded as RGB."""
  from kd_jax.data import images as images_lib

  chosen = np.sort(np.random.default_rng(seed).permutation(count)[:sample])
  sums, squares, pixels = np.zeros(3), np.zeros(3), 0
  for index in chosen:
    data = read_image(int(index))
    check_decodable(data, where(int(index)))
    image = images_lib.open_image(data)
    values = np.asarray(image.convert("RGB"), np.float64).reshape(-1, 3) / 255.0
    sums += values.sum(0)
    squares += (values**2).sum(0)
    pixels += len(values)
  mean = sums / max(pixels, 1)
  std = np.sqrt(np.maximum(squares / max(pixels, 1) - mean**2, 0.0))
  return [float(v) for v in mean], [float(v) for v in std]


def _features(num_classes: int | None = None, names=None, shape=(None, None, 3)):
  label = (
    tfds.features.ClassLabel(names=list(names))
    if names is not None
    else tfds.features.ClassLabel(num_classes=num_classes)
  )
  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Image(shape=shape),
      "label": label,
      "file_name": tfds.features.Text(),
    }
  )


class _Files:
  """Image files from a folder or a zip archive, read by relative path."""

  def __init__(self, root: str):
    self.root = root
    self.zip = zipfile.ZipFile(root) if zipfile.is_zipfile(root) else None
    if self.zip is not None:
      self.names = set(self.zip.namelist())

  def exists(self, path: str) -> bool:
    if self.zip is not None:
      return path in self.names or any(
        name.startswith(path.rstrip("/") + "/") for name in self.names
      )
    return os.path.exists(os.path.join(self.root, path))

  def read(self, path: str) -> bytes:
    if self.zip is not None:
      return self.zip.read(path)
    with open(os.path.join(self.root, path), "rb") as f:
      return f.read()

  def read_text(self, path: str) -> str:
    return self.read(path).decode("utf-8")

  def list(self, folder: str) -> list[str]:
    """Image files directly inside ``folder`` (sorted relative paths)."""
    folder = folder.rstrip("/") + "/"
    if self.zip is not None:
      return sorted(
        name
        for name in self.names
        if name.startswith(folder) and "/" not in name[len(folder) :] and _is_image(name)
      )
    full = os.path.join(self.root, folder)
    return sorted(
      folder + name
      for name in os.listdir(full)
      if _is_image(name) and os.path.isfile(os.path.join(full, name))
    )

  def where(self) -> str:
    return self.root


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def tiny_imagenet_files(manual_dir: str) -> tuple[_Files, str]:
  """The Tiny ImageNet files in ``manual_dir`` (the unzipped folder or the zip) and the
  path prefix inside them; a missing file is named."""
  folder = os.path.join(manual_dir, TINY_IMAGENET_FOLDER)
  archive = os.path.join(manual_dir, TINY_IMAGENET_ZIP)
  if os.path.isdir(folder):
    files, prefix = _Files(folder), ""
  elif os.path.isfile(archive):
    if not zipfile.is_zipfile(archive):
      raise ManualDataError(
        f"{archive} is not a zip archive (a partial download?); fetch "
        "it again from http://cs231n.stanford.edu/tiny-imagenet-200.zip."
      )
    files, prefix = _Files(archive), TINY_IMAGENET_FOLDER + "/"
  else:
    raise ManualDataError(
      f"{manual_dir} holds neither {TINY_IMAGENET_FOLDER}/ nor {TINY_IMAGENET_ZIP}; "
      "download http://cs231n.stanford.edu/tiny-imagenet-200.zip into it (unzipped or not)."
    )
  for needed in ("wnids.txt", "train", "val/val_annotations.txt", "val/images"):
    if not files.exists(prefix + needed):
      raise ManualDataError(
        f"{files.where()} has no {prefix + needed}: the "
        f"{TINY_IMAGENET_FOLDER} layout needs wnids.txt, "
        "train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
        "val/val_annotations.txt."
      )
  return files, prefix


def tiny_imagenet_layout(
  manual_dir: str,
) -> tuple[_Files, str, list[str], dict[str, list[tuple[str, int]]]]:
  """``(files, prefix, wnids, {"train": [(path, label)], "validation": [...]})`` of the Tiny
  ImageNet in ``manual_dir``: labels are the sorted wnids' positions; a missing or
  inconsistent file is named."""
  files, prefix = tiny_imagenet_files(manual_dir)
  wnids = sorted(
    line.strip() for line in files.read_text(prefix + "wnids.txt").splitlines() if line.strip()
  )
  if len(wnids) != 200:
    raise ManualDataError(
      f"{files.where()}: {prefix}wnids.txt lists {len(wnids)} classes; Tiny ImageNet has 200."
    )
  label_of = {wnid: index for index, wnid in enumerate(wnids)}
  train = []
  for wnid in wnids:
    folder = f"{prefix}train/{wnid}/images"
    if not files.exists(folder):
      raise ManualDataError(f"{files.where()} has no {folder}/ (class {wnid} of wnids.txt).")
    train += [(path, label_of[wnid]) for path in files.list(folder)]
  validation = []
  for line in files.read_text(prefix + "val/val_annotations.txt").splitlines():
    fields = line.split("\t")
    if len(fields) < 2:
      continue
    if fields[1] not in label_of:
      raise ManualDataError(
        f"{files.where()}: val/val_annotations.txt names class "
        f"{fields[1]!r}, which is not in wnids.txt."
      )
    path = f"{prefix}val/images/{fields[0]}"
    if not files.exists(path):
      raise ManualDataError(f"{files.where()} has no {path} (listed in val/val_annotations.txt).")
    validation.append((path, label_of[fields[1]]))
  return files, prefix, wnids, {"train": train, "validation": validation}


def _metadata(info: tfds.core.DatasetInfo) -> tfds.core.Metadata:
  """The metadata dict that the builders' ``_info`` gives (TFDS types it as optional)."""
  metadata = info.metadata
  if metadata is None:
    raise ValueError(f"{info.name} has no metadata dict; its _info must give one.")
  return metadata


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet (tiny-imagenet-200): 200 classes of 64 × 64 images, 500 training and 50
  validation images per class. Labels are the wnids in sorted order (the order
  torchvision's ImageFolder gives, so PyTorch-trained teachers' outputs line up)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    "1.0.0": "kd_jax's builder: file bytes as published, sorted wnids."
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Place {TINY_IMAGENET_ZIP} (http://cs231n.stanford.edu/tiny-imagenet-200.zip), or "
    f"the {TINY_IMAGENET_FOLDER}/ folder it unzips to, in manual_dir."
  )

  def _info(self):
    return self.dataset_info_from_configs(
      features=_features(num_classes=200, shape=(64, 64, 3)),
      supervised_keys=("image", "label"),
      homepage="http://cs231n.stanford.edu/",
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    files, prefix, wnids, splits = tiny_imagenet_layout(os.fspath(dl_manager.manual_dir))
    train, validation = splits["train"], splits["validation"]
    label_feature(self.info).names = wnids
    metadata = _metadata(self.info)
    metadata["mean"], metadata["std"] = channel_stats_of(
      lambda index: files.read(train[index][0]),
      len(train),
      lambda index: f"{files.where()}: {train[index][0]}",
    )
    return {
      "train": self._generate_examples(files, prefix, train),
      "validation": self._generate_examples(files, prefix, validation),
    }

  def _generate_examples(self, files, prefix: str, examples):
    for path, label in examples:
      data = files.read(path)
      check_decodable(data, f"{files.where()}: {path}")
      # The key (which fixes the record order) is the path inside the dataset, the same from
      # the zip or the folder, wherever it lies: every copy has the same order.
      yield (
        path[len(prefix) :],
        {"image": data, "label": label, "file_name": os.path.basename(path)},
      )


def image_folder_layout(
  manual_dir: str, holdout_fraction: float
) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
  """``(class names, {"train": [(path, label)], "validation": [...]})`` of an image folder.

  Layouts: ``RAW/train/<class>/*`` with ``RAW/val/<class>/*`` (or ``validation/``); or class
  folders alone (``RAW/<class>/*`` or ``RAW/train/<class>/*``), from which
  ``holdout_fraction`` of each class's images (a fixed seeded choice, at least one) are held
  out for validation. Classes are the sorted sub-folder names, as torchvision's ImageFolder.
  """
  if not os.path.isdir(manual_dir):
    raise ManualDataError(
      f"{manual_dir} is not a directory; point --manual_dir at the folder of class sub-folders."
    )
  train_root = os.path.join(manual_dir, "train")
  if not os.path.isdir(train_root):
    train_root = manual_dir
  val_root = next(
    (
      os.path.join(manual_dir, name)
      for name in ("val", "validation")
      if os.path.isdir(os.path.join(manual_dir, name))
    ),
    None,
  )
  classes = sorted(
    name
    for name in os.listdir(train_root)
    if os.path.isdir(os.path.join(train_root, name)) and name not in ("val", "validation")
  )
  if not classes:
    raise ManualDataError(
      f"{train_root} has no class sub-folders; the layout is "
      "<class>/<image> (optionally under train/ and val/)."
    )

  def listing(root):
    found = []
    for label, name in enumerate(classes):
      folder = os.path.join(root, name)
      paths = (
        sorted(
          os.path.join(folder, f)
          for f in os.listdir(folder)
          if _is_image(f) and os.path.isfile(os.path.join(folder, f))
        )
        if os.path.isdir(folder)
        else []
      )
      found.append([(path, label) for path in paths])
    return found

  train = listing(train_root)
  empty = [classes[label] for label, paths in enumerate(train) if not paths]
  if empty:
    raise ManualDataError(
      f"{train_root}: class folder(s) {', '.join(empty[:5])} hold no "
      f"images ({', '.join(IMAGE_EXTENSIONS)})."
    )
  if val_root is not None:
    extra = sorted(
      set(name for name in os.listdir(val_root) if os.path.isdir(os.path.join(val_root, name)))
      - set(classes)
    )
    if extra:
      raise ManualDataError(
        f"{val_root} has class folder(s) {', '.join(extra[:5])} that {train_root} has not."
      )
    validation = [example for paths in listing(val_root) for example in paths]
    return classes, {"train": [e for paths in train for e in paths], "validation": validation}
  if not 0 < holdout_fraction < 1:
    raise ManualDataError(
      f"{manual_dir} has no val/ folder, so a fraction of each class is "
      f"held out; holdout_fraction must be in (0, 1), got "
      f"{holdout_fraction}."
    )
  rng = np.random.default_rng(0)
  kept, held = [], []
  for paths in train:
    if len(paths) < 2:
      raise ManualDataError(
        f"class {classes[paths[0][1]]!r} has one image; holding out a "
        "validation image needs at least two (or add a val/ folder)."
      )
    order = rng.permutation(len(paths))
    count = min(max(1, int(round(holdout_fraction * len(paths)))), len(paths) - 1)
    held += [paths[i] for i in sorted(order[:count])]
    kept += [paths[i] for i in sorted(order[count:])]
  return classes, {"train": kept, "validation": held}


class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """A user's images: class sub-folders (torchvision's ImageFolder layout), optionally with
  a ``val/`` split; see ``image_folder_layout``. Built with ``class_names`` from the folder
  (prepare_data does this); read back from its files with the names it recorded."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    "1.0.0": "kd_jax's builder: file bytes as they are, sorted class folders."
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir holds <class>/<image> (optionally train/, val/)."

  def __init__(self, *, class_names=None, holdout_fraction: float = 0.1, **kwargs):
    self._class_names = list(class_names) if class_names is not None else None
    self._holdout_fraction = holdout_fraction
    super().__init__(**kwargs)

  def _info(self):
    names = self._class_names if self._class_names is not None else ["unknown"]
    return self.dataset_info_from_configs(
      features=_features(names=names),
      supervised_keys=("image", "label"),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    classes, splits = image_folder_layout(os.fspath(dl_manager.manual_dir), self._holdout_fraction)
    if classes != self._class_names:
      raise ManualDataError(
        "the builder's class names differ from the folder's; build it "
        "with class_names=image_folder_layout(...)[0]."
      )
    train = splits["train"]

    def read(index):
      with open(train[index][0], "rb") as f:
        return f.read()

    metadata = _metadata(self.info)
    metadata["mean"], metadata["std"] = channel_stats_of(
      read, len(train), lambda index: train[index][0]
    )
    metadata["holdout_fraction"] = (
      self._holdout_fraction if _held_out(dl_manager.manual_dir) else 0.0
    )
    root = os.fspath(dl_manager.manual_dir)
    return {name: self._generate_examples(root, examples) for name, examples in splits.items()}

  def _generate_examples(self, root: str, examples):
    for path, label in examples:
      with open(path, "rb") as f:
        data = f.read()
      check_decodable(data, path)
      # Keyed by the path inside the folder (the key fixes the record order): every copy of
      # the folder, wherever it lies, gives the same order.
      yield (
        os.path.relpath(path, root),
        {"image": data, "label": label, "file_name": os.path.basename(path)},
      )


def _held_out(manual_dir) -> bool:
  return not any(os.path.isdir(os.path.join(manual_dir, name)) for name in ("val", "validation"))


def check_decodable(data: bytes, where: str) -> None:
  """Raises ManualDataError naming ``where`` when ``data`` is not an image PIL can decode."""
  from PIL import Image

  try:
    with Image.open(io.BytesIO(data)) as image:
      image.verify()
  except Exception as error:
    raise ManualDataError(f"{where} is not a readable image ({error}).") from error
