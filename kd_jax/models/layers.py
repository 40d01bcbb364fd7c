"""Layers and initialisers that reproduce PyTorch's conventions exactly.

The bundled models are meant to be compared with the PyTorch originals (RepDistiller's
CIFAR definitions), weight for weight. Two PyTorch conventions differ from Flax's defaults:

  * BatchNorm updates its running variance with the *unbiased* batch variance, with
    momentum 0.1 meaning ``running = 0.9·running + 0.1·batch``; Flax uses the biased one.
  * ``nn.Linear`` draws weight and bias from U(−1/√fan_in, 1/√fan_in).

Padding is always explicit: PyTorch pads symmetrically, while Flax's "SAME" pads a stride-2
convolution asymmetrically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer
from jax.typing import DTypeLike

# PyTorch kaiming_normal_(mode="fan_out", nonlinearity="relu") = N(0, 2 / (k·k·out)).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch nn.Linear default weight init: U(−1/√fan_in, 1/√fan_in).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias_init(
  fan_in: int,
) -> Callable[[jax.Array, Sequence[int], DTypeLike], jax.Array]:
  """PyTorch nn.Linear default bias init, U(−1/√fan_in, 1/√fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """Batch normalisation with PyTorch's semantics (see module docstring).

  Training mode normalises with the batch mean and biased variance, computed over every
  axis but the last; under ``jax.jit`` with a sharded batch these are global-batch
  statistics (synchronised BatchNorm), so results do not depend on the device count.
  Inference mode uses the running statistics stored in the ``batch_stats`` collection.
  """

  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        count = math.prod(x.shape[:-1])
        unbiased_var = var * count / max(count - 1, 1)
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased_var
    else:
      mean, var = running_mean.value, running_var.value
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    y = x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)
    return y.astype(self.dtype)


def conv(
  features: int,
  kernel: int,
  stride: int = 1,
  padding: int | None = None,
  use_bias: bool = False,
  dtype: DTypeLike = jnp.float32,
  name: str | None = None,
  bias_init: Initializer = nn.initializers.zeros,
) -> nn.Conv:
  """A square convolution with PyTorch's symmetric padding (default ``kernel // 2``)."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    dtype=dtype,
    kernel_init=conv_kernel_init,
    bias_init=bias_init,
    name=name,
  )
