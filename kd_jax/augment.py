"""On-device, jittable image views.

All functions take a batch ``[batch, height, width, channels]`` of any numeric dtype and an
explicit PRNG key, keep static shapes, and run inside the compiled training step, so the
host only ever ships uint8 batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import losses, validation

__all__ = [
  "PICK_SCORES",
  "CutMixPick",
  "CutMixPool",
  "cutmix",
  "cutmix_box",
  "cutmix_pick",
  "cutmix_pool",
  "cutout",
  "mixup",
  "normalize",
  "pick_scores",
  "pick_top",
  "pick_top_indices",
  "random_crop_flip",
  "shift_permutation",
]

_check_images = validation.check_image_layout


def random_crop_flip(
  key: jax.Array, images: jax.Array, pad: int = 4, flip: bool = True, *, per_image: bool = True
) -> jax.Array:
  """Standard CIFAR training view: zero-pad, random crop back to size, random h-flip.

  Equivalent to torchvision's ``RandomCrop(size, padding=pad)`` followed by
  ``RandomHorizontalFlip()``: the padding value is 0 in pixel space, i.e. it is applied
  before normalisation, exactly as on PIL images. Each image draws its own offset, uniform
  over the ``(2·pad + 1)²`` positions, and flips with probability 1/2.

  Args:
    key: PRNG key.
    images: ``[batch, height, width, channels]``.
    pad: zero padding on each side, ≥ 0 (a Python int: it fixes shapes).
    flip: whether to flip horizontally at random.
    per_image: one offset and one coin per image (True), or one for the whole batch (as
      torchvision transforms a batched tensor).

  Returns:
    Array of the same shape and dtype as ``images``.
  """
  _check_images("images", images)
  pad = validation.static_int("pad", pad, minimum=0)
  batch, height, width, channels = images.shape
  draws = batch if per_image else 1
  crop_key, flip_key = jax.random.split(key)
  if pad > 0:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (draws, 2), 0, 2 * pad + 1)

    def crop(image, offset):
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    images = jax.vmap(crop)(padded, jnp.broadcast_to(offsets, (batch, 2)))
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (draws, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1, :], images)
  return images


def cutout(
  key: jax.Array, images: jax.Array, size: int, *, per_image: bool = True, fill=0.0
) -> jax.Array:
  """Cutout (DeVries & Taylor 2017): a ``size × size`` square set to ``fill``.

  The centre is uniform over the pixels and the square is clipped to the image (rows
  ``cy − size//2 .. cy + size//2``, as the official code). Applied after normalisation with
  ``fill = 0`` it paints the dataset's mean colour, as the official Cutout and Wang et al.'s
  code (which multiply the normalised batch by the mask) do.

  Args:
    key: PRNG key.
    images: ``[batch, height, width, channels]``.
    size: side in pixels, ≥ 0 (0: no change).
    per_image: one square per image (DeVries & Taylor) or one for the whole batch (Wang et
      al.'s official view).
    fill: value inside the square (scalar or one per channel).
  """
  _check_images("images", images)
  size = validation.static_int("size", size, minimum=0)
  batch, height, width, _ = images.shape
  draws = batch if per_image else 1
  row_key, col_key = jax.random.split(key)
  rows = jax.random.randint(row_key, (draws, 1, 1), 0, height)
  cols = jax.random.randint(col_key, (draws, 1, 1), 0, width)
  grid_rows = jnp.arange(height)[None, :, None]
  grid_cols = jnp.arange(width)[None, None, :]
  inside = (
    (grid_rows >= jnp.maximum(0, rows - size // 2))
    & (grid_rows < jnp.minimum(height, rows + size // 2))
    & (grid_cols >= jnp.maximum(0, cols - size // 2))
    & (grid_cols < jnp.minimum(width, cols + size // 2))
  )
  fill = jnp.asarray(fill, images.dtype)
  return jnp.where(inside[..., None], fill, images)


def normalize(
  images: jax.Array, mean, std, dtype=jnp.float32, *, max_value: float | None = None
) -> jax.Array:
  """Maps raw pixels to ``(x / max_value − mean) / std`` per channel, in ``dtype``.

  Args:
    images: ``[batch, height, width, channels]``.
    mean, std: per-channel statistics of pixels scaled to [0, 1]: one value, or one per
      channel.
    dtype: output dtype.
    max_value: the pixel value of white. None: 255 for integer images (uint8); float images
      must say (255.0 for floats in 0..255, 1.0 for [0, 1]), since dividing [0, 1] images by
      255 again would silently give near-constant inputs.
  """
  _check_images("images", images)
  channels = images.shape[-1]
  for name, value in (("mean", mean), ("std", std)):
    if np.size(value) not in (1, channels):
      raise ValueError(
        f"{name} has {np.size(value)} values for images with {channels} "
        f"channel(s); give one value or one per channel."
      )
  if max_value is None:
    if not jnp.issubdtype(images.dtype, jnp.integer):
      raise TypeError(
        f"normalize got {images.dtype} images: say their scale with "
        "max_value=255.0 (pixels in 0..255) or max_value=1.0 (pixels in "
        "[0, 1]); integer images default to 255."
      )
    max_value = 255.0
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) / max_value - mean) / std).astype(dtype)


def _mixing_dtype(images):
  return images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32


def shift_permutation(key: jax.Array, batch_size: int) -> jax.Array:
  """A partner permutation without fixed points: ``perm[i] = (i + r) mod B``, r ~ U{1..B−1}.

  The official CutMix code redraws a random permutation until no image is paired with
  itself; a random cyclic shift has no fixed point by construction and a static shape.
  Needs ``B ≥ 2``.
  """
  if batch_size < 2:
    raise ValueError(f"mixing needs a batch of at least 2 images; got {batch_size}.")
  shift = jax.random.randint(key, (), 1, batch_size)
  return (jnp.arange(batch_size) + shift) % batch_size


def mixup(key: jax.Array, images: jax.Array, alpha: float = 1.0):
  """mixup (Zhang et al. 2018) of a batch with a fixed-point-free permutation of itself.

  ``λ ~ Beta(α, α)`` once per batch; ``mixed = λ·x + (1 − λ)·x[perm]``.

  Args:
    key: PRNG key.
    images: ``[batch, height, width, channels]``; integer images are mixed in float32.
    alpha: Beta parameter α > 0 (a string, 0 or NaN raises; traced, it is checked under
      checkify only: kd_jax.validation.check_positive).

  Returns:
    ``(mixed, perm, lam)``: mixed images (floating), the partner permutation ``[batch]``
    and the scalar weight λ of the original image.
  """
  _check_images("images", images)
  validation.check_positive("alpha", alpha)
  lam_key, perm_key = jax.random.split(key)
  dtype = _mixing_dtype(images)
  lam = jax.random.beta(lam_key, alpha, alpha)
  perm = shift_permutation(perm_key, images.shape[0])
  x = images.astype(dtype)
  mixed = lam.astype(dtype) * x + (1 - lam).astype(dtype) * x[perm]
  return mixed, perm, lam


def cutmix_box(key: jax.Array, height: int, width: int, lam: jax.Array) -> jax.Array:
  """CutMix's box as a boolean ``[height, width]`` mask (True inside the box).

  Side ratio ``sqrt(1 − λ)`` of each side (``int(H·r)``, ``int(W·r)``, as the official
  code), centre uniform over the pixels, box clipped to the image.
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  cy_key, cx_key = jax.random.split(key)
  cy = jax.random.randint(cy_key, (), 0, height)
  cx = jax.random.randint(cx_key, (), 0, width)
  y1, y2 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  x1, x2 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)


def cutmix(key: jax.Array, images: jax.Array, alpha: float = 1.0):
  """CutMix (Yun et al. 2019) of a batch with a fixed-point-free permutation of itself.

  ``λ ~ Beta(α, α)``; one box per batch with side ratio ``sqrt(1 − λ)``, uniform centre,
  clipped to the image; the pixels inside come from ``x[perm]``. λ is then recomputed as
  the kept-area fraction ``1 − box_area / (H·W)``, as in the official code.

  Returns:
    ``(mixed, perm, lam)``: mixed images (same dtype as ``images``), the permutation
    ``[batch]``, and λ, the fraction of each image's area that is still its own.
  """
  _check_images("images", images)
  validation.check_positive("alpha", alpha)
  lam_key, perm_key, box_key = jax.random.split(key, 3)
  batch, height, width, _ = images.shape
  lam = jax.random.beta(lam_key, alpha, alpha)
  perm = shift_permutation(perm_key, batch)
  box = cutmix_box(box_key, height, width, lam)
  mixed = jnp.where(box[None, :, :, None], images[perm], images)
  kept = 1.0 - jnp.mean(box.astype(jnp.float32))
  return mixed, perm, kept


def pick_top(scores: jax.Array, images: jax.Array, n_pick: int) -> jax.Array:
  """The ``n_pick`` samples with the highest scores, highest first (static shapes).

  Args:
    scores: ``[pool]``.
    images: ``[pool, ...]`` (any per-sample array).
    n_pick: Python int, ``1 ≤ n_pick ≤ pool``.

  Returns:
    ``[n_pick, ...]``. Use ``pick_top_indices`` to gather other per-sample arrays alike.
  """
  return jnp.take(images, pick_top_indices(scores, n_pick, images.shape[0]), axis=0)


def pick_top_indices(scores: jax.Array, n_pick: int, pool_size: int | None = None) -> jax.Array:
  """Indices of the ``n_pick`` highest scores (ties: lower index first)."""
  if jnp.ndim(scores) != 1:
    raise ValueError(f"scores must have shape [pool]; got {jnp.shape(scores)}.")
  if pool_size is not None and pool_size != scores.shape[0]:
    raise ValueError(f"scores has {scores.shape[0]} entries but images has {pool_size}.")
  n_pick = validation.static_int("n_pick", n_pick, minimum=1, maximum=scores.shape[0])
  return jax.lax.top_k(scores, n_pick)[1]


# The pick criteria of Wang et al.: the teacher's entropy (the NeurIPS'22 version's default),
# the student's entropy, or the teacher–student KL (the ICLR'22 version, its Table 3).
PICK_SCORES = ("teacher_entropy", "student_entropy", "kl")


class CutMixPool(NamedTuple):
  """``pool_rounds`` CutMix draws of a batch, as one pool of ``R·B`` samples.

  Labels stay with the caller, so integer and one-hot labels work alike: the pool's labels
  are ``labels[pool.source]`` and ``labels[pool.partner]``, mixed with weight ``pool.lam``.
  """

  images: jax.Array  # [R·B, H, W, C], the dtype of the batch
  source: jax.Array  # [R·B] int32: the batch index of each sample's base image
  partner: jax.Array  # [R·B] int32: the batch index of the image pasted into its box
  lam: jax.Array  # [R·B] float32: the fraction of the area that is the base image's


class CutMixPick(NamedTuple):
  """The picked CutMix samples (``cutmix_pick``) and the teacher's logits of them."""

  images: jax.Array  # [n_pick, H, W, C]
  source: jax.Array  # [n_pick] int32
  partner: jax.Array  # [n_pick] int32
  lam: jax.Array  # [n_pick] float32
  teacher_logits: jax.Array | None  # [n_pick, classes]; None when no teacher_fn was given


def cutmix_pool(
  key: jax.Array, images: jax.Array, *, alpha: float = 1.0, pool_rounds: int = 2
) -> CutMixPool:
  """A pool of ``pool_rounds`` independent CutMix draws of the batch (Wang et al. 2022).

  Round r holds ``cutmix(key_r, images, alpha)``: its own λ, box and partner shift, so
  sample ``r·B + i`` is image i with a box from image ``partner[r·B + i]``.

  Args:
    key: PRNG key.
    images: ``[batch, height, width, channels]``, batch ≥ 2.
    alpha: Beta parameter α > 0 of each draw.
    pool_rounds: R ≥ 1, a Python int (the pool's size ``R·B`` is static).

  Returns:
    A ``CutMixPool`` of ``R·B`` samples in the images' dtype.

  >>> import jax, jax.numpy as jnp
  >>> images = jnp.arange(4 * 8 * 8 * 3, dtype=jnp.float32).reshape(4, 8, 8, 3)
  >>> pool = cutmix_pool(jax.random.PRNGKey(0), images, pool_rounds=3)
  >>> pool.images.shape, pool.source.tolist()
  ((12, 8, 8, 3), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
  """
  _check_images("images", images)
  rounds = validation.static_int("pool_rounds", pool_rounds, minimum=1)
  batch = images.shape[0]
  mixed, perms, lams = jax.vmap(lambda k: cutmix(k, images, alpha))(jax.random.split(key, rounds))
  return CutMixPool(
    images=mixed.reshape(rounds * batch, *images.shape[1:]),
    source=jnp.tile(jnp.arange(batch, dtype=jnp.int32), rounds),
    partner=perms.reshape(-1).astype(jnp.int32),
    lam=jnp.repeat(lams.astype(jnp.float32), batch),
  )


def pick_scores(
  score: str,
  *,
  teacher_logits: jax.Array | None = None,
  student_logits: jax.Array | None = None,
  temperature: float | jax.Array = 4.0,
) -> jax.Array:
  """How informative each sample is, for ``pick_top_indices`` (higher is picked first).

  ``"teacher_entropy"``: ``H(softmax(z_T))`` at τ = 1; ``"student_entropy"``:
  ``H(softmax(z_S))`` at τ = 1; ``"kl"``: ``τ²·KL(p_T^τ ‖ p_S^τ)`` (``losses.kd_kl``).

  Args:
    score: one of ``PICK_SCORES``.
    teacher_logits: ``[pool, classes]``; needed by ``"teacher_entropy"`` and ``"kl"``.
    student_logits: ``[pool, classes]``; needed by ``"student_entropy"`` and ``"kl"``.
    temperature: τ of the ``"kl"`` score.

  Returns:
    ``[pool]`` scores in at least float32.

  >>> import jax.numpy as jnp
  >>> logits = jnp.array([[0.0, 0.0], [9.0, 0.0]])  # a coin toss, a confident teacher
  >>> pick_scores("teacher_entropy", teacher_logits=logits).round(4)  # log 2, about 0
  Array([0.6931, 0.0012], dtype=float32)
  """
  if score not in PICK_SCORES:
    raise ValueError(f"unknown pick score {score!r}; valid names: {', '.join(PICK_SCORES)}.")
  needs = {"teacher_entropy": ("teacher_logits",), "student_entropy": ("student_logits",)}
  given = {"teacher_logits": teacher_logits, "student_logits": student_logits}
  missing = [name for name in needs.get(score, tuple(given)) if given[name] is None]
  if missing:
    raise ValueError(f"the {score!r} pick score needs {' and '.join(missing)}.")
  if score == "teacher_entropy" and teacher_logits is not None:
    return losses.entropy(teacher_logits, 1.0)
  if score == "student_entropy" and student_logits is not None:
    return losses.entropy(student_logits, 1.0)
  assert teacher_logits is not None and student_logits is not None  # checked above
  return losses.kd_kl(student_logits, teacher_logits, temperature)


def cutmix_pick(
  key: jax.Array,
  images: jax.Array,
  *,
  score: str = "teacher_entropy",
  teacher_fn: Callable[[jax.Array], jax.Array] | None = None,
  student_fn: Callable[[jax.Array], jax.Array] | None = None,
  temperature: float | jax.Array = 4.0,
  alpha: float = 1.0,
  pool_rounds: int = 2,
  n_pick: int | None = None,
) -> CutMixPick:
  """CutMix-pick (Wang et al. 2022): the ``n_pick`` most informative of R CutMix draws.

  The pool is ``cutmix_pool(key, images, alpha=alpha, pool_rounds=R)``; each sample is
  scored by ``pick_scores(score, ...)`` from the logits of ``teacher_fn`` / ``student_fn``
  (``x -> logits``, parameters closed over, inference mode), and the ``n_pick`` highest are
  kept, highest first. The teacher logits computed for scoring are reused for the picks, so
  the teacher runs once over the pool (R·B samples) and not again; with ``"student_entropy"``
  it runs on the picks only. To score with logits you compute yourself, call
  ``cutmix_pool``, ``pick_scores`` and ``pick_top_indices`` in turn.

  Args:
    key: PRNG key.
    images: ``[batch, height, width, channels]`` (normalised or not: CutMix copies pixels).
    score: one of ``PICK_SCORES``.
    teacher_fn: the teacher's logits of a batch; needed by every score except
      ``"student_entropy"``, and for the returned ``teacher_logits``.
    student_fn: the student's logits; needed by ``"student_entropy"`` and ``"kl"``.
    temperature: τ of the ``"kl"`` score.
    alpha: Beta parameter α > 0 of each CutMix draw.
    pool_rounds: R ≥ 1 (Python int).
    n_pick: how many to keep, ``1 ≤ n_pick ≤ R·B``; None keeps the batch size.

  Returns:
    A ``CutMixPick``; the picks' labels are ``labels[source]`` and ``labels[partner]``
    (integer or one-hot), mixed with weight ``lam`` when labels are mixed.

  >>> import jax, jax.numpy as jnp
  >>> images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
  >>> teacher = lambda x: x.mean(axis=(1, 2)) * 10.0  # any x -> [batch, classes]
  >>> picked = cutmix_pick(jax.random.PRNGKey(0), images, teacher_fn=teacher, pool_rounds=3)
  >>> picked.images.shape, picked.teacher_logits.shape
  ((4, 8, 8, 3), (4, 3))
  """
  if score not in PICK_SCORES:
    raise ValueError(f"unknown pick score {score!r}; valid names: {', '.join(PICK_SCORES)}.")
  if teacher_fn is None and score != "student_entropy":
    raise ValueError(f"the {score!r} pick score needs teacher_fn (x -> teacher logits).")
  if student_fn is None and score != "teacher_entropy":
    raise ValueError(f"the {score!r} pick score needs student_fn (x -> student logits).")
  pool = cutmix_pool(key, images, alpha=alpha, pool_rounds=pool_rounds)
  teacher_logits = student_logits = None
  if score != "student_entropy" and teacher_fn is not None:  # not None: checked above
    teacher_logits = teacher_fn(pool.images)
  if score != "teacher_entropy" and student_fn is not None:
    student_logits = student_fn(pool.images)
  scores = pick_scores(
    score, teacher_logits=teacher_logits, student_logits=student_logits, temperature=temperature
  )
  picked = pick_top_indices(scores, images.shape[0] if n_pick is None else n_pick)
  picked_images = pool.images[picked]
  if teacher_logits is not None:
    picked_teacher = teacher_logits[picked]
  else:
    picked_teacher = None if teacher_fn is None else teacher_fn(picked_images)
  return CutMixPick(
    picked_images, pool.source[picked], pool.partner[picked], pool.lam[picked], picked_teacher
  )
