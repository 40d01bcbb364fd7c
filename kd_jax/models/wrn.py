"""Wide ResNets as defined by RepDistiller (models/wrn.py), in Flax Linen.

WRN-d-k: depth 6n+4, widths (16, 16k, 32k, 64k), pre-activation basic blocks. As in the
original, a block whose width changes applies BN-ReLU to its input and feeds that
pre-activated tensor to both the residual branch and the 1×1 shortcut; a block that keeps its
width adds its raw input. Dropout rate 0 (RepDistiller's setting). Linear bias starts at zero.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers


class WideBasicBlock(nn.Module):
  """A pre-activation basic block of the Wide ResNet."""

  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    equal_in_out = x.shape[-1] == self.features
    preact = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    if not equal_in_out:
      x = preact
    y = layers.conv(self.features, 3, self.stride, dtype=self.dtype, name="conv1")(preact)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn2")(y, train))
    y = layers.conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    if equal_in_out:
      shortcut = x
    else:
      shortcut = layers.conv(
        self.features, 1, self.stride, padding=0, dtype=self.dtype, name="shortcut_conv"
      )(x)
    return shortcut + y


class WideResNet(nn.Module):
  """RepDistiller's WRN-``depth``-``widen_factor`` (wrn_16_1 … wrn_40_2)."""

  depth: int
  widen_factor: int
  num_classes: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n+4 (16, 22, 28, 40, ...); got {self.depth}.")
    blocks_per_stage = (self.depth - 4) // 6
    widths = (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
    x = layers.conv(16, 3, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
    for stage, width in enumerate(widths):
      for block in range(blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        x = WideBasicBlock(width, stride, self.dtype, name=f"block{stage + 1}_{block}")(x, train)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="fc",
      kernel_init=layers.torch_linear_kernel_init,
      bias_init=nn.initializers.zeros,
    )(x)
