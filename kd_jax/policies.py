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
"""

from __future__ import annotations

import ast
import json
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
              "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
              "TranslateY", "Cutout")
# The order of the 15 operations in PBA's (and role-wise KD's) released policy files: the
# iteration order of a Python 2 dict, which differs from the order above.
PY2_FILE_ORDER = ("Rotate", "TranslateX", "TranslateY", "Brightness", "Color", "Invert",
                  "Sharpness", "Posterize", "ShearX", "Solarize", "ShearY", "Equalize",
                  "AutoContrast", "Cutout", "Contrast")
NUM_TUPLES = 30
MAX_PROBABILITY, MAX_MAGNITUDE = 10, 9
COUNT_PROBABILITIES = (0.2, 0.3, 0.5)


# --- The operations: (image float32 [H, W, C] with uint8 values, level, key, fill) -> image. ---

def _gray(image):
  """PIL's RGB → L: (299·R + 587·G + 114·B)/1000 in its 16-bit fixed point, rounded."""
  if image.shape[-1] == 1:
    return image[..., 0]
  rgb = image.astype(jnp.int32)
  return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
          ).astype(jnp.float32)


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


def auto_contrast(image, level, key, fill):
  del level, key, fill
  hist = _histograms(image)
  bins = jnp.arange(256)
  lo = jnp.min(jnp.where(hist > 0, bins, 255), axis=1, keepdims=True)
  hi = jnp.max(jnp.where(hist > 0, bins, 0), axis=1, keepdims=True)
  scale = 255.0 / jnp.maximum(hi - lo, 1)
  lut = jnp.clip(jnp.trunc(bins * scale - lo * scale), 0, 255)
  lut = jnp.where(hi > lo, lut, bins.astype(jnp.float32))
  return _lut_per_channel(image, lut)


def equalize(image, level, key, fill):
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


def invert(image, level, key, fill):
  del level, key, fill
  return 255.0 - image


def posterize(image, level, key, fill):
  del key, fill
  bits = 4 - (level * 4) // 10  # PBA: 4 − int_parameter(level, 4)
  mask = jnp.bitwise_not(jnp.left_shift(1, 8 - bits) - 1) & 0xFF
  return (image.astype(jnp.int32) & mask).astype(jnp.float32)


def solarize(image, level, key, fill):
  del key, fill
  threshold = 256 - (level * 256) // 10  # PBA: 256 − int_parameter(level, 256)
  return jnp.where(image < threshold, image, 255.0 - image)


def color(image, level, key, fill):
  del key, fill
  return _blend(_gray(image)[..., None], image, _enhance_factor(level))


def contrast(image, level, key, fill):
  del key, fill
  mean = jnp.floor(jnp.mean(_gray(image)) + 0.5)
  return _blend(jnp.full_like(image, mean), image, _enhance_factor(level))


def brightness(image, level, key, fill):
  del key, fill
  return _blend(jnp.zeros_like(image), image, _enhance_factor(level))


def sharpness(image, level, key, fill):
  """Blend with PIL's SMOOTH filter (3×3 kernel, centre 5, others 1, /13; border kept)."""
  del key, fill
  padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)))
  h, w = image.shape[:2]
  total = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
  smooth = jnp.floor(jnp.clip((total + 4 * image) / 13.0, 0, 255) + 0.5)
  rows = jnp.arange(h)[:, None, None]
  cols = jnp.arange(w)[None, :, None]
  border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
  return _blend(jnp.where(border, image, smooth), image, _enhance_factor(level))


def _affine(image, matrix, fill):
  """PIL's Image.transform(AFFINE, matrix, NEAREST): output pixel centre → input pixel."""
  h, w = image.shape[:2]
  a, b, c, d, e, f = matrix
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                        jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij")
  x_in = a * xs + b * ys + c
  y_in = d * xs + e * ys + f
  xi = jnp.where(x_in < 0, -1, jnp.floor(x_in)).astype(jnp.int32)
  yi = jnp.where(y_in < 0, -1, jnp.floor(y_in)).astype(jnp.int32)
  inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
  sampled = image[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
  return jnp.where(inside[..., None], sampled, fill)


def _random_sign(key):
  return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)


