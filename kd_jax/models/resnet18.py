"""CIFAR ResNet-18 (widths 64-128-256-512) in full precision or DoReFa-quantised.

The CIFAR variant used by role-wise KD (Fu et al. 2020): a 3×3 stem convolution (stride 1,
no max-pool), four stages of two basic blocks (strides 1, 2, 2, 2) with 1×1 projection
shortcuts, global average pooling, a linear classifier. With ``weight_bits`` /
``activation_bits`` below 32, every convolution inside the blocks (shortcuts included) sees
DoReFa-quantised weights and inputs (``kd_jax.quant``); the stem convolution and the
classifier stay in full precision, as in the paper. Full-precision and quantised models
have the same parameter tree, so a low-bit student is initialised from its full-precision
teacher by copying the variables (``init_from``).

The shortcut of a quantised block (``quantised_shortcut``, default True) follows role-kd's
student (bigaidream-projects/role-kd, ``pba/kd/nets/ResNet.py``: ``ResBlock`` with
``scope='Student'`` and its ``activate`` = DoReFa's activation quantiser after a clip to
[0, 1]): the block first replaces its input by the clipped, quantised activation, and
that one tensor feeds the first convolution, the 1×1 projection and the identity
shortcut, so ``relu(bn2(conv2(·)) + q(x))`` adds the quantised input (values in
{0, 1/3, 2/3, 1} at 2 bits), never the full-precision one. We follow it because that is
the network whose accuracy the paper reports, and because it keeps every tensor between
blocks low-bit (the point of a 2-bit network). ``quantised_shortcut=False`` keeps our
earlier form (each convolution quantises its own input, the identity shortcut adds the
full-precision block input); the model names ``*_w2a2_fp_shortcut`` select it.
Full-precision models are the same under either setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import quant
from kd_jax.models import layers


class QuantConv(nn.Module):
  """A convolution on DoReFa-quantised input and weights (plain conv at 32 bits)."""

  features: int
  kernel: int
  stride: int = 1
  weight_bits: int = 32
  activation_bits: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    pad = self.kernel // 2
    kernel = self.param(
      "kernel",
      layers.conv_kernel_init,
      (self.kernel, self.kernel, x.shape[-1], self.features),
      jnp.float32,
    )
    if self.activation_bits < 32:
      x = quant.dorefa_activations(x, self.activation_bits)
    kernel = quant.dorefa_weights(kernel, self.weight_bits)
    return nn.Conv(
      self.features,
      (self.kernel,) * 2,
      strides=(self.stride,) * 2,
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      dtype=self.dtype,
    ).apply({"params": {"kernel": kernel}}, x.astype(self.dtype))


class QuantBasicBlock(nn.Module):
  """A basic block; below 32 activation bits with ``quantised_shortcut`` its input is
  clipped and quantised once and that tensor feeds the convolutions and the shortcut."""

  features: int
  stride: int
  weight_bits: int
  activation_bits: int
  dtype: Any = jnp.float32
  quantised_shortcut: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    if self.quantised_shortcut and self.activation_bits < 32:
      # The convolutions quantise it again: Q_k is idempotent on its own grid, bit for bit.
      x = quant.dorefa_activations(x, self.activation_bits)

    def qconv(features, kernel, stride, name):
      return QuantConv(
        features, kernel, stride, self.weight_bits, self.activation_bits, self.dtype, name=name
      )

    y = qconv(self.features, 3, self.stride, "conv1")(x)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(y, train))
    y = qconv(self.features, 3, 1, "conv2")(y)
    y = layers.BatchNorm(dtype=self.dtype, name="bn2")(y, train)
    residual = x
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = qconv(self.features, 1, self.stride, "downsample_conv")(x)
      residual = layers.BatchNorm(dtype=self.dtype, name="downsample_bn")(residual, train)
    return nn.relu(y + residual)


class ResNet18(nn.Module):
  """The CIFAR ResNet-18, full precision or with DoReFa-quantised blocks."""

  widths: Sequence[int] = (64, 128, 256, 512)
  weight_bits: int = 32
  activation_bits: int = 32
  num_classes: int = 100
  dtype: Any = jnp.float32
  quantised_shortcut: bool = True  # role-kd's block; False: full-precision identity shortcut

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.conv(self.widths[0], 3, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    for stage, width in enumerate(self.widths):
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        x = QuantBasicBlock(
          width,
          stride,
          self.weight_bits,
          self.activation_bits,
          self.dtype,
          self.quantised_shortcut,
          name=f"layer{stage + 1}_{block}",
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      name="fc",
      kernel_init=layers.torch_linear_kernel_init,
      bias_init=layers.torch_linear_bias_init(x.shape[-1]),
    )(x)


def init_from(teacher_variables: dict, student_template: dict) -> dict:
  """A quantised student's variables copied from its full-precision twin's (checked to have
  the same tree and shapes: the same widths)."""
  same = jax.tree.structure(teacher_variables) == jax.tree.structure(student_template) and all(
    a.shape == b.shape
    for a, b in zip(jax.tree.leaves(teacher_variables), jax.tree.leaves(student_template))
  )
  if not same:
    raise ValueError(
      "the teacher's variables do not fit the student: initialising a "
      "quantised ResNet-18 from its teacher needs the same widths and classes."
    )
  return jax.tree.map(jnp.array, teacher_variables)
