"""CIFAR ResNets as defined by RepDistiller (models/resnet.py), in Flax Linen.

Depth 6n+2 with basic blocks; three stages of n blocks; a 1×1 convolution + BatchNorm
projection shortcut whenever the stride or the width changes (option B); 3×3 convolutions
without bias; global average pooling; a linear classifier with PyTorch's default init.
``resnet8x4`` and ``resnet32x4`` use widths (32, 64, 128, 256) instead of (16, 16, 32, 64).
Input: NHWC images; output: logits ``[batch, num_classes]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers


class BasicBlock(nn.Module):
  """Two 3×3 convolutions with BatchNorm; a 1×1 projection shortcut on a shape change."""

  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = layers.conv(self.features, 3, self.stride, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(y, train))
    y = layers.conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    y = layers.BatchNorm(dtype=self.dtype, name="bn2")(y, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = layers.conv(
        self.features, 1, self.stride, dtype=self.dtype, name="downsample_conv"
      )(x)
      residual = layers.BatchNorm(dtype=self.dtype, name="downsample_bn")(residual, train)
    return nn.relu(y + residual)


class CifarResNet(nn.Module):
  """RepDistiller's CIFAR ResNet of ``depth`` = 6n + 2 (resnet8 … resnet110, x4)."""

  depth: int
  widths: Sequence[int] = (16, 16, 32, 64)
  num_classes: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...); got {self.depth}.")
    blocks_per_stage = (self.depth - 2) // 6
    x = layers.conv(self.widths[0], 3, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    for stage, width in enumerate(self.widths[1:]):
      for block in range(blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, stride, self.dtype, name=f"layer{stage + 1}_{block}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    fan_in = x.shape[-1]
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="fc",
      kernel_init=layers.torch_linear_kernel_init,
      bias_init=layers.torch_linear_bias_init(fan_in),
    )(x)
