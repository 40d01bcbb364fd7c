"""Preprocesses: host batch → model inputs, on device inside the compiled step.

A preprocess is ``(key, batch, hparams, train) -> inputs``. ``batch`` is what the host
delivers (uint8 images, or token arrays); ``hparams`` the step's per-epoch arrays (a policy
preprocess reads its policy there); ``key`` is None in evaluation. The third part of a
method recipe besides the objective and the view (DESIGN.md): the standard crop/flip view
here, PBA policies in kd_jax.methods.rolewise, nothing for text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from kd_jax import augment, policies
from kd_jax.models.adapters import TEXT_FIELDS

# fold_in(step key, this) seeds AutoAugment and Cutout in the preprocess: far from the small
# indices the step folds in for the view (1) and dropout (0, 2).
STANDARD_STAGES_KEY = 0x5EEDA1


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """uint8 ``batch["image"]`` → normalised float images.

  Training mode applies the standard augmentation, per image: zero-pad + random crop and
  horizontal flip, then an AutoAugment policy (``autoaugment``: "cifar10" | "imagenet";
  "" none) or RandAugment (``randaugment_ops`` N > 0 operations at bin
  ``randaugment_magnitude`` M of 31) on the pixels, normalisation, and Cutout of
  ``cutout_size`` pixels painted in the mean colour (0 after normalisation) — torchvision's
  usual CIFAR order. Evaluation mode only normalises.
  """

  mean: tuple
  std: tuple
  crop_pad: int = 0
  flip: bool = False
  compute_dtype: Any = jnp.float32
  cutout_size: int = 0
  autoaugment: str = ""
  randaugment_ops: int = 0
  randaugment_magnitude: int = 9

  def __call__(
    self, key: jax.Array, batch: Mapping[str, jax.Array], hparams: Any, train: bool
  ) -> jax.Array:
    del hparams
    images = batch["image"]
    if not train:
      return augment.normalize(images, self.mean, self.std, self.compute_dtype)
    # Crop/flip keep the step's key itself (runs without the other stages draw as before);
    # the other stages draw from a key of their own, apart from the small fold_in / split
    # indices the step gives the view and dropout (kd_jax.train.step).
    if self.crop_pad or self.flip:
      images = augment.random_crop_flip(key, images, pad=self.crop_pad, flip=self.flip)
    policy_key, cutout_key = jax.random.split(jax.random.fold_in(key, STANDARD_STAGES_KEY))
    if self.autoaugment:
      images = policies.autoaugment_batch(policy_key, images, self.autoaugment)
    if self.randaugment_ops:
      images = policies.randaugment_batch(
        policy_key, images, self.randaugment_ops, self.randaugment_magnitude
      )
    images = augment.normalize(images, self.mean, self.std, self.compute_dtype)
    if self.cutout_size:
      images = augment.cutout(cutout_key, images, self.cutout_size)
    return images

  def valid_range(self) -> tuple[jax.Array, jax.Array]:
    """Per-channel bounds of normalised pixels: where pixel values 0 and 255 land."""
    mean, std = jnp.asarray(self.mean), jnp.asarray(self.std)
    return (0.0 - mean) / std, (1.0 - mean) / std


def image_preprocess(
  mean: Sequence[float],
  std: Sequence[float],
  crop_pad: int = 0,
  flip: bool = False,
  compute_dtype: DTypeLike = jnp.float32,
  *,
  cutout_size: int = 0,
  autoaugment: str = "",
  randaugment_ops: int = 0,
  randaugment_magnitude: int = 9,
) -> ImagePreprocess:
  """The standard image preprocess (``ImagePreprocess``), its options checked."""
  if autoaugment:
    policies.encode_autoaugment(autoaugment)  # an unknown name fails here, not in the step
  policies.check_randaugment(randaugment_ops, randaugment_magnitude)
  if autoaugment and randaugment_ops:
    raise ValueError(
      f"the standard augmentation takes AutoAugment ({autoaugment!r}) or RandAugment "
      f"({randaugment_ops} ops), not both: set autoaugment='' or randaugment_ops=0."
    )
  if cutout_size < 0 or cutout_size == 1:
    raise ValueError(
      f"cutout_size must be 0 (no Cutout) or ≥ 2 pixels (the square is "
      f"centre ± size//2); got {cutout_size}."
    )
  return ImagePreprocess(
    tuple(mean),
    tuple(std),
    crop_pad,
    flip,
    compute_dtype,
    cutout_size,
    autoaugment,
    randaugment_ops,
    randaugment_magnitude,
  )


@dataclasses.dataclass(frozen=True)
class TextPreprocess:
  """Token batches go in as they are: ``{input_ids, token_type_ids, attention_mask}``."""

  def __call__(
    self, key: jax.Array, batch: Mapping[str, jax.Array], hparams: Any, train: bool
  ) -> dict[str, jax.Array]:
    del key, hparams, train
    return {k: batch[k] for k in TEXT_FIELDS}

  def valid_range(self) -> None:
    return None
