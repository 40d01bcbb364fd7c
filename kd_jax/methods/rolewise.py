"""Role-wise augmentation (Fu et al. 2020): PBA policies as a preprocess that composes.

Role-wise KD searches one PBA policy schedule for the full-precision teacher (plain
cross-entropy) and another for the low-bit student under KD from that teacher, with the
teacher seeing the student's augmented image. The policy is a preprocess, the third part of
a method recipe: it replaces the standard crop/flip view and composes with any objective and
view (role-wise + CutMix-pick, + backward KD, + Continuation-KD). The population search that
finds the schedules is kd_jax.pba (the same step under ``vmap`` over trials).

The policy is an int32 ``[30, 2]`` array read from ``hparams["policy"]``, so a schedule that
changes the policy between epochs never recompiles the step, and under ``vmap`` every trial
of a population has its own.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kd_jax import augment, policies


@dataclasses.dataclass(frozen=True)
class PolicyPreprocess:
  """uint8 images → PBA policy (+ pad/crop, flip, cutout) → normalised float images.

  Training mode augments with ``hparams["policy"]`` image by image (kd_jax.policies.
  augment_batch: the policy's 0, 1 or 2 operations, then PBA's CIFAR pipeline); evaluation
  mode only normalises. ``fill``: uint8 fill of uncovered and cut-out pixels (PBA: the
  dataset mean).
  """

  mean: tuple
  std: tuple
  fill: tuple
  pad: int = 4
  flip: bool = True
  cutout_size: int = 16
  compute_dtype: object = jnp.float32

  def __call__(self, key, batch, hparams, train: bool):
    images = batch["image"]
    if train:
      images = policies.augment_batch(
        key,
        images,
        hparams["policy"],
        fill=jnp.asarray(self.fill),
        pad=self.pad,
        flip=self.flip,
        cutout_size=self.cutout_size,
      )
    return augment.normalize(images, self.mean, self.std, self.compute_dtype)

  def valid_range(self):
    mean, std = jnp.asarray(self.mean), jnp.asarray(self.std)
    return (0.0 - mean) / std, (1.0 - mean) / std


def policy_values(policy) -> dict:
  """The step's ``hparams`` entry for one epoch's policy (int32 ``[30, 2]``)."""
  policy = jnp.asarray(policy, jnp.int32)
  policies.check_policy(policy)
  return {"policy": policy}
