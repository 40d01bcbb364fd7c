"""VGG with BatchNorm as defined by RepDistiller (models/vgg.py, the ``*_bn`` variants).

Five blocks of 3×3 convolutions (with bias) + BN + ReLU, 2×2 max pooling after blocks 0, 1
and 2 (after block 3 only for 64×64 inputs, as in the original), global average pooling and
a single linear layer (weights N(0, 0.01), bias 0). The KD literature's "vgg8" is the
configuration S with BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers

VGG_CONFIGS = {
  8: ((64,), (128,), (256,), (512,), (512,)),
  11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
  13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
  16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
  19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _max_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class VGG(nn.Module):
  """RepDistiller's VGG with BatchNorm: ``blocks`` of 3×3 convolution widths."""

  blocks: Sequence[Sequence[int]]
  num_classes: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    input_height = x.shape[1]
    x = x.astype(self.dtype)
    for block_index, block in enumerate(self.blocks):
      for layer_index, width in enumerate(block):
        x = layers.conv(
          width, 3, use_bias=True, dtype=self.dtype, name=f"block{block_index}_conv{layer_index}"
        )(x)
        x = layers.BatchNorm(dtype=self.dtype, name=f"block{block_index}_bn{layer_index}")(x, train)
        x = nn.relu(x)
      if block_index < 3 or (block_index == 3 and input_height == 64):
        x = _max_pool(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="classifier",
      kernel_init=nn.initializers.normal(0.01),
      bias_init=nn.initializers.zeros,
    )(x)
