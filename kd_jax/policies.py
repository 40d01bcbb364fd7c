"""PBA augmentation policies (Ho et al. 2019), as used by role-wise KD (Fu et al. 2020).

Everything runs on device in jax.numpy, per image, so a policy can be applied inside a
compiled training step and under ``vmap`` (a population of policies is a batch of arrays).

A policy is an int32 array ``[30, 2]``: 30 (probability 0..10, magnitude 0..9) tuples, tuple k
using operation ``OPERATIONS[k % 15]`` — each operation appears twice, as in PBA's 60-integer
encoding (``policy.reshape(60)`` is that encoding in our operation order). The operations
work on uint8 pixel values as PIL does (PBA applies them to PIL images); geometric ones use
nearest-neighbour sampling with PIL's pixel-centre convention and fill uncovered pixels with
``fill`` (PBA's unwrap maps them to the dataset mean, a mid grey). Pixel magnitudes
(translation L px, cutout 2·L px) are PBA's for 32-pixel images, scaled to other sizes.

Per image (PBA's ``apply_policy``): draw a count c ∈ {0, 1, 2} with probabilities
(0.2, 0.3, 0.5), walk the 30 tuples in a random order applying each with its probability
until c were applied. Then pad-and-crop, flip and cutout (``augment_batch``).

AutoAugment (Cubuk et al. 2019) uses the same operations with its own magnitudes:
``AUTOAUGMENT_POLICIES`` holds the CIFAR10 and IMAGENET policies as data and
``autoaugment_batch`` applies one on device (see its docstring). RandAugment (Cubuk et al.
2020; ``randaugment_batch``) draws N of the same operations at one magnitude M.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.typing import ArrayLike

__all__ = [
  "AUTOAUGMENT_BINS",
  "AUTOAUGMENT_BRANCHES",
  "AUTOAUGMENT_OPERATIONS",
  "AUTOAUGMENT_POLICIES",
  "BRANCHES",
  "COUNT_PROBABILITIES",
  "IDENTITY",
  "LOOPS",
  "MAX_MAGNITUDE",
  "MAX_PROBABILITY",
  "NUM_TUPLES",
  "OPERATIONS",
  "PY2_FILE_ORDER",
  "RANDAUGMENT_BINS",
  "RANDAUGMENT_OPERATIONS",
  "AutoAugmentPolicy",
  "apply_autoaugment",
  "apply_operation",
  "apply_policy",
  "apply_randaugment",
  "augment_batch",
  "auto_contrast",
  "autoaugment_batch",
  "autoaugment_magnitudes",
  "brightness",
  "brightness_by",
  "check_pixel_images",
  "check_policy",
  "check_randaugment",
  "color",
  "color_by",
  "contrast",
  "contrast_by",
  "cutout",
  "cutout_square",
  "default_loop",
  "describe",
  "encode_autoaugment",
  "equalize",
  "explore",
  "from_file_encoding",
  "invert",
  "policy_at",
  "posterize",
  "posterize_bits",
  "randaugment_batch",
  "read_pba_schedule",
  "rotate",
  "rotate_degrees",
  "schedule_from_json",
  "schedule_to_json",
  "sharpness",
  "sharpness_by",
  "shear_x",
  "shear_x_by",
  "shear_y",
  "shear_y_by",
  "solarize",
  "solarize_above",
  "translate_x",
  "translate_x_by",
  "translate_y",
  "translate_y_by",
  "zero_policy",
]

OPERATIONS = (
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "Posterize",
  "Solarize",
  "Color",
  "Contrast",
  "Brightness",
  "Sharpness",
  "ShearX",
  "ShearY",
  "TranslateX",
  "TranslateY",
  "Cutout",
)
# The order of the 15 operations in PBA's (and role-wise KD's) released policy files: the
# iteration order of a Python 2 dict, which differs from the order above.
PY2_FILE_ORDER = (
  "Rotate",
  "TranslateX",
  "TranslateY",
  "Brightness",
  "Color",
  "Invert",
  "Sharpness",
  "Posterize",
  "ShearX",
  "Solarize",
  "ShearY",
  "Equalize",
  "AutoContrast",
  "Cutout",
  "Contrast",
)
NUM_TUPLES = 30
MAX_PROBABILITY, MAX_MAGNITUDE = 10, 9
COUNT_PROBABILITIES = (0.2, 0.3, 0.5)


# --- The operations: (image float32 [H, W, C] with uint8 values, level, key, fill) -> image. ---


def _gray(image):
  """PIL's RGB → L: (299·R + 587·G + 114·B)/1000 in its 16-bit fixed point, rounded."""
  if image.shape[-1] == 1:
    return image[..., 0]
  rgb = image.astype(jnp.int32)
  return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(
    jnp.float32
  )


