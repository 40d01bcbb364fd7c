"""Host transforms of encoded images: decode, then crop or resize to a fixed size (uint8).

These run in the input pipeline's worker threads (kd_jax.data.pipeline.RecordSplit), one
record at a time; everything after the fixed-size uint8 image runs on the device inside the
step. The crops follow torchvision's ImageNet recipe, the one the papers' code uses:

- training, ``"random_resized"``: a box of 8 %–100 % of the image's area and aspect ratio in
  [3/4, 4/3] (log-uniform), ten tries, else the whole image clamped to that ratio and
  centred; resized to ``size × size`` (bilinear, antialiased as PIL does it);
- evaluation, ``"center"``: the shorter side resized to ``size / 0.875`` (256 for 224),
  then the central ``size × size``;
- ``"resize"`` (both): the whole image resized to ``size × size`` (no-op for images already
  that size, e.g. Tiny ImageNet's 64 × 64, whose crop-with-padding runs on the device).

``jpeg_draft=True`` lets the JPEG decoder downscale by 1/2, 1/4 or 1/8 while decoding when
the crop is at least that much larger than ``size`` (PIL's ``Image.draft``): several times
faster on ImageNet's ~400 × 350 images, at slightly different pixels than torchvision's
full-size decode, so it is an option, off by default.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  from PIL import Image as PILImage

# Encoded image bytes (JPEG, PNG, ...) or a decoded uint8 array [H, W(, C)].
EncodedImage = bytes | np.ndarray
# A crop box (left, top, width, height); fractional after a JPEG draft's scaling.
Box = tuple[float, float, float, float]
# A record of a split: a dict with "image" and "label" entries.
Record = Any
# What a transform gives: {"image": uint8 [size, size, 3], "label": int32 scalar}.
Example = dict[str, np.ndarray | np.int32]

TRAIN_CROPS = ("random_resized", "resize")
EVAL_CROPS = ("center", "resize")
# torchvision's ImageNet evaluation: resize to 256, centre-crop 224.
EVAL_CROP_FRACTION = 0.875


def _pil():
  try:
    from PIL import Image
  except ImportError as error:
    raise ImportError("streamed image datasets need Pillow: pip install pillow") from error
  return Image


def open_image(data: EncodedImage) -> PILImage.Image:
  """A PIL image from encoded bytes (JPEG, PNG, ...) or a uint8 array ``[H, W(, C)]``."""
  Image = _pil()
  if isinstance(data, np.ndarray):
    return Image.fromarray(data.squeeze(-1) if data.ndim == 3 and data.shape[-1] == 1 else data)
  return Image.open(io.BytesIO(bytes(data)))


def random_resized_crop_box(
  width: int,
  height: int,
  rng: np.random.Generator,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """``(left, top, crop_width, crop_height)`` of a random-resized crop, torchvision's way."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    crop_width = int(round(math.sqrt(target_area * aspect)))
    crop_height = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = int(rng.integers(0, height - crop_height + 1))
      left = int(rng.integers(0, width - crop_width + 1))
      return left, top, crop_width, crop_height
  # Fallback: the whole image, clamped to the ratio range, centred.
  image_ratio = width / height
  if image_ratio < ratio[0]:
    crop_width, crop_height = width, int(round(width / ratio[0]))
  elif image_ratio > ratio[1]:
    crop_width, crop_height = int(round(height * ratio[1])), height
  else:
    crop_width, crop_height = width, height
  return (width - crop_width) // 2, (height - crop_height) // 2, crop_width, crop_height


def resized_shorter_side(width: int, height: int, shorter: int) -> tuple[int, int]:
  """The size with the shorter side ``shorter`` and the aspect ratio kept (torchvision's
  ``Resize(int)``: the longer side truncated)."""
  if width <= height:
    return shorter, int(shorter * height / width)
  return int(shorter * width / height), shorter


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
  """``(left, top, size, size)`` of the central crop (torchvision's rounding)."""
  if width < size or height < size:
    raise ValueError(f"a {width}×{height} image is smaller than the {size}×{size} crop.")
  return (int(round((width - size) / 2.0)), int(round((height - size) / 2.0)), size, size)


