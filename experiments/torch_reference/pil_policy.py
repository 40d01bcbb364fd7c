"""PBA's augmentation the way its official data pipeline runs it: on the host, image by
image, with PIL, before the batch reaches the framework.

This is the reference for kd_jax.policies (which does the same on device inside the compiled
step): ``pil_operation`` is checked against it operation by operation in
tests/test_policies.py, and ``augment_batch`` is the PyTorch side's augmentation in
experiments/bench_vs_torch/rolewise.py. It imports NumPy and PIL only.

Policy layout as kd_jax.policies: int ``[30, 2]`` (probability 0..10, magnitude 0..9), tuple k
using ``OPERATIONS[k % 15]``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from kd_jax.policies import COUNT_PROBABILITIES, MAX_PROBABILITY, OPERATIONS


def _enhance_factor(level):
  return level * 1.8 / 10 + 0.1


def pil_operation(name: str, pil: Image.Image, level: int, sign: float, fill: tuple,
                  cutout_centre: tuple[int, int] = (0, 0)) -> Image.Image:
  """One PBA operation at ``level`` on a PIL image; ``sign`` (±1) is the random direction of
  the geometric operations, ``cutout_centre`` (row, column) the random cutout centre."""
  width, height = pil.size
  fill = fill if len(fill) > 1 else fill[0]
  affine = {"ShearX": (1, sign * level * 0.3 / 10, 0, 0, 1, 0),
            "ShearY": (1, 0, 0, sign * level * 0.3 / 10, 1, 0),
            "TranslateX": (1, 0, sign * ((level * 10 * width) // 320), 0, 1, 0),
            "TranslateY": (1, 0, 0, 0, 1, sign * ((level * 10 * height) // 320))}
  if name in affine:
    return pil.transform(pil.size, Image.AFFINE, affine[name], fillcolor=fill)
  if name == "Cutout":
    array = cutout_square(np.asarray(pil).copy(), (level * 20 * height) // 320, cutout_centre,
                          fill)
    return Image.fromarray(array)
  operations = {
      "AutoContrast": lambda: ImageOps.autocontrast(pil),
      "Equalize": lambda: ImageOps.equalize(pil),
      "Invert": lambda: ImageOps.invert(pil),
      "Rotate": lambda: pil.rotate(sign * int(level * 30 / 10), fillcolor=fill),
      "Posterize": lambda: ImageOps.posterize(pil, 4 - int(level * 4 / 10)),
      "Solarize": lambda: ImageOps.solarize(pil, 256 - int(level * 256 / 10)),
      "Color": lambda: ImageEnhance.Color(pil).enhance(_enhance_factor(level)),
      "Contrast": lambda: ImageEnhance.Contrast(pil).enhance(_enhance_factor(level)),
      "Brightness": lambda: ImageEnhance.Brightness(pil).enhance(_enhance_factor(level)),
      "Sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(_enhance_factor(level)),
  }
  if name not in operations:
    raise ValueError(f"unknown operation {name!r}; valid: {', '.join(OPERATIONS)}.")
  return operations[name]()


def cutout_square(image: np.ndarray, size: int, centre: tuple[int, int], fill) -> np.ndarray:
  """PBA's cutout_numpy: the ``size``-pixel square around ``centre``, clipped, set to fill."""
  height, width = image.shape[:2]
  row, col = centre
  image[max(0, row - size // 2):min(height, row + size // 2),
        max(0, col - size // 2):min(width, col + size // 2)] = fill
  return image


def _to_pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(pil: Image.Image, channels: int) -> np.ndarray:
  array = np.asarray(pil)
  return array[..., None] if channels == 1 else array


def apply_policy(rng: np.random.Generator, image: np.ndarray, policy, fill) -> np.ndarray:
  """PBA's apply_policy on one uint8 ``[H, W, C]`` image: a count c ∈ {0, 1, 2}, then the 30
  tuples in a shuffled order, each applied with its probability, until c were applied."""
  count = rng.choice(3, p=COUNT_PROBABILITIES)
  if count == 0:
    return image
  pil = _to_pil(image)
  fill = tuple(int(v) for v in np.broadcast_to(fill, image.shape[-1:]))
  for index in rng.permutation(len(policy)):
    probability, level = (int(v) for v in policy[index])
    if rng.random() >= probability / MAX_PROBABILITY:
      continue
    sign = 1.0 if rng.random() < 0.5 else -1.0
    centre = (int(rng.integers(image.shape[0])), int(rng.integers(image.shape[1])))
    pil = pil_operation(OPERATIONS[index % len(OPERATIONS)], pil, level, sign, fill, centre)
    count -= 1
    if count == 0:
      break
  return _from_pil(pil, image.shape[-1])


def augment_batch(rng: np.random.Generator, images: np.ndarray, policy, *, fill, pad: int = 4,
                  flip: bool = True, cutout_size: int = 16) -> np.ndarray:
  """The policy, then PBA's zero_pad_and_crop (padding in the fill colour), random_flip and
  cutout_numpy, image by image on the host; uint8 ``[B, H, W, C]`` in and out."""
  out = np.empty_like(images)
  height, width = images.shape[1:3]
  fill = np.broadcast_to(np.asarray(fill, np.uint8), images.shape[-1:])
  for i, image in enumerate(images):
    image = apply_policy(rng, image, policy, fill)
    if pad:
      padded = np.empty((height + 2 * pad, width + 2 * pad, image.shape[-1]), np.uint8)
      padded[...] = fill
      padded[pad:pad + height, pad:pad + width] = image
      row, col = rng.integers(0, 2 * pad + 1, 2)
      image = padded[row:row + height, col:col + width]
    if flip and rng.random() < 0.5:
      image = image[:, ::-1]
    if cutout_size:
      image = cutout_square(image.copy(), cutout_size,
                            (int(rng.integers(height)), int(rng.integers(width))), fill)
    out[i] = image
  return out


def pil_autoaugment_operation(name: str, pil: Image.Image, magnitude: float,
                              fill: tuple) -> Image.Image:
  """One AutoAugment operation at a signed ``magnitude`` (kd_jax.policies.
  autoaugment_magnitudes) on a PIL image, the way the AutoAugment authors' PIL code applies
  it: shears and whole-pixel translations as PIL AFFINE transforms, rotations in degrees,
  enhance factors 1 + magnitude, posterize to ``magnitude`` bits, solarize at ``magnitude``."""
  fill = fill if len(fill) > 1 else fill[0]
  affine = {"ShearX": (1, magnitude, 0, 0, 1, 0), "ShearY": (1, 0, 0, magnitude, 1, 0),
            "TranslateX": (1, 0, int(magnitude), 0, 1, 0),
            "TranslateY": (1, 0, 0, 0, 1, int(magnitude))}
  if name in affine:
    return pil.transform(pil.size, Image.AFFINE, affine[name], fillcolor=fill)
  enhance = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
             "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}
  if name in enhance:
    return enhance[name](pil).enhance(1.0 + magnitude)
  operations = {
      "Rotate": lambda: pil.rotate(magnitude, fillcolor=fill),
      "Posterize": lambda: ImageOps.posterize(pil, int(magnitude)),
      "Solarize": lambda: ImageOps.solarize(pil, magnitude),
      "AutoContrast": lambda: ImageOps.autocontrast(pil),
      "Equalize": lambda: ImageOps.equalize(pil),
      "Invert": lambda: ImageOps.invert(pil),
  }
  if name not in operations:
    raise ValueError(f"unknown AutoAugment operation {name!r}.")
  return operations[name]()
