"""The CIFAR ResNet-50 of RepDistiller (models/resnetv2.py): ImageNet widths, CIFAR stem.

A 3×3 stride-1 stem with 64 channels and no max pooling, four stages of bottleneck blocks
(3, 4, 6, 3) with widths 64-128-256-512 and expansion 4, projection shortcuts (1×1 conv + BN)
where the shape changes, global average pooling, linear classifier (PyTorch default init).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers


class Bottleneck(nn.Module):
  """A bottleneck block: 1×1, 3×3 (with the stride), 1×1 to 4 × ``planes`` channels."""

  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    out_channels = 4 * self.planes
    y = layers.conv(self.planes, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(y, train))
    y = layers.conv(self.planes, 3, self.stride, dtype=self.dtype, name="conv2")(y)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn2")(y, train))
    y = layers.conv(out_channels, 1, dtype=self.dtype, name="conv3")(y)
    y = layers.BatchNorm(dtype=self.dtype, name="bn3")(y, train)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_channels:
      shortcut = layers.conv(
        out_channels, 1, self.stride, padding=0, dtype=self.dtype, name="shortcut_conv"
      )(x)
      shortcut = layers.BatchNorm(dtype=self.dtype, name="shortcut_bn")(shortcut, train)
    return nn.relu(y + shortcut)


class ResNetV2(nn.Module):
  """RepDistiller's CIFAR ResNet-50: bottleneck stages (3, 4, 6, 3), a CIFAR stem."""

  stage_blocks: tuple = (3, 4, 6, 3)
  num_classes: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv(64, 3, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), self.stage_blocks)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = Bottleneck(planes, stride, self.dtype, name=f"layer{stage + 1}_{block}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="linear",
      kernel_init=layers.torch_linear_kernel_init,
      bias_init=layers.torch_linear_bias_init(x.shape[-1]),
    )(x)
