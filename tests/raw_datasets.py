"""Tiny datasets written in each dataset's raw, published layout, for the builders' tests.

Images of class ``c`` are noisy versions of one colour per class, so a few steps of training
can tell the classes apart; sizes vary as real photographs do.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
from PIL import Image


def class_image(label: int, rng: np.random.Generator, size=(64, 64), mode="RGB",
                image_format="JPEG") -> bytes:
  colour = np.array([(37 * label) % 256, (91 * label + 50) % 256, (53 * label + 120) % 256])
  pixels = np.clip(colour + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
  image = Image.fromarray(pixels)
  if mode != "RGB":
    image = image.convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format=image_format)
  return buffer.getvalue()


def tiny_imagenet_wnids(count: int = 200) -> list[str]:
  return [f"n{index:08d}" for index in range(count)]


def write_tiny_imagenet(manual_dir: str, train_per_class: int = 2, val_per_class: int = 1,
                        as_zip: bool = False, seed: int = 0) -> str:
  """tiny-imagenet-200/ (or .zip) in ``manual_dir``: wnids.txt (unsorted, as published),
  train/<wnid>/images/<wnid>_<i>.JPEG (+ <wnid>_boxes.txt), val/images/val_<i>.JPEG with
  val/val_annotations.txt, test/images/; some images grayscale, as in the real set."""
  rng = np.random.default_rng(seed)
  wnids = tiny_imagenet_wnids()
  files = {"wnids.txt": "\n".join(reversed(wnids)).encode() + b"\n",
           "words.txt": b"".join(f"{w}\tthing {w}\n".encode() for w in wnids)}
  for label, wnid in enumerate(sorted(wnids)):
    files[f"train/{wnid}/{wnid}_boxes.txt"] = b""
    for index in range(train_per_class):
      mode = "L" if (label + index) % 17 == 0 else "RGB"
      files[f"train/{wnid}/images/{wnid}_{index}.JPEG"] = class_image(label, rng, mode=mode)
  annotations = []
  for number in range(val_per_class * len(wnids)):
    label = number % len(wnids)
    name = f"val_{number}.JPEG"
    files[f"val/images/{name}"] = class_image(label, rng)
    annotations.append(f"{name}\t{sorted(wnids)[label]}\t0\t0\t63\t63")
  files["val/val_annotations.txt"] = ("\n".join(annotations) + "\n").encode()
  files["test/images/test_0.JPEG"] = class_image(0, rng)
  os.makedirs(manual_dir, exist_ok=True)
  if as_zip:
    path = os.path.join(manual_dir, "tiny-imagenet-200.zip")
    with zipfile.ZipFile(path, "w") as archive:
      for name, data in files.items():
        archive.writestr(f"tiny-imagenet-200/{name}", data)
    return path
  root = os.path.join(manual_dir, "tiny-imagenet-200")
  for name, data in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    with open(os.path.join(root, name), "wb") as f:
      f.write(data)
  return root


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_imagenet(manual_dir: str, wnids: list[str], train_per_class: int = 2,
                   num_val: int = 8, seed: int = 0) -> None:
  """ILSVRC2012_img_train.tar (one <wnid>.tar per class of JPEGs named <wnid>_<i>.JPEG) and
  ILSVRC2012_img_val.tar (ILSVRC2012_val_<8 digits>.JPEG, whose labels TFDS takes from its
  validation_labels.txt in name order), at ImageNet-like sizes."""
  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as train:
    for label, wnid in enumerate(wnids):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as class_tar:
        for index in range(train_per_class):
          size = (int(rng.integers(180, 320)), int(rng.integers(160, 300)))
          _add(class_tar, f"{wnid}_{index}.JPEG", class_image(label, rng, size))
      _add(train, f"{wnid}.tar", inner.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
    for number in range(1, num_val + 1):
      size = (int(rng.integers(180, 320)), int(rng.integers(160, 300)))
      _add(val, f"ILSVRC2012_val_{number:08d}.JPEG", class_image(number, rng, size))


def write_image_folder(manual_dir: str, classes=("cat", "dog", "eel"), train_per_class: int = 4,
                       val_per_class: int = 0, seed: int = 0) -> str:
  """<class>/<image> folders (under train/ and val/ when ``val_per_class``), mixing JPEG,
  PNG, grayscale and sizes; a non-image file in each folder is ignored."""
  rng = np.random.default_rng(seed)
  train_root = os.path.join(manual_dir, "train") if val_per_class else manual_dir
  for split_root, count in ((train_root, train_per_class),
                            (os.path.join(manual_dir, "val"), val_per_class)):
    for label, name in enumerate(classes):
      if not count:
        continue
      folder = os.path.join(split_root, name)
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image")
      for index in range(count):
        image_format = "PNG" if index % 3 == 1 else "JPEG"
        mode = "L" if index % 4 == 3 else "RGB"
        size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
        extension = ".png" if image_format == "PNG" else ".jpg"
        with open(os.path.join(folder, f"{name}_{index}{extension}"), "wb") as f:
          f.write(class_image(label, rng, size, mode, image_format))
  return manual_dir