def rotate(image, level, key, fill):
  """±3·L degrees (PBA: int_parameter(level, 30)), counter-clockwise about the centre."""
  degrees = ((level * 30) // 10).astype(jnp.float32) * _random_sign(key)
  return rotate_degrees(image, degrees, fill)


def rotate_degrees(image, degrees, fill):
  """PIL's ``Image.rotate(degrees)``: counter-clockwise about the centre, nearest, filled."""
  h, w = image.shape[:2]
  angle = -jnp.deg2rad(degrees)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  cx, cy = w / 2.0, h / 2.0
  matrix = (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)
  return _affine(image, matrix, fill)


def shear_x(image, level, key, fill):
  amount = level * 0.3 / 10 * _random_sign(key)  # PBA: float_parameter(level, 0.3)
  return _affine(image, (1.0, amount, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image, level, key, fill):
  amount = level * 0.3 / 10 * _random_sign(key)
  return _affine(image, (1.0, 0.0, 0.0, amount, 1.0, 0.0), fill)


def _pixels(level, max_at_32, image_size):
  """PBA's int_parameter(level, max) in pixels of a 32-pixel image, scaled to this size."""
  return (level * max_at_32 * image_size) // (10 * 32)


def translate_x(image, level, key, fill):
  pixels = _pixels(level, 10, image.shape[1]).astype(jnp.float32) * _random_sign(key)
  return _affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image, level, key, fill):
  pixels = _pixels(level, 10, image.shape[0]).astype(jnp.float32) * _random_sign(key)
  return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


def cutout_square(image, size, key, fill):
  """PBA's cutout_numpy: a ``size``-pixel square (clipped) at a uniform centre, filled."""
  h, w = image.shape[:2]
  cy_key, cx_key = jax.random.split(key)
  cy = jax.random.randint(cy_key, (), 0, h)
  cx = jax.random.randint(cx_key, (), 0, w)
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  inside = ((rows >= jnp.maximum(0, cy - size // 2)) & (rows < jnp.minimum(h, cy + size // 2))
            & (cols >= jnp.maximum(0, cx - size // 2)) & (cols < jnp.minimum(w, cx + size // 2)))
  return jnp.where(inside[..., None], fill, image)


def cutout(image, level, key, fill):
  return cutout_square(image, _pixels(level, 20, image.shape[0]), key, fill)  # 2·L px at 32


_FUNCTIONS = {"AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert,
              "Rotate": rotate, "Posterize": posterize, "Solarize": solarize, "Color": color,
              "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness,
              "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x,
              "TranslateY": translate_y, "Cutout": cutout}
BRANCHES = tuple(_FUNCTIONS[name] for name in OPERATIONS) + (
    lambda image, level, key, fill: image,)  # index 15: no operation
IDENTITY = len(OPERATIONS)


def apply_operation(name: str, image, level, key=None, fill=128.0):
  """One named operation on a uint8 image ``[H, W, C]`` (returns uint8)."""
  if name not in _FUNCTIONS:
    raise ValueError(f"unknown operation {name!r}; valid names: {', '.join(OPERATIONS)}.")
  key = jax.random.PRNGKey(0) if key is None else key
  out = _FUNCTIONS[name](jnp.asarray(image, jnp.float32), jnp.asarray(level, jnp.int32), key,
                         jnp.asarray(fill, jnp.float32))
  return out.astype(jnp.uint8)


# --- Policies. ---

def check_policy(policy) -> None:
  shape = np.shape(policy)
  if shape[-2:] != (NUM_TUPLES, 2):
    raise ValueError(f"a policy has shape [{NUM_TUPLES}, 2] (probability, magnitude) per "
                     f"tuple, or [P, {NUM_TUPLES}, 2] for a population; got {shape}.")


def zero_policy(population: int | None = None) -> jax.Array:
  """PBA's initial policy: every probability and magnitude 0 (no augmentation)."""
  shape = (NUM_TUPLES, 2) if population is None else (population, NUM_TUPLES, 2)
  return jnp.zeros(shape, jnp.int32)


def apply_policy(key, image, policy, fill):
  """PBA's per-image policy application on one uint8-valued float image ``[H, W, C]``."""
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
    branch = jnp.where(jnp.any(chosen) & (count >= slot), tuple_index % len(OPERATIONS),
                       IDENTITY)
    image = jax.lax.switch(branch, BRANCHES, image, policy[tuple_index, 1], slot_key, fill)
    image = jnp.clip(jnp.round(image), 0, 255)
  return image


LOOPS = ("map", "vmap")


def default_loop() -> str:
  """``"map"`` on CPU, ``"vmap"`` on accelerators (see ``augment_batch``)."""
  return "map" if jax.default_backend() == "cpu" else "vmap"


def augment_batch(key, images, policy, *, fill, pad: int = 4, flip: bool = True,
                  cutout_size: int = 16, loop: str | None = None):
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
  check_policy(policy)
  loop = default_loop() if loop is None else loop
  if loop not in LOOPS:
    raise ValueError(f"unknown loop {loop!r}; valid: {', '.join(LOOPS)}.")
  fill = jnp.broadcast_to(jnp.asarray(fill, jnp.float32), images.shape[-1:])
  h, w = images.shape[1:3]

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


def explore(key, policy, resample_probability: float = 0.2):
  """PBA's explore: per integer, resample uniformly with probability 0.2, else shift it by
  0..3 up or down; clipped to probabilities 0..10 and magnitudes 0..9."""
  check_policy(policy)
  resample_key, value_key, amount_key, sign_key = jax.random.split(key, 4)
  limits = jnp.asarray([MAX_PROBABILITY, MAX_MAGNITUDE])
  shape = jnp.shape(policy)
  uniform = jax.random.randint(value_key, shape, 0, limits + 1)
  shift = jax.random.randint(amount_key, shape, 0, 4) * jnp.where(
      jax.random.bernoulli(sign_key, 0.5, shape), 1, -1)
  perturbed = jnp.clip(policy + shift, 0, limits)
  return jnp.where(jax.random.bernoulli(resample_key, resample_probability, shape), uniform,
                   perturbed).astype(jnp.int32)


def describe(policy) -> list[tuple[str, float, int]]:
  """``[(operation, probability, magnitude), ...]`` of the 30 tuples (for reports)."""
  check_policy(policy)
  policy = np.asarray(policy)
  return [(OPERATIONS[k % len(OPERATIONS)], float(policy[k, 0]) / MAX_PROBABILITY,
           int(policy[k, 1])) for k in range(NUM_TUPLES)]


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


def schedule_to_json(schedule) -> str:
  return json.dumps({"operations": list(OPERATIONS), "schedule": [
      [int(start), np.asarray(policy).reshape(-1).tolist()] for start, policy in schedule]})


def schedule_from_json(text: str) -> list[tuple[int, np.ndarray]]:
  data = json.loads(text)
  if tuple(data.get("operations", OPERATIONS)) != OPERATIONS:
    raise ValueError("schedule file lists its operations in another order than "
                     "kd_jax.policies.OPERATIONS.")
  return [(int(start), np.asarray(flat, np.int32).reshape(NUM_TUPLES, 2))
          for start, flat in data["schedule"]]


def from_file_encoding(flat: Sequence[int], order: Sequence[str] = PY2_FILE_ORDER) -> np.ndarray:
  """A 60-integer policy whose tuple k uses ``order[k % 15]`` → our ``[30, 2]`` policy."""
  flat = np.asarray(flat, np.int32)
  if flat.shape != (2 * NUM_TUPLES,):
    raise ValueError(f"a policy encoding has {2 * NUM_TUPLES} integers; got {flat.shape}.")
  pairs = flat.reshape(2, len(OPERATIONS), 2)  # (half, operation in file order, p/m)
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
