"""torchvision's ImageNet ResNets (resnet18, resnet34, resnet50), layer for layer.

The stem is a 7×7 stride-2 convolution (padding 3), BatchNorm, ReLU and a 3×3 stride-2 max
pool (padding 1); four stages of basic blocks (18, 34: two 3×3 convolutions) or bottleneck
blocks (50: 1×1, 3×3, 1×1 with expansion 4, the stride on the 3×3 as torchvision's "v1.5"),
widths 64-128-256-512, a 1×1 convolution + BatchNorm shortcut where the shape changes;
global average pooling and a linear classifier. Every padding is explicit and symmetric,
as PyTorch pads (Flax's "SAME" pads a strided layer asymmetrically, which moves the logits
by about 1e-1); BatchNorm has PyTorch's eps 1e-5 and momentum 0.1 (kd_jax.models.layers).
Parameter counts with 1,000 classes: 11,689,512 / 21,797,672 / 25,557,032, torchvision's.

Module names follow torchvision's state-dict keys (``layer1_0`` for ``layer1.0``,
``downsample_conv`` / ``downsample_bn`` for ``downsample.0`` / ``downsample.1``, ``fc``), so
a converted checkpoint maps name for name.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers

# torchvision's basic block is RepDistiller's CIFAR one (two 3×3 convolutions, a 1×1
# projection where the shape changes), with the same module names.
from kd_jax.models.resnet_cifar import BasicBlock


class Bottleneck(nn.Module):
  """torchvision's v1.5 bottleneck: 1×1, 3×3 (with the stride), 1×1 × 4 channels."""

  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = layers.conv(self.planes, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(y, train))
    y = layers.conv(self.planes, 3, self.stride, dtype=self.dtype, name="conv2")(y)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn2")(y, train))
    y = layers.conv(4 * self.planes, 1, dtype=self.dtype, name="conv3")(y)
    y = layers.BatchNorm(dtype=self.dtype, name="bn3")(y, train)
    residual = x
    if self.stride != 1 or x.shape[-1] != 4 * self.planes:  # torchvision's downsample
      residual = layers.conv(
        4 * self.planes, 1, self.stride, dtype=self.dtype, name="downsample_conv"
      )(x)
      residual = layers.BatchNorm(dtype=self.dtype, name="downsample_bn")(residual, train)
    return nn.relu(y + residual)


class ImageNetResNet(nn.Module):
  """torchvision's ResNet; ``block`` BasicBlock or Bottleneck, ``stage_blocks`` per stage."""

  block: Any = BasicBlock
  stage_blocks: tuple = (2, 2, 2, 2)
  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv(64, 7, 2, padding=3, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    # Flax leaves max_pool's padding unannotated, so it reads as a str (its default's type);
    # it takes (low, high) pairs per spatial dimension too.
    padding = ((1, 1), (1, 1))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=padding)  # pyright: ignore[reportArgumentType]
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), self.stage_blocks)):
      for index in range(blocks):
        stride = 2 if stage > 0 and index == 0 else 1
        x = self.block(planes, stride, self.dtype, name=f"layer{stage + 1}_{index}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="fc",
      kernel_init=layers.torch_linear_kernel_init,
      bias_init=layers.torch_linear_bias_init(x.shape[-1]),
    )(x)
