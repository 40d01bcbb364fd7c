"""The efficient students of the KD tables, as RepDistiller defines them for CIFAR.

``MobileNetV2`` (RepDistiller ``mobile_half``: expansion 6, width 0.5): a stride-2 3×3 stem,
seven stages of inverted residuals (every block, even with expansion 1, has its 1×1
expansion convolution), a 1×1 convolution to 1280 channels, global average pooling and a
linear classifier (weights N(0, 0.01), bias 0).

``ShuffleNetV2`` (RepDistiller ``ShuffleV2``, net size 1): a 1×1 stem to 24 channels, three
stages of (down-sampling block + 3, 7, 3 basic blocks) with channel split and shuffle, a 1×1
convolution to 1024 channels, global average pooling, linear classifier. RepDistiller keeps
PyTorch's default initialisation here (uniform ±1/√fan_in), and so do we.

Depthwise convolutions are ``nn.Conv`` with ``feature_group_count`` equal to the channels.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.models import layers

MOBILENETV2_STAGES = (  # (expansion t, channels c, blocks n, first stride s), before width
  (1, 16, 1, 1),
  (6, 24, 2, 1),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
)


def _conv(
  features,
  kernel,
  stride=1,
  groups=1,
  dtype=jnp.float32,
  name=None,
  kernel_init=layers.conv_kernel_init,
):
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    feature_group_count=groups,
    use_bias=False,
    dtype=dtype,
    kernel_init=kernel_init,
    name=name,
  )


class InvertedResidual(nn.Module):
  """MobileNetV2's block: 1×1 expansion, 3×3 depthwise, 1×1 projection; + x at stride 1."""

  features: int
  stride: int
  expansion: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    hidden = x.shape[-1] * self.expansion
    y = _conv(hidden, 1, dtype=self.dtype, name="expand_conv")(x)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="expand_bn")(y, train))
    y = _conv(hidden, 3, self.stride, groups=hidden, dtype=self.dtype, name="depthwise_conv")(y)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="depthwise_bn")(y, train))
    y = _conv(self.features, 1, dtype=self.dtype, name="project_conv")(y)
    y = layers.BatchNorm(dtype=self.dtype, name="project_bn")(y, train)
    if self.stride == 1 and x.shape[-1] == self.features:
      return x + y
    return y


class MobileNetV2(nn.Module):
  """RepDistiller's CIFAR MobileNetV2 (``mobile_half``: width 0.5, expansion 6)."""

  width: float = 0.5
  expansion: int = 6
  num_classes: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = _conv(int(32 * self.width), 3, 2, dtype=self.dtype, name="stem_conv")(x.astype(self.dtype))
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="stem_bn")(x, train))
    for stage, (t, c, n, s) in enumerate(MOBILENETV2_STAGES):
      for block in range(n):
        x = InvertedResidual(
          int(c * self.width),
          s if block == 0 else 1,
          self.expansion if t != 1 else 1,
          self.dtype,
          name=f"stage{stage}_{block}",
        )(x, train)
    last = int(1280 * self.width) if self.width > 1.0 else 1280
    x = _conv(last, 1, dtype=self.dtype, name="head_conv")(x)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="head_bn")(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="classifier",
      kernel_init=nn.initializers.normal(0.01),
      bias_init=nn.initializers.zeros,
    )(x)


def channel_shuffle(x: jax.Array, groups: int = 2) -> jax.Array:
  """NHWC version of ShuffleNet's shuffle: channel g·(C/g)+i moves to i·g+g'."""
  *spatial, channels = x.shape
  x = x.reshape(*spatial, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*spatial, channels)


_TORCH_DEFAULT_CONV_INIT = layers.torch_linear_kernel_init  # U(±1/√fan_in) for convs too


class ShuffleBasicBlock(nn.Module):
  """ShuffleNetV2's block: half the channels through the branch, then shuffled."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    half = x.shape[-1] // 2
    kept, y = x[..., :half], x[..., half:]
    init = _TORCH_DEFAULT_CONV_INIT
    y = _conv(half, 1, dtype=self.dtype, name="conv1", kernel_init=init)(y)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(y, train))
    y = _conv(half, 3, groups=half, dtype=self.dtype, name="conv2", kernel_init=init)(y)
    y = layers.BatchNorm(dtype=self.dtype, name="bn2")(y, train)
    y = _conv(half, 1, dtype=self.dtype, name="conv3", kernel_init=init)(y)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn3")(y, train))
    return channel_shuffle(jnp.concatenate([kept, y], axis=-1))


class ShuffleDownBlock(nn.Module):
  """ShuffleNetV2's stride-2 block: two branches concatenated, then shuffled."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    mid = self.features // 2
    channels = x.shape[-1]
    init = _TORCH_DEFAULT_CONV_INIT
    left = _conv(channels, 3, 2, groups=channels, dtype=self.dtype, name="conv1", kernel_init=init)(
      x
    )
    left = layers.BatchNorm(dtype=self.dtype, name="bn1")(left, train)
    left = _conv(mid, 1, dtype=self.dtype, name="conv2", kernel_init=init)(left)
    left = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn2")(left, train))
    right = _conv(mid, 1, dtype=self.dtype, name="conv3", kernel_init=init)(x)
    right = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn3")(right, train))
    right = _conv(mid, 3, 2, groups=mid, dtype=self.dtype, name="conv4", kernel_init=init)(right)
    right = layers.BatchNorm(dtype=self.dtype, name="bn4")(right, train)
    right = _conv(mid, 1, dtype=self.dtype, name="conv5", kernel_init=init)(right)
    right = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn5")(right, train))
    return channel_shuffle(jnp.concatenate([left, right], axis=-1))


class ShuffleNetV2(nn.Module):
  """RepDistiller's CIFAR ShuffleNetV2 (``ShuffleV2``)."""

  stage_channels: tuple = (116, 232, 464, 1024)
  stage_blocks: tuple = (3, 7, 3)
  num_classes: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    init = _TORCH_DEFAULT_CONV_INIT
    x = _conv(24, 1, dtype=self.dtype, name="conv1", kernel_init=init)(x.astype(self.dtype))
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    for stage, (channels, blocks) in enumerate(zip(self.stage_channels, self.stage_blocks)):
      x = ShuffleDownBlock(channels, self.dtype, name=f"layer{stage + 1}_down")(x, train)
      for block in range(blocks):
        x = ShuffleBasicBlock(self.dtype, name=f"layer{stage + 1}_{block}")(x, train)
    x = _conv(self.stage_channels[-1], 1, dtype=self.dtype, name="conv2", kernel_init=init)(x)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn2")(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="linear",
      kernel_init=layers.torch_linear_kernel_init,
      bias_init=layers.torch_linear_bias_init(x.shape[-1]),
    )(x)