def _draft(image, box, size: int):
  """Lets the JPEG decoder downscale while decoding, keeping the crop ≥ ``size``; returns
  the image and ``box`` in its new coordinates."""
  if getattr(image, "format", None) != "JPEG":
    return image, box
  left, top, width, height = box
  factor = min(width, height) / size  # how much larger than needed the crop is
  if factor < 2:
    return image, box
  full_width, full_height = image.size
  image.draft("RGB", (math.ceil(full_width / factor), math.ceil(full_height / factor)))
  scale_x, scale_y = image.size[0] / full_width, image.size[1] / full_height
  return image, (left * scale_x, top * scale_y, width * scale_x, height * scale_y)


def _to_array(image) -> np.ndarray:
  if image.mode != "RGB":
    image = image.convert("RGB")
  return np.asarray(image, np.uint8)


def crop_and_resize(
  data: EncodedImage, box_of: Callable[[int, int], Box], size: int, jpeg_draft: bool = False
) -> np.ndarray:
  """Decodes ``data``, takes ``box_of(width, height)`` (left, top, width, height) and resizes
  it to ``size × size`` RGB uint8."""
  Image = _pil()
  image = open_image(data)
  box = box_of(*image.size)
  if jpeg_draft:
    image, box = _draft(image, box, size)
  left, top, width, height = box
  if image.mode not in ("RGB", "L"):
    image = image.convert("RGB")
  if (left, top, width, height) == (0, 0, *image.size) and image.size == (size, size):
    return _to_array(image)
  if jpeg_draft:  # fractional box after the draft's scaling: resample it directly
    resized = image.resize(
      (size, size), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height)
    )
  else:  # torchvision's resized_crop: crop first, so no pixel outside the box is filtered in
    resized = image.crop((left, top, left + width, top + height)).resize(
      (size, size), Image.Resampling.BILINEAR
    )
  return _to_array(resized)


def center_crop(data: EncodedImage, size: int) -> np.ndarray:
  """Shorter side to ``size / 0.875``, then the central ``size × size`` (RGB uint8)."""
  Image = _pil()
  image = open_image(data)
  if image.mode not in ("RGB", "L"):
    image = image.convert("RGB")
  shorter = int(size / EVAL_CROP_FRACTION)
  resized = image.resize(resized_shorter_side(*image.size, shorter), Image.Resampling.BILINEAR)
  left, top, _, _ = center_crop_box(*resized.size, size)
  return _to_array(resized.crop((left, top, left + size, top + size)))


def _label(record) -> np.int32:
  return np.int32(record["label"])


def train_transform(
  size: int, crop: str = "random_resized", jpeg_draft: bool = False
) -> Callable[[Record, np.random.Generator], Example]:
  """``(record, rng) -> {"image": uint8 [size, size, 3], "label": int32}`` for training."""
  if crop not in TRAIN_CROPS:
    raise ValueError(f"unknown training crop {crop!r}; valid: {', '.join(TRAIN_CROPS)}.")
  if size < 1:
    raise ValueError(f"image size must be ≥ 1; got {size}.")
  _pil()  # a missing Pillow is named now, not blamed on the first record

  def transform(record: Record, rng: np.random.Generator) -> Example:
    if crop == "random_resized":
      box_of = lambda width, height: random_resized_crop_box(width, height, rng)
    else:
      box_of = lambda width, height: (0, 0, width, height)
    return {
      "image": crop_and_resize(record["image"], box_of, size, jpeg_draft),
      "label": _label(record),
    }

  return transform


def eval_transform(size: int, crop: str = "center") -> Callable[[Record], Example]:
  """``record -> {"image": uint8 [size, size, 3], "label": int32}`` for evaluation."""
  if crop not in EVAL_CROPS:
    raise ValueError(f"unknown evaluation crop {crop!r}; valid: {', '.join(EVAL_CROPS)}.")
  if size < 1:
    raise ValueError(f"image size must be ≥ 1; got {size}.")
  _pil()

  def transform(record: Record) -> Example:
    if crop == "center":
      image = center_crop(record["image"], size)
    else:
      image = crop_and_resize(record["image"], lambda width, height: (0, 0, width, height), size)
    return {"image": image, "label": _label(record)}

  return transform
