"""Preprocesses: host batch → model inputs, on device inside the compiled step.

A preprocess is ``(key, batch, hparams, train) -> inputs``. ``batch`` is what the host
delivers (uint8 images, or token arrays); ``hparams`` the step's per-epoch arrays (a policy
preprocess reads its policy there); ``key`` is None in evaluation. The third part of a
method recipe besides the objective and the view (DESIGN.md): the standard crop/flip view
here, PBA policies in kd_jax.methods.rolewise, nothing for text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from kd_jax import augment
from kd_jax.models.adapters import TEXT_FIELDS


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """uint8 ``batch["image"]`` → normalised float images.

  Training mode applies the standard view (zero-pad + random crop, horizontal flip) before
  normalising; evaluation mode only normalises.
  """
  mean: tuple
  std: tuple
  crop_pad: int = 0
  flip: bool = False
  compute_dtype: Any = jnp.float32

  def __call__(self, key, batch, hparams, train: bool):
    del hparams
    images = batch["image"]
    if train and (self.crop_pad or self.flip):
      images = augment.random_crop_flip(key, images, pad=self.crop_pad, flip=self.flip)
    return augment.normalize(images, self.mean, self.std, self.compute_dtype)

  def valid_range(self):
    """Per-channel bounds of normalised pixels: where pixel values 0 and 255 land."""
    mean, std = jnp.asarray(self.mean), jnp.asarray(self.std)
    return (0.0 - mean) / std, (1.0 - mean) / std


def image_preprocess(mean, std, crop_pad: int = 0, flip: bool = False,
                     compute_dtype=jnp.float32) -> ImagePreprocess:
  return ImagePreprocess(tuple(mean), tuple(std), crop_pad, flip, compute_dtype)


@dataclasses.dataclass(frozen=True)
class TextPreprocess:
  """Token batches go in as they are: ``{input_ids, token_type_ids, attention_mask}``."""

  def __call__(self, key, batch, hparams, train: bool):
    del key, hparams, train
    return {k: batch[k] for k in TEXT_FIELDS}

  def valid_range(self):
    return None