def _blend(degenerate, image, factor):
  """PIL's Image.blend(degenerate, image, factor): interpolate/extrapolate, clip, truncate."""
  return jnp.floor(jnp.clip(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _enhance_factor(level):
  return level * 1.8 / 10 + 0.1  # PBA: float_parameter(level, 1.8) + 0.1


def _lut_per_channel(image, lut):
  """Applies a [C, 256] lookup table channel by channel."""
  idx = image.astype(jnp.int32)
  return jnp.stack([lut[c][idx[..., c]] for c in range(image.shape[-1])], -1)


def _histograms(image):
  idx = image.astype(jnp.int32).reshape(-1, image.shape[-1])
  return jax.vmap(lambda v: jnp.bincount(v, length=256), in_axes=1)(idx)  # [C, 256]


def auto_contrast(
  image: jax.Array, level: ArrayLike, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's AutoContrast: each channel stretched to span 0..255 (PIL's autocontrast)."""
  del level, key, fill
  hist = _histograms(image)
  bins = jnp.arange(256)
  lo = jnp.min(jnp.where(hist > 0, bins, 255), axis=1, keepdims=True)
  hi = jnp.max(jnp.where(hist > 0, bins, 0), axis=1, keepdims=True)
  scale = 255.0 / jnp.maximum(hi - lo, 1)
  lut = jnp.clip(jnp.trunc(bins * scale - lo * scale), 0, 255)
  lut = jnp.where(hi > lo, lut, bins.astype(jnp.float32))
  return _lut_per_channel(image, lut)


def equalize(
  image: jax.Array, level: ArrayLike, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's Equalize: each channel's histogram equalised, as PIL's equalize."""
  del level, key, fill
  hist = _histograms(image)
  bins = jnp.arange(256)
  last_nonzero = jnp.max(jnp.where(hist > 0, bins, -1), axis=1, keepdims=True)
  last_count = jnp.take_along_axis(hist, jnp.maximum(last_nonzero, 0), axis=1)
  step = (jnp.sum(hist, axis=1, keepdims=True) - last_count) // 255
  before = jnp.cumsum(hist, axis=1) - hist  # pixels below each value
  lut = jnp.minimum((step // 2 + before) // jnp.maximum(step, 1), 255).astype(jnp.float32)
  nonzero_bins = jnp.sum(hist > 0, axis=1, keepdims=True)
  lut = jnp.where((step > 0) & (nonzero_bins > 1), lut, bins.astype(jnp.float32))
  return _lut_per_channel(image, lut)


def invert(image: jax.Array, level: ArrayLike, key: jax.Array | None, fill: ArrayLike) -> jax.Array:
  """PBA's Invert: ``255 − image``."""
  del level, key, fill
  return 255.0 - image


def posterize(
  image: jax.Array, level: jax.Array, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's Posterize: ``4 − int(0.4·L)`` bits kept per channel (``posterize_bits``)."""
  del key, fill
  return posterize_bits(image, 4 - (level * 4) // 10)  # PBA: 4 − int_parameter(level, 4)


def solarize(
  image: jax.Array, level: jax.Array, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's Solarize: pixels above ``256 − int(25.6·L)`` inverted (``solarize_above``)."""
  del key, fill
  return solarize_above(image, 256 - (level * 256) // 10)  # PBA: 256 − int_parameter(level, 256)


def posterize_bits(image: jax.Array, bits: ArrayLike) -> jax.Array:
  """PIL's ImageOps.posterize: keep the ``bits`` high bits of each value (bits 0..8)."""
  mask = jnp.bitwise_not(jnp.left_shift(1, 8 - bits) - 1) & 0xFF
  return (image.astype(jnp.int32) & mask).astype(jnp.float32)


def solarize_above(image: jax.Array, threshold: ArrayLike) -> jax.Array:
  """PIL's ImageOps.solarize: invert every value at or above ``threshold``."""
  return jnp.where(image < threshold, image, 255.0 - image)


def color(image: jax.Array, level: jax.Array, key: jax.Array | None, fill: ArrayLike) -> jax.Array:
  """PBA's Color: saturation blended by the factor ``0.18·L + 0.1`` (``color_by``)."""
  del key, fill
  return color_by(image, _enhance_factor(level))


def color_by(image: jax.Array, factor: ArrayLike) -> jax.Array:
  """PIL's ImageEnhance.Color(image).enhance(factor): blend with the grey image."""
  return _blend(_gray(image)[..., None], image, factor)


def contrast(
  image: jax.Array, level: jax.Array, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's Contrast: contrast blended by the factor ``0.18·L + 0.1`` (``contrast_by``)."""
  del key, fill
  return contrast_by(image, _enhance_factor(level))


def contrast_by(image: jax.Array, factor: ArrayLike) -> jax.Array:
  """PIL's ImageEnhance.Contrast: blend with the mean grey level (rounded)."""
  mean = jnp.floor(jnp.mean(_gray(image)) + 0.5)
  return _blend(jnp.full_like(image, mean), image, factor)


def brightness(
  image: jax.Array, level: jax.Array, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's Brightness: blended by the factor ``0.18·L + 0.1`` (``brightness_by``)."""
  del key, fill
  return brightness_by(image, _enhance_factor(level))


def brightness_by(image: jax.Array, factor: ArrayLike) -> jax.Array:
  """PIL's ImageEnhance.Brightness: blend with black."""
  return _blend(jnp.zeros_like(image), image, factor)


def sharpness(
  image: jax.Array, level: jax.Array, key: jax.Array | None, fill: ArrayLike
) -> jax.Array:
  """PBA's Sharpness: blended by the factor ``0.18·L + 0.1`` (``sharpness_by``)."""
  del key, fill
  return sharpness_by(image, _enhance_factor(level))


def sharpness_by(image: jax.Array, factor: ArrayLike) -> jax.Array:
  """Blend with PIL's SMOOTH filter (3×3 kernel, centre 5, others 1, /13; border kept)."""
  padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)))
  h, w = image.shape[:2]
  total = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
  smooth = jnp.floor(jnp.clip((total + 4 * image) / 13.0, 0, 255) + 0.5)
  rows = jnp.arange(h)[:, None, None]
  cols = jnp.arange(w)[None, :, None]
  border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
  return _blend(jnp.where(border, image, smooth), image, factor)


def _affine(image, matrix, fill):
  """PIL's Image.transform(AFFINE, matrix, NEAREST): output pixel centre → input pixel."""
  h, w = image.shape[:2]
  a, b, c, d, e, f = matrix
  ys, xs = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij"
  )
  x_in = a * xs + b * ys + c
  y_in = d * xs + e * ys + f
  xi = jnp.where(x_in < 0, -1, jnp.floor(x_in)).astype(jnp.int32)
  yi = jnp.where(y_in < 0, -1, jnp.floor(y_in)).astype(jnp.int32)
  inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
  sampled = image[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
  return jnp.where(inside[..., None], sampled, fill)


def _random_sign(key):
  return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)


def rotate(image: jax.Array, level: jax.Array, key: jax.Array, fill: ArrayLike) -> jax.Array:
  """±3·L degrees (PBA: int_parameter(level, 30)), counter-clockwise about the centre."""
  degrees = ((level * 30) // 10).astype(jnp.float32) * _random_sign(key)
  return rotate_degrees(image, degrees, fill)


def rotate_degrees(image: jax.Array, degrees: ArrayLike, fill: ArrayLike) -> jax.Array:
  """PIL's ``Image.rotate(degrees)``: counter-clockwise about the centre, nearest, filled."""
  h, w = image.shape[:2]
  angle = -jnp.deg2rad(degrees)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  cx, cy = w / 2.0, h / 2.0
  matrix = (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)
  return _affine(image, matrix, fill)


def shear_x(image: jax.Array, level: jax.Array, key: jax.Array, fill: ArrayLike) -> jax.Array:
  """PBA's ShearX: a shear of ±0.03·L, its sign drawn from ``key`` (``shear_x_by``)."""
  return shear_x_by(image, level * 0.3 / 10 * _random_sign(key), fill)  # float_parameter(L, 0.3)


def shear_x_by(image: jax.Array, amount: ArrayLike, fill: ArrayLike) -> jax.Array:
  """PIL's AFFINE transform (1, amount, 0, 0, 1, 0): row y samples x + amount·y."""
  return _affine(image, (1.0, amount, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image: jax.Array, level: jax.Array, key: jax.Array, fill: ArrayLike) -> jax.Array:
  """PBA's ShearY: a shear of ±0.03·L, its sign drawn from ``key`` (``shear_y_by``)."""
  return shear_y_by(image, level * 0.3 / 10 * _random_sign(key), fill)


def shear_y_by(image: jax.Array, amount: ArrayLike, fill: ArrayLike) -> jax.Array:
  """PIL's AFFINE transform (1, 0, 0, amount, 1, 0): column x samples y + amount·x."""
  return _affine(image, (1.0, 0.0, 0.0, amount, 1.0, 0.0), fill)


def _pixels(level, max_at_32, image_size):
  """PBA's int_parameter(level, max) in pixels of a 32-pixel image, scaled to this size."""
  return (level * max_at_32 * image_size) // (10 * 32)


def translate_x(image: jax.Array, level: jax.Array, key: jax.Array, fill: ArrayLike) -> jax.Array:
  """PBA's TranslateX: ±L pixels at 32 px, scaled to the width; sign from ``key``."""
  pixels = _pixels(level, 10, image.shape[1]).astype(jnp.float32) * _random_sign(key)
  return translate_x_by(image, pixels, fill)


def translate_x_by(image: jax.Array, pixels: ArrayLike, fill: ArrayLike) -> jax.Array:
  """Shift by a whole number of ``pixels`` (PIL's AFFINE (1, 0, pixels, 0, 1, 0))."""
  return _affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image: jax.Array, level: jax.Array, key: jax.Array, fill: ArrayLike) -> jax.Array:
  """PBA's TranslateY: ±L pixels at 32 px, scaled to the height; sign from ``key``."""
  pixels = _pixels(level, 10, image.shape[0]).astype(jnp.float32) * _random_sign(key)
  return translate_y_by(image, pixels, fill)


def translate_y_by(image: jax.Array, pixels: ArrayLike, fill: ArrayLike) -> jax.Array:
  """PIL's AFFINE transform (1, 0, 0, 0, 1, pixels): row y samples y + pixels."""
  return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


def cutout_square(
  image: jax.Array, size: int | jax.Array, key: jax.Array, fill: ArrayLike
) -> jax.Array:
  """PBA's cutout_numpy: a ``size``-pixel square (clipped) at a uniform centre, filled."""
  h, w = image.shape[:2]
  cy_key, cx_key = jax.random.split(key)
  cy = jax.random.randint(cy_key, (), 0, h)
  cx = jax.random.randint(cx_key, (), 0, w)
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  inside = (
    (rows >= jnp.maximum(0, cy - size // 2))
    & (rows < jnp.minimum(h, cy + size // 2))
    & (cols >= jnp.maximum(0, cx - size // 2))
    & (cols < jnp.minimum(w, cx + size // 2))
  )
  return jnp.where(inside[..., None], fill, image)


def cutout(image: jax.Array, level: jax.Array, key: jax.Array, fill: ArrayLike) -> jax.Array:
  """PBA's Cutout: a square of 2·L px at 32 px (scaled) in ``fill``, centred by ``key``."""
  return cutout_square(image, _pixels(level, 20, image.shape[0]), key, fill)  # 2·L px at 32


_FUNCTIONS = {
  "AutoContrast": auto_contrast,
  "Equalize": equalize,
  "Invert": invert,
  "Rotate": rotate,
  "Posterize": posterize,
  "Solarize": solarize,
  "Color": color,
  "Contrast": contrast,
  "Brightness": brightness,
  "Sharpness": sharpness,
  "ShearX": shear_x,
  "ShearY": shear_y,
  "TranslateX": translate_x,
  "TranslateY": translate_y,
  "Cutout": cutout,
}
BRANCHES = (
  *(_FUNCTIONS[name] for name in OPERATIONS),
  lambda image, level, key, fill: image,
)  # index 15: no operation
IDENTITY = len(OPERATIONS)


def check_pixel_images(name: str, images: ArrayLike, *, integers_only: bool) -> None:
  """The operations work on pixel levels 0..255. Integer images (uint8) always pass. Float
  images are refused where the contract is uint8 (``integers_only``); elsewhere they must
  hold levels 0..255, and a concrete float batch whose values all lie in [0, 1] (a
  normalised image, which every operation would round to black) is refused."""
  if isinstance(images, (jax.Array, np.ndarray, np.generic)):
    dtype = images.dtype
  else:
    dtype = jnp.asarray(images).dtype
  if jnp.issubdtype(dtype, jnp.integer):
    return
  advice = (
    "for images in [0, 1] pass (images * 255).round().astype(jnp.uint8); for "
    "normalised ones, undo the normalisation first"
  )
  if integers_only:
    raise TypeError(f"{name} must be uint8 pixel levels 0..255; got dtype {dtype}: {advice}.")
  if not isinstance(images, Tracer):
    values = np.asarray(images)
    if values.size and values.max() <= 1.0 and values.max() > 0:
      raise ValueError(
        f"{name} must hold pixel levels 0..255; these {dtype} values all lie in [0, 1]: {advice}."
      )


def apply_operation(
  name: str,
  image: ArrayLike,
  level: ArrayLike,
  key: jax.Array | None = None,
  fill: ArrayLike | Sequence[float] = 128.0,
) -> jax.Array:
  """One named operation on a uint8 image ``[H, W, C]`` (returns uint8; float images are
  refused: the operations work on levels 0..255)."""
  if name not in _FUNCTIONS:
    raise ValueError(f"unknown operation {name!r}; valid names: {', '.join(OPERATIONS)}.")
  check_pixel_images("image", image, integers_only=True)
  key = jax.random.PRNGKey(0) if key is None else key
  out = _FUNCTIONS[name](
    jnp.asarray(image, jnp.float32),
    jnp.asarray(level, jnp.int32),
    key,
    jnp.asarray(fill, jnp.float32),
  )
  return out.astype(jnp.uint8)


# --- Policies. ---


def check_policy(policy: ArrayLike | Sequence[Sequence[int]], population: bool = True) -> None:
  """A policy is int ``[30, 2]`` (probability, magnitude per tuple); with ``population``,
  ``[P, 30, 2]`` passes too."""
  shape = np.shape(policy)
  allowed = len(shape) == 2 or (population and len(shape) == 3)
  if shape[-2:] != (NUM_TUPLES, 2) or not allowed:
    either = f", or [P, {NUM_TUPLES}, 2] for a population" if population else ""
    raise ValueError(
      f"a policy has shape [{NUM_TUPLES}, 2] (probability, magnitude) per "
      f"tuple{either}; got {shape}."
    )


def zero_policy(population: int | None = None) -> jax.Array:
  """PBA's initial policy: every probability and magnitude 0 (no augmentation)."""
  shape = (NUM_TUPLES, 2) if population is None else (population, NUM_TUPLES, 2)
  return jnp.zeros(shape, jnp.int32)


def apply_policy(key: jax.Array, image: jax.Array, policy: jax.Array, fill: ArrayLike) -> jax.Array:
  """PBA's per-image policy application on one uint8-valued float image ``[H, W, C]``."""
  check_policy(policy, population=False)
  count_key, order_key, coin_key, op_key = jax.random.split(key, 4)
  count = jax.random.choice(count_key, 3, p=jnp.asarray(COUNT_PROBABILITIES))
  order = jax.random.permutation(order_key, NUM_TUPLES)
  probability = policy[order, 0].astype(jnp.float32) / MAX_PROBABILITY
  fires = jax.random.uniform(coin_key, (NUM_TUPLES,)) < probability
  rank = jnp.cumsum(fires)  # the applied tuples are the first `count` that fire
  for slot, slot_key in zip((1, 2), jax.random.split(op_key, 2)):
    chosen = fires & (rank == slot)
    position = jnp.argmax(chosen)
    tuple_index = order[position]
    branch = jnp.where(jnp.any(chosen) & (count >= slot), tuple_index % len(OPERATIONS), IDENTITY)
    image = jax.lax.switch(branch, BRANCHES, image, policy[tuple_index, 1], slot_key, fill)
    image = jnp.clip(jnp.round(image), 0, 255)
  return image


LOOPS = ("map", "vmap")


def default_loop() -> str:
  """``"map"`` on CPU, ``"vmap"`` on accelerators (see ``augment_batch``)."""
  return "map" if jax.default_backend() == "cpu" else "vmap"


def augment_batch(
  key: jax.Array,
  images: jax.Array,
  policy: jax.Array,
  *,
  fill: ArrayLike | Sequence[float],
  pad: int = 4,
  flip: bool = True,
  cutout_size: int = 16,
  loop: str | None = None,
) -> jax.Array:
  """A policy, then pad-and-crop, flip and cutout, per image; uint8 in, uint8 out.

  Args:
    images: uint8 ``[B, H, W, C]``.
    policy: int ``[30, 2]`` (one policy for the batch).
    fill: per-channel fill of uncovered and cut-out pixels (PBA: the dataset mean).
    pad, flip, cutout_size: PBA's CIFAR pipeline (cutout 16 for CIFAR-10, 8 for CIFAR-100
      in role-wise KD); 0 / False disables a stage.
    loop: how the images are traversed; the result is the same. ``"vmap"``: all at once —
      a switch whose branch differs per image becomes a select, so every image goes through
      all 15 operations in both slots (cheap in parallel on an accelerator). ``"map"``: one
      image after another (``lax.map``), each running only its chosen operations — on
      XLA:CPU over 20 times faster for a batch of 64 CIFAR images
      (results/bench_policies_cpu.md). None: ``default_loop()``.
  """
  check_policy(policy, population=False)
  check_pixel_images("images", images, integers_only=True)
  loop = default_loop() if loop is None else loop
  if loop not in LOOPS:
    raise ValueError(f"unknown loop {loop!r}; valid: {', '.join(LOOPS)}.")
  fill = jnp.broadcast_to(jnp.asarray(fill, jnp.float32), images.shape[-1:])
  _h, _w = images.shape[1:3]

  def one(key, image):
    policy_key, crop_key, flip_key, cut_key = jax.random.split(key, 4)
    image = apply_policy(policy_key, image.astype(jnp.float32), policy, fill)
    if pad:  # pad with the fill colour: shift it to zero, zero-pad, shift back
      padded = jnp.pad(image - fill, ((pad, pad), (pad, pad), (0, 0))) + fill
      offset = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
      image = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
    if flip:
      image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    if cutout_size:
      image = cutout_square(image, cutout_size, cut_key, fill)
    return image.astype(jnp.uint8)

  keys = jax.random.split(key, images.shape[0])
  if loop == "map":
    return jax.lax.map(lambda pair: one(*pair), (keys, images))
  return jax.vmap(one)(keys, images)


def explore(key: jax.Array, policy: ArrayLike, resample_probability: float = 0.2) -> jax.Array:
  """PBA's explore: per integer, resample uniformly with probability 0.2, else shift it by
  0..3 up or down; clipped to probabilities 0..10 and magnitudes 0..9."""
  check_policy(policy)
  resample_key, value_key, amount_key, sign_key = jax.random.split(key, 4)
  limits = jnp.asarray([MAX_PROBABILITY, MAX_MAGNITUDE])
  shape = jnp.shape(policy)
  uniform = jax.random.randint(value_key, shape, 0, limits + 1)
  shift = jax.random.randint(amount_key, shape, 0, 4) * jnp.where(
    jax.random.bernoulli(sign_key, 0.5, shape), 1, -1
  )
  perturbed = jnp.clip(policy + shift, 0, limits)
  return jnp.where(
    jax.random.bernoulli(resample_key, resample_probability, shape), uniform, perturbed
  ).astype(jnp.int32)


def describe(policy: ArrayLike | Sequence[Sequence[int]]) -> list[tuple[str, float, int]]:
  """``[(operation, probability, magnitude), ...]`` of the 30 tuples (for reports)."""
  check_policy(policy)
  policy = np.asarray(policy)
  return [
    (OPERATIONS[k % len(OPERATIONS)], float(policy[k, 0]) / MAX_PROBABILITY, int(policy[k, 1]))
    for k in range(NUM_TUPLES)
  ]


# --- Schedules: which policy is in force from which epoch. ---


def policy_at(schedule: Sequence[tuple[int, np.ndarray]], epoch: int) -> np.ndarray:
  """The policy of ``schedule`` (``[(start_epoch, policy), ...]``, sorted) at ``epoch``."""
  if not schedule:
    raise ValueError("empty policy schedule.")
  current = schedule[0][1]
  for start, policy in schedule:
    if start <= epoch:
      current = policy
  return np.asarray(current, np.int32)


def schedule_to_json(schedule: Sequence[tuple[int, ArrayLike | Sequence[Sequence[int]]]]) -> str:
  """A policy schedule ``[(start_epoch, policy), ...]`` as JSON text, with the
  operations' order (``schedule_from_json`` reads it back)."""
  return json.dumps(
    {
      "operations": list(OPERATIONS),
      "schedule": [
        [int(start), np.asarray(policy).reshape(-1).tolist()] for start, policy in schedule
      ],
    }
  )


def schedule_from_json(text: str) -> list[tuple[int, np.ndarray]]:
  """The schedule ``[(start_epoch, policy [30, 2]), ...]`` that
  ``schedule_to_json`` wrote; a file listing the operations in another order is refused."""
  data = json.loads(text)
  if tuple(data.get("operations", OPERATIONS)) != OPERATIONS:
    raise ValueError(
      "schedule file lists its operations in another order than kd_jax.policies.OPERATIONS."
    )
  return [
    (int(start), np.asarray(flat, np.int32).reshape(NUM_TUPLES, 2))
    for start, flat in data["schedule"]
  ]


def from_file_encoding(flat: Sequence[int], order: Sequence[str] = PY2_FILE_ORDER) -> np.ndarray:
  """A 60-integer policy whose tuple k uses ``order[k % 15]`` → our ``[30, 2]`` policy."""
  encoding = np.asarray(flat, np.int32)
  if encoding.shape != (2 * NUM_TUPLES,):
    raise ValueError(f"a policy encoding has {2 * NUM_TUPLES} integers; got {encoding.shape}.")
  pairs = encoding.reshape(2, len(OPERATIONS), 2)  # (half, operation in file order, p/m)
  ours = np.empty_like(pairs)
  for file_index, name in enumerate(order):
    ours[:, OPERATIONS.index(name)] = pairs[:, file_index]
  return ours.reshape(NUM_TUPLES, 2)


def read_pba_schedule(path: str, epochs: int) -> list[tuple[int, np.ndarray]]:
  """Reads a released PBA / role-wise KD policy log into ``[(start_epoch, policy), ...]``.

  Each line is a record ``[target_trial, cloned_trial, target_epoch, clone_epoch,
  old_config, new_config]`` (JSON or a Python literal) where a config is the 60-integer
  policy or a dict holding it under ``"hp_policy"``, with operations in PY2_FILE_ORDER.
  The last trial's lineage gives the schedule: its initial policy until the first
  exploit, then after each line's clone epoch the new config of that line (leading lines of
  other lineages are skipped, as PBA's own reader does).
  """
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        try:
          record = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError) as error:
          raise ValueError(f"{path}:{number}: not a PBA policy record ({error}).") from None
      if len(record) != 6:
        raise ValueError(f"{path}:{number}: a PBA record has 6 fields; got {len(record)}.")
      record = list(record)
      for i in (4, 5):
        record[i] = record[i]["hp_policy"] if isinstance(record[i], dict) else record[i]
      records.append(record)
  if not records:
    raise ValueError(f"{path} holds no policy records.")
  start = 0
  for i in range(len(records) - 1):  # keep the final lineage only
    if records[i][0] != records[i + 1][1]:
      start = i + 1
  records = records[start:]
  schedule = [(0, from_file_encoding(records[0][4]))]
  for record in records:
    clone_epoch = int(record[3])
    if clone_epoch > epochs:
      raise ValueError(f"{path}: a clone epoch ({clone_epoch}) exceeds epochs={epochs}.")
    schedule.append((clone_epoch, from_file_encoding(record[5])))
  return schedule


# --- AutoAugment (Cubuk et al. 2019): the searched policies, on the operations above. ---

AUTOAUGMENT_OPERATIONS = (
  "ShearX",
  "ShearY",
  "TranslateX",
  "TranslateY",
  "Rotate",
  "Brightness",
  "Color",
  "Contrast",
  "Sharpness",
  "Posterize",
  "Solarize",
  "AutoContrast",
  "Equalize",
  "Invert",
)
AUTOAUGMENT_BINS = 10
# A sub-policy: two (operation, probability, magnitude bin or None); a policy: a sequence of them.
AutoAugmentPolicy = Sequence[Sequence[tuple[str, float, int | None]]]
# Each policy: 25 sub-policies of two (operation, probability, magnitude bin or None); the
# lists of the AutoAugment paper as torchvision ships them (AutoAugmentPolicy.CIFAR10 and
# .IMAGENET), the ones Wang et al.'s official code applies.
AUTOAUGMENT_POLICIES: dict[str, AutoAugmentPolicy] = {
  "cifar10": (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
  ),
  "imagenet": (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
  ),
}
_UNSIGNED = ("Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")


def autoaugment_magnitudes(
  height: int, width: int, bins: int = AUTOAUGMENT_BINS
) -> tuple[np.ndarray, np.ndarray]:
  """The magnitude of every (operation, bin) for ``height × width`` images, and which
  operations take a random sign: ``([14, bins] float, [14] bool)`` in AUTOAUGMENT_OPERATIONS
  order (torchvision's AutoAugment with 10 bins, its RandAugment with 31).

  Shears 0..0.3, translations 0..150/331 of the side in pixels (truncated to whole pixels
  when applied), rotations 0..30°, enhance factors 1 ± 0..0.9 (signed); posterize keeps
  ``8 − round(4·bin / (bins − 1))`` bits, solarize inverts values ≥ 255..0; the last three
  take none.
  """
  if bins < 2:
    raise ValueError(f"the number of magnitude bins must be ≥ 2; got {bins}.")
  ramp = np.linspace(0.0, 1.0, bins)
  table = {
    "ShearX": 0.3 * ramp,
    "ShearY": 0.3 * ramp,
    "TranslateX": 150.0 / 331.0 * width * ramp,
    "TranslateY": 150.0 / 331.0 * height * ramp,
    "Rotate": 30.0 * ramp,
    "Posterize": 8 - np.round(np.arange(bins) / ((bins - 1) / 4)),
    "Solarize": 255.0 * (1.0 - ramp),
  }
  for name in ("Brightness", "Color", "Contrast", "Sharpness"):
    table[name] = 0.9 * ramp
  magnitudes = np.stack(
    [table.get(name, np.zeros(bins)) for name in AUTOAUGMENT_OPERATIONS]
  ).astype(np.float32)
  signed = np.asarray([name not in _UNSIGNED for name in AUTOAUGMENT_OPERATIONS])
  return magnitudes, signed


def encode_autoaugment(policy: str | AutoAugmentPolicy) -> dict[str, np.ndarray]:
  """A policy (a name of AUTOAUGMENT_POLICIES or a list of sub-policies of two
  ``(operation, probability, magnitude_bin or None)``) as arrays ``operation`` [S, 2] int
  (AUTOAUGMENT_OPERATIONS indices), ``probability`` [S, 2] float, ``bin`` [S, 2] int."""
  if isinstance(policy, str):
    if policy not in AUTOAUGMENT_POLICIES:
      raise ValueError(
        f"unknown AutoAugment policy {policy!r}; valid names: "
        f"{', '.join(AUTOAUGMENT_POLICIES)}, or a list of sub-policies."
      )
    policy = AUTOAUGMENT_POLICIES[policy]
  operation, probability, bins = [], [], []
  for number, sub_policy in enumerate(policy):
    if len(sub_policy) != 2:
      raise ValueError(
        f"AutoAugment sub-policy {number} has {len(sub_policy)} operations; "
        "each has two (operation, probability, magnitude_bin or None)."
      )
    for name, p, magnitude_bin in sub_policy:
      if name not in AUTOAUGMENT_OPERATIONS:
        raise ValueError(
          f"AutoAugment sub-policy {number}: unknown operation {name!r}; "
          f"valid: {', '.join(AUTOAUGMENT_OPERATIONS)}."
        )
      if not 0.0 <= p <= 1.0:
        raise ValueError(
          f"AutoAugment sub-policy {number}: probability {p} of {name} is not in [0, 1]."
        )
      needs_bin = name not in ("AutoContrast", "Equalize", "Invert")
      if needs_bin and not (magnitude_bin is not None and 0 <= magnitude_bin < AUTOAUGMENT_BINS):
        raise ValueError(
          f"AutoAugment sub-policy {number}: {name} needs a magnitude bin "
          f"0..{AUTOAUGMENT_BINS - 1}; got {magnitude_bin!r}."
        )
      operation.append(AUTOAUGMENT_OPERATIONS.index(name))
      probability.append(p)
      bins.append(magnitude_bin or 0)
  if not operation:
    raise ValueError("an AutoAugment policy needs at least one sub-policy.")
  return {
    "operation": np.asarray(operation, np.int32).reshape(-1, 2),
    "probability": np.asarray(probability, np.float32).reshape(-1, 2),
    "bin": np.asarray(bins, np.int32).reshape(-1, 2),
  }


# One branch per AUTOAUGMENT_OPERATIONS entry, (image, magnitude, fill) -> image, then the
# identity (an operation that does not fire).
AUTOAUGMENT_BRANCHES = (
  lambda image, m, fill: shear_x_by(image, m, fill),
  lambda image, m, fill: shear_y_by(image, m, fill),
  lambda image, m, fill: translate_x_by(image, jnp.trunc(m), fill),
  lambda image, m, fill: translate_y_by(image, jnp.trunc(m), fill),
  lambda image, m, fill: rotate_degrees(image, m, fill),
  lambda image, m, fill: brightness_by(image, 1.0 + m),
  lambda image, m, fill: color_by(image, 1.0 + m),
  lambda image, m, fill: contrast_by(image, 1.0 + m),
  lambda image, m, fill: sharpness_by(image, 1.0 + m),
  lambda image, m, fill: posterize_bits(image, m.astype(jnp.int32)),
  lambda image, m, fill: solarize_above(image, m),
  lambda image, m, fill: auto_contrast(image, 0, None, fill),
  lambda image, m, fill: equalize(image, 0, None, fill),
  lambda image, m, fill: invert(image, 0, None, fill),
  lambda image, m, fill: image,
)


def apply_autoaugment(
  key: jax.Array,
  image: jax.Array,
  encoded: Mapping[str, jax.Array],
  magnitudes: jax.Array,
  signed: jax.Array,
  fill: ArrayLike,
) -> jax.Array:
  """AutoAugment on one uint8-valued float image ``[H, W, C]``: a sub-policy drawn
  uniformly, each of its two operations applied when a uniform draw is ≤ its probability,
  a signed magnitude negated with probability 1/2 (torchvision's order of draws)."""
  choice_key, coin_key, sign_key = jax.random.split(key, 3)
  index = jax.random.randint(choice_key, (), 0, encoded["operation"].shape[0])
  coins = jax.random.uniform(coin_key, (2,))
  negate = jax.random.bernoulli(sign_key, 0.5, (2,))
  identity = len(AUTOAUGMENT_OPERATIONS)
  for slot in range(2):
    operation = encoded["operation"][index, slot]
    magnitude = magnitudes[operation, encoded["bin"][index, slot]]
    magnitude = jnp.where(signed[operation] & negate[slot], -magnitude, magnitude)
    branch = jnp.where(coins[slot] <= encoded["probability"][index, slot], operation, identity)
    image = jax.lax.switch(branch, AUTOAUGMENT_BRANCHES, image, magnitude, fill)
    image = jnp.clip(jnp.round(image), 0, 255)
  return image


def autoaugment_batch(
  key: jax.Array,
  images: jax.Array,
  policy: str | AutoAugmentPolicy = "cifar10",
  *,
  fill: ArrayLike | Sequence[float] = 0.0,
  per_image: bool = True,
  loop: str | None = None,
) -> jax.Array:
  """AutoAugment on a batch of uint8-valued images ``[B, H, W, C]``, on device; jit-able.

  Each image (or, with ``per_image=False``, the whole batch at once, as torchvision
  transforms a batched tensor in Wang et al.'s official code) draws one of the policy's
  sub-policies and applies its two operations, each with its probability and the magnitude
  of its bin (``autoaugment_magnitudes``), signed ones in a random direction. Pixel
  arithmetic follows PIL, as the AutoAugment authors' code and PBA (the operations of this
  module): torchvision's tensor path truncates the grey level where PIL rounds it, so a few
  pixels of Color / Contrast can differ by one level. Geometric operations use nearest
  neighbours and fill uncovered pixels with ``fill`` (torchvision's default: 0, black).

  Args:
    key: PRNG key.
    images: ``[B, H, W, C]`` with values 0..255 (any dtype; the result has the same).
    policy: a name of AUTOAUGMENT_POLICIES ("cifar10" | "imagenet") or a list of
      sub-policies (``encode_autoaugment``).
    fill: per-channel pixel value of uncovered pixels.
    per_image: one draw per image (True) or one for the batch (False).
    loop: "map" or "vmap", as in ``augment_batch`` (None: ``default_loop()``).
  """
  from kd_jax import validation

  validation.check_image_layout("images", images)
  check_pixel_images("images", images, integers_only=False)
  encoded = {k: jnp.asarray(v) for k, v in encode_autoaugment(policy).items()}
  magnitudes, signed = (jnp.asarray(v) for v in autoaugment_magnitudes(*images.shape[1:3]))
  fill = jnp.broadcast_to(jnp.asarray(fill, jnp.float32), images.shape[-1:])

  def one(key, image):
    return apply_autoaugment(key, image, encoded, magnitudes, signed, fill)

  return _each_image(key, images, one, per_image, loop)


def _each_image(key, images, one, per_image: bool, loop: str | None) -> jax.Array:
  """``one(key, float image) -> image`` over the batch: a key per image (``per_image``) or
  one for all, image after image (``"map"``) or all at once (``"vmap"``); same dtype out."""
  loop = default_loop() if loop is None else loop
  if loop not in LOOPS:
    raise ValueError(f"unknown loop {loop!r}; valid: {', '.join(LOOPS)}.")

  def cast(key, image):
    return one(key, image.astype(jnp.float32)).astype(images.dtype)

  if not per_image:
    return jax.vmap(lambda image: cast(key, image))(images)
  keys = jax.random.split(key, images.shape[0])
  if loop == "map":
    return jax.lax.map(lambda pair: cast(*pair), (keys, images))
  return jax.vmap(cast)(keys, images)


# --- RandAugment (Cubuk et al. 2020): N operations drawn uniformly, all at magnitude M. ---

# torchvision's RandAugment list: the paper's 14 operations, AutoAugment's without Invert
# (in the same order) after the identity.
RANDAUGMENT_OPERATIONS = ("Identity", *(op for op in AUTOAUGMENT_OPERATIONS if op != "Invert"))
RANDAUGMENT_BINS = 31
# Each RandAugment operation's branch in AUTOAUGMENT_BRANCHES (the identity is the last).
_RANDAUGMENT_BRANCH = np.asarray(
  [
    AUTOAUGMENT_OPERATIONS.index(name) if name != "Identity" else len(AUTOAUGMENT_OPERATIONS)
    for name in RANDAUGMENT_OPERATIONS
  ],
  np.int32,
)


def check_randaugment(num_ops: int, magnitude: int, bins: int = RANDAUGMENT_BINS) -> None:
  """RandAugment's N ≥ 0 and its magnitude bin 0 ≤ M < bins (a one-line error otherwise)."""
  if not isinstance(num_ops, (int, np.integer)) or num_ops < 0:
    raise ValueError(f"RandAugment num_ops must be an int ≥ 0; got {num_ops!r}.")
  if not isinstance(bins, (int, np.integer)) or bins < 2:
    raise ValueError(f"RandAugment bins must be an int ≥ 2; got {bins!r}.")
  if not isinstance(magnitude, (int, np.integer)) or not 0 <= magnitude < bins:
    raise ValueError(
      f"RandAugment magnitude must be an int bin in 0..{bins - 1} (torchvision's default: "
      f"9 of {RANDAUGMENT_BINS}); got {magnitude!r}."
    )


def apply_randaugment(
  key: jax.Array,
  image: jax.Array,
  num_ops: int,
  magnitude: int,
  magnitudes: jax.Array,
  signed: jax.Array,
  fill: ArrayLike,
  random_magnitude: bool = False,
) -> jax.Array:
  """RandAugment on one uint8-valued float image ``[H, W, C]``: ``num_ops`` times, an
  operation of RANDAUGMENT_OPERATIONS drawn uniformly (with replacement) is applied at bin
  ``magnitude`` of ``magnitudes`` (``random_magnitude``: a bin drawn uniformly from
  0..magnitude per operation), a signed one negated with probability 1/2 (torchvision's
  order of draws; every drawn operation fires)."""
  branches = jnp.asarray(_RANDAUGMENT_BRANCH)
  # The identity's magnitude row: zeros after the 14 operations' rows.
  table = jnp.concatenate([magnitudes, jnp.zeros_like(magnitudes[:1])])
  signs = jnp.concatenate([signed, jnp.zeros((1,), bool)])
  for op_key in jax.random.split(key, num_ops):
    choice_key, sign_key, bin_key = jax.random.split(op_key, 3)
    branch = branches[jax.random.randint(choice_key, (), 0, len(RANDAUGMENT_OPERATIONS))]
    level = jax.random.randint(bin_key, (), 0, magnitude + 1) if random_magnitude else magnitude
    value = table[branch, level]
    value = jnp.where(signs[branch] & jax.random.bernoulli(sign_key), -value, value)
    image = jax.lax.switch(branch, AUTOAUGMENT_BRANCHES, image, value, fill)
    image = jnp.clip(jnp.round(image), 0, 255)
  return image


def randaugment_batch(
  key: jax.Array,
  images: jax.Array,
  num_ops: int = 2,
  magnitude: int = 9,
  *,
  bins: int = RANDAUGMENT_BINS,
  random_magnitude: bool = False,
  fill: ArrayLike | Sequence[float] = 0.0,
  per_image: bool = True,
  loop: str | None = None,
) -> jax.Array:
  """RandAugment (Cubuk et al. 2020) on a batch of uint8-valued images ``[B, H, W, C]``, on
  device; jit-able.

  Each image draws ``num_ops`` operations uniformly from RANDAUGMENT_OPERATIONS (with
  replacement, the identity among them) and applies each at magnitude bin ``magnitude`` of
  ``bins`` (``autoaugment_magnitudes(H, W, bins)``: torchvision's RandAugment, whose
  defaults are N = 2, M = 9 of 31 bins), signed operations in a random direction. The pixel
  arithmetic is AutoAugment's here (PIL's; see ``autoaugment_batch``).

  Args:
    key: PRNG key.
    images: ``[B, H, W, C]`` with values 0..255 (any dtype; the result has the same).
    num_ops: N, operations per image (0: unchanged).
    magnitude: M, a bin in ``0..bins − 1``.
    bins: number of magnitude bins (31: torchvision; the paper's scale has 10 + 1).
    random_magnitude: each operation at a bin drawn uniformly from ``0..magnitude`` (the
      FixMatch-style RandAugment of the MLKD and LS-KD code draws a fresh magnitude per
      operation; with ``magnitude = bins − 1`` the whole range).
    fill: per-channel pixel value of uncovered pixels (torchvision's default 0, black).
    per_image: one draw per image (True) or one for the batch (False).
    loop: "map" or "vmap", as in ``augment_batch`` (None: ``default_loop()``).

  >>> import jax, jax.numpy as jnp
  >>> images = jnp.full((2, 8, 8, 3), 100, jnp.uint8)
  >>> randaugment_batch(jax.random.PRNGKey(0), images, num_ops=0).tolist() == images.tolist()
  True
  """
  from kd_jax import validation

  check_randaugment(num_ops, magnitude, bins)
  validation.check_image_layout("images", images)
  check_pixel_images("images", images, integers_only=False)
  if num_ops == 0:
    return images
  height, width = images.shape[1:3]
  magnitudes, signed = (jnp.asarray(v) for v in autoaugment_magnitudes(height, width, bins))
  fill = jnp.broadcast_to(jnp.asarray(fill, jnp.float32), images.shape[-1:])

  def one(key, image):
    return apply_randaugment(
      key, image, num_ops, magnitude, magnitudes, signed, fill, random_magnitude
    )

  return _each_image(key, images, one, per_image, loop)
