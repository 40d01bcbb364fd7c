"""On-device, jittable image views.

All functions take a batch ``[batch, height, width, channels]`` of any numeric dtype and an
explicit PRNG key, keep static shapes, and run inside the compiled training step, so the
host only ever ships uint8 batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_images(name: str, images) -> None:
  if jnp.ndim(images) != 4:
    raise ValueError(f"{name} must have shape [batch, height, width, channels]; "
                     f"got shape {jnp.shape(images)}.")


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4,
                     flip: bool = True) -> jax.Array:
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

  Returns:
    Array of the same shape and dtype as ``images``.
  """
  _check_images("images", images)
  if not isinstance(pad, int) or pad < 0:
    raise ValueError(f"pad must be a non-negative Python int; got {pad!r}.")
  batch, height, width, channels = images.shape
  crop_key, flip_key = jax.random.split(key)
  if pad > 0:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1)

    def crop(image, offset):
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    images = jax.vmap(crop)(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1, :], images)
  return images


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
  """Maps raw pixels (0..255) to ``(x / 255 − mean) / std`` per channel, in ``dtype``."""
  _check_images("images", images)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)
