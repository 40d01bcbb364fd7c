"""Model registry: ``create_model(name, num_classes)`` and ``MODEL_NAMES``.

Every model is a Flax Linen module called as ``model.apply(variables, images, train=...)``
on NHWC images, returning logits ``[batch, num_classes]``; models with BatchNorm keep their
running statistics in the ``batch_stats`` collection.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.models.mobile import MobileNetV2, ShuffleNetV2
from kd_jax.models.resnet18 import ResNet18
from kd_jax.models.resnet_cifar import CifarResNet
from kd_jax.models.resnet_imagenet import BasicBlock, Bottleneck, ImageNetResNet
from kd_jax.models.resnet_v2 import ResNetV2
from kd_jax.models.small import MLP, SmallCNN
from kd_jax.models.vgg import VGG, VGG_CONFIGS
from kd_jax.models.wrn import WideResNet

_RESNET_WIDTHS = (16, 16, 32, 64)
_RESNET_X4_WIDTHS = (32, 64, 128, 256)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    **{f"resnet{depth}": functools.partial(CifarResNet, depth=depth, widths=_RESNET_WIDTHS)
       for depth in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": functools.partial(CifarResNet, depth=8, widths=_RESNET_X4_WIDTHS),
    "resnet32x4": functools.partial(CifarResNet, depth=32, widths=_RESNET_X4_WIDTHS),
    **{f"wrn_{depth}_{k}": functools.partial(WideResNet, depth=depth, widen_factor=k)
       for depth, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{f"vgg{depth}": functools.partial(VGG, blocks=VGG_CONFIGS[depth]) for depth in VGG_CONFIGS},
    "resnet50": functools.partial(ResNetV2, stage_blocks=(3, 4, 6, 3)),
    # RepDistiller's mobile_half (expansion 6, width 0.5) and ShuffleV2 (net size 1).
    "mobilenetv2": functools.partial(MobileNetV2, width=0.5, expansion=6),
    "shufflenetv2": ShuffleNetV2,
    # Role-wise KD (Fu et al.): CIFAR ResNet-18 and its DoReFa 2-bit / 4-bit students; the
    # "_narrow" ones (widths 16-32-64-128) are the CPU-scale versions. The quantised blocks
    # add the quantised input on their shortcut as role-kd does; "_fp_shortcut" keeps the
    # full-precision identity shortcut (resnet18.py).
    "resnet18": ResNet18,
    "resnet18_w2a2": functools.partial(ResNet18, weight_bits=2, activation_bits=2),
    "resnet18_w4a4": functools.partial(ResNet18, weight_bits=4, activation_bits=4),
    "resnet18_narrow": functools.partial(ResNet18, widths=(16, 32, 64, 128)),
    "resnet18_narrow_w2a2": functools.partial(ResNet18, widths=(16, 32, 64, 128),
                                              weight_bits=2, activation_bits=2),
    "resnet18_w2a2_fp_shortcut": functools.partial(ResNet18, weight_bits=2, activation_bits=2,
                                                   quantised_shortcut=False),
    "resnet18_narrow_w2a2_fp_shortcut": functools.partial(
        ResNet18, widths=(16, 32, 64, 128), weight_bits=2, activation_bits=2,
        quantised_shortcut=False),
    # torchvision's ImageNet ResNets (7×7 stride-2 stem and max pool: resnet_imagenet.py).
    "imagenet_resnet18": functools.partial(ImageNetResNet, block=BasicBlock,
                                           stage_blocks=(2, 2, 2, 2)),
    "imagenet_resnet34": functools.partial(ImageNetResNet, block=BasicBlock,
                                           stage_blocks=(3, 4, 6, 3)),
    "imagenet_resnet50": functools.partial(ImageNetResNet, block=Bottleneck,
                                           stage_blocks=(3, 4, 6, 3)),
    # Small nets for the embedded 8×8 digits and MNIST.
    "cnn_tiny": functools.partial(SmallCNN, widths=(8, 16)),
    "cnn_small": functools.partial(SmallCNN, widths=(32, 64)),
    "cnn_medium": functools.partial(SmallCNN, widths=(64, 128, 128)),
    "mlp_tiny": functools.partial(MLP, hidden=(16,)),
    "mlp_small": functools.partial(MLP, hidden=(64,)),
}

MODEL_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))


def create_model(name: str, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
  """Builds the model called ``name``; raises ValueError listing the valid names."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}.")
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int; got {num_classes!r}.")
  return _REGISTRY[name](num_classes=num_classes, dtype=dtype)


def init_variables(model: nn.Module, rng: jax.Array, image_shape) -> dict:
  """Initialises ``{"params": ..., "batch_stats": ...}`` for images of ``image_shape`` (HWC).

  ``batch_stats`` is an empty dict for models without BatchNorm, so the training code
  can treat every model the same way.
  """
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def count_parameters(params) -> int:
  """Number of trainable scalars (BatchNorm running statistics excluded, as in PyTorch)."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def from_pytorch(name: str, path: str, num_classes: int | None = None) -> dict:
  """``{"params", "batch_stats"}`` for ``create_model(name, num_classes)`` read from a
  PyTorch file (safetensors or a zip-format .pth, never unpickling anything but tensors):
  kd_jax.models.pytorch.from_pytorch."""
  from kd_jax.models import pytorch
  return pytorch.from_pytorch(name, path, num_classes)
