"""Model registry: ``create_model(name, num_classes)``, ``MODEL_NAMES`` and
``MODEL_FAMILIES`` (RepDistiller's CIFAR models, role-wise KD's, torchvision's ImageNet
ResNets, small nets; ``model_family(name)``).

Every model is a Flax Linen module called as ``model.apply(variables, images, train=...)``
on NHWC images, returning logits ``[batch, num_classes]``; models with BatchNorm keep their
running statistics in the ``batch_stats`` collection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

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

# Every model by family: its description (for --help, the docs and error messages) and its
# builders. Names say the family where they could be confused: "resnet50" is RepDistiller's
# CIFAR ResNet-50 (3×3 stride-1 stem), "imagenet_resnet50" torchvision's.
_FAMILIES: dict[str, tuple[str, dict[str, Callable[..., nn.Module]]]] = {
  "cifar": (
    "RepDistiller's CIFAR models (32×32 input, no ImageNet stem; their released "
    "CIFAR-100 teachers load with from_pytorch)",
    {
      **{
        f"resnet{depth}": functools.partial(CifarResNet, depth=depth, widths=_RESNET_WIDTHS)
        for depth in (8, 14, 20, 32, 44, 56, 110)
      },
      "resnet8x4": functools.partial(CifarResNet, depth=8, widths=_RESNET_X4_WIDTHS),
      "resnet32x4": functools.partial(CifarResNet, depth=32, widths=_RESNET_X4_WIDTHS),
      **{
        f"wrn_{depth}_{k}": functools.partial(WideResNet, depth=depth, widen_factor=k)
        for depth, k in ((16, 1), (16, 2), (40, 1), (40, 2))
      },
      **{f"vgg{depth}": functools.partial(VGG, blocks=VGG_CONFIGS[depth]) for depth in VGG_CONFIGS},
      "resnet50": functools.partial(ResNetV2, stage_blocks=(3, 4, 6, 3)),
      # RepDistiller's mobile_half (expansion 6, width 0.5) and ShuffleV2 (net size 1).
      "mobilenetv2": functools.partial(MobileNetV2, width=0.5, expansion=6),
      "shufflenetv2": ShuffleNetV2,
    },
  ),
  # Role-wise KD (Fu et al.): CIFAR ResNet-18 and its DoReFa 2-bit / 4-bit students; the
  # "_narrow" ones (widths 16-32-64-128) are the CPU-scale versions. The quantised blocks
  # add the quantised input on their shortcut as role-kd does; "_fp_shortcut" keeps the
  # full-precision identity shortcut (resnet18.py).
  "rolewise": (
    "role-wise KD's CIFAR ResNet-18 and its DoReFa low-bit students (Fu et al.)",
    {
      "resnet18": ResNet18,
      "resnet18_w2a2": functools.partial(ResNet18, weight_bits=2, activation_bits=2),
      "resnet18_w4a4": functools.partial(ResNet18, weight_bits=4, activation_bits=4),
      "resnet18_narrow": functools.partial(ResNet18, widths=(16, 32, 64, 128)),
      "resnet18_narrow_w2a2": functools.partial(
        ResNet18, widths=(16, 32, 64, 128), weight_bits=2, activation_bits=2
      ),
      "resnet18_w2a2_fp_shortcut": functools.partial(
        ResNet18, weight_bits=2, activation_bits=2, quantised_shortcut=False
      ),
      "resnet18_narrow_w2a2_fp_shortcut": functools.partial(
        ResNet18,
        widths=(16, 32, 64, 128),
        weight_bits=2,
        activation_bits=2,
        quantised_shortcut=False,
      ),
    },
  ),
  # torchvision's ImageNet ResNets (7×7 stride-2 stem and max pool: resnet_imagenet.py).
  "imagenet": (
    "torchvision's ImageNet ResNets (224×224 input, 7×7 stride-2 stem and max "
    "pool; torchvision's weights load with from_pytorch)",
    {
      "imagenet_resnet18": functools.partial(
        ImageNetResNet, block=BasicBlock, stage_blocks=(2, 2, 2, 2)
      ),
      "imagenet_resnet34": functools.partial(
        ImageNetResNet, block=BasicBlock, stage_blocks=(3, 4, 6, 3)
      ),
      "imagenet_resnet50": functools.partial(
        ImageNetResNet, block=Bottleneck, stage_blocks=(3, 4, 6, 3)
      ),
    },
  ),
  "small": (
    "small nets for the embedded 8×8 digits and MNIST",
    {
      "cnn_tiny": functools.partial(SmallCNN, widths=(8, 16)),
      "cnn_small": functools.partial(SmallCNN, widths=(32, 64)),
      "cnn_medium": functools.partial(SmallCNN, widths=(64, 128, 128)),
      "mlp_tiny": functools.partial(MLP, hidden=(16,)),
      "mlp_small": functools.partial(MLP, hidden=(64,)),
    },
  ),
}
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
  name: builder for _, builders in _FAMILIES.values() for name, builder in builders.items()
}

MODEL_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))
# family → (description, its model names)
MODEL_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
  family: (description, tuple(builders)) for family, (description, builders) in _FAMILIES.items()
}
# The largest input side a model with a stride-1 CIFAR stem is meant for: beyond it such a
# model computes its first stage at full resolution (slow, and not what was asked for).
CIFAR_STEM_MAX_SIDE = 64
# The ImageNet model to suggest for a CIFAR-stem model given large images.
_IMAGENET_COUNTERPART = {
  "resnet50": "imagenet_resnet50",
  "resnet18": "imagenet_resnet18",
  "resnet32x4": "imagenet_resnet34",
  "resnet8x4": "imagenet_resnet18",
}


def model_family(name: str) -> str:
  """The family of model ``name``: a key of MODEL_FAMILIES ("cifar", "rolewise", "imagenet",
  "small")."""
  for family, (_, names) in MODEL_FAMILIES.items():
    if name in names:
      return family
  raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}.")


def families_text() -> str:
  """The models listed by family, one paragraph each (for --help)."""
  import textwrap

  return "\n".join(
    textwrap.fill(
      f"{description}: {', '.join(names)}.",
      width=96,
      initial_indent="  ",
      subsequent_indent="      ",
    )
    for description, names in MODEL_FAMILIES.values()
  )


def input_size_warning(name: str, image_shape: Sequence[int]) -> str | None:
  """A warning for a CIFAR-stem model (families "cifar" and "rolewise") fed images larger than
  CIFAR_STEM_MAX_SIDE on a side, naming the ImageNet model to use instead; None otherwise."""
  if model_family(name) not in ("cifar", "rolewise"):
    return None
  side = max(int(image_shape[0]), int(image_shape[1]))
  if side <= CIFAR_STEM_MAX_SIDE:
    return None
  suggestion = _IMAGENET_COUNTERPART.get(
    name.split("_w")[0].replace("_narrow", ""), "imagenet_resnet18 / 34 / 50"
  )
  return (
    f"model {name!r} is a CIFAR network (no 7×7 stride-2 stem and max pool) meant for "
    f"images of at most {CIFAR_STEM_MAX_SIDE}×{CIFAR_STEM_MAX_SIDE}; on {side}×{side} "
    f"images its early layers run at nearly full resolution. For ImageNet-size input use "
    f"the torchvision architecture: {suggestion}."
  )


def create_model(name: str, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
  """Builds the model called ``name``; raises ValueError listing the valid names."""
  if name not in _REGISTRY:
    raise ValueError(
      f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)} "
      "(kd_jax.models.MODEL_FAMILIES lists them by family)."
    )
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int; got {num_classes!r}.")
  return _REGISTRY[name](num_classes=num_classes, dtype=dtype)


def init_variables(model: nn.Module, rng: jax.Array, image_shape: Sequence[int]) -> dict:
  """Initialises ``{"params": ..., "batch_stats": ...}`` for images of ``image_shape`` (HWC).

  ``batch_stats`` is an empty dict for models without BatchNorm, so the training code
  can treat every model the same way.
  """
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def count_parameters(params: Any) -> int:
  """Number of trainable scalars (BatchNorm running statistics excluded, as in PyTorch)."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def from_pytorch(name: str, path: str, num_classes: int | None = None) -> dict:
  """``{"params", "batch_stats"}`` for ``create_model(name, num_classes)`` read from a
  PyTorch file (safetensors or a .pth, never unpickling anything but tensors): torchvision's
  ImageNet ResNets and RepDistiller's CIFAR-100 models (kd_jax.models.pytorch.from_pytorch)."""
  from kd_jax.models import pytorch

  return pytorch.from_pytorch(name, path, num_classes)
