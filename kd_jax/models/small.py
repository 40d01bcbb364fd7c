"""Small networks for the embedded data sets (8×8 digits, 28×28 MNIST) and for tests.

``SmallCNN``: 3×3 convolutions (no bias) + BN + ReLU, stride 2 on every stage after the
first, global average pooling, linear classifier. ``MLP``: flatten, hidden ReLU layers,
linear classifier. Same PyTorch-style initialisers as the CIFAR models, so the PyTorch side
can mirror them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers


def _dense(features, fan_in, dtype, name):
  return nn.Dense(
    features,
    dtype=dtype,
    name=name,
    kernel_init=layers.torch_linear_kernel_init,
    bias_init=layers.torch_linear_bias_init(fan_in),
  )


class SmallCNN(nn.Module):
  """3×3 convolutions + BatchNorm + ReLU per width, average pooling, a linear head."""

  widths: Sequence[int] = (32, 64)
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for index, width in enumerate(self.widths):
      x = layers.conv(width, 3, 1 if index == 0 else 2, dtype=self.dtype, name=f"conv{index}")(x)
      x = nn.relu(layers.BatchNorm(dtype=self.dtype, name=f"bn{index}")(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return _dense(self.num_classes, x.shape[-1], self.dtype, "fc")(x)


class MLP(nn.Module):
  """Flatten, hidden ReLU layers of the given widths, a linear head."""

  hidden: Sequence[int] = (64,)
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    x = x.astype(self.dtype).reshape(x.shape[0], -1)
    for index, width in enumerate(self.hidden):
      x = nn.relu(_dense(width, x.shape[-1], self.dtype, f"dense{index}")(x))
    return _dense(self.num_classes, x.shape[-1], self.dtype, "fc")(x)
