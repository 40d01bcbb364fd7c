"""The RepDistiller CIFAR models and the small nets, written in PyTorch.

Written to compute what RepDistiller's ``models/`` compute, with module names chosen to
mirror kd_jax's Flax modules one to one, so ``convert.py`` can map weights by name.
Layout is NCHW as usual in PyTorch; the converter transposes.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from kd_jax.models.vgg import VGG_CONFIGS


def _conv(cin, cout, kernel, stride=1, padding=None, bias=False):
  padding = kernel // 2 if padding is None else padding
  return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias)


def _init_conv_bn(module: nn.Module) -> None:
  for m in module.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.ones_(m.weight)
      nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = _conv(cout, cout, 3)
    self.bn2 = nn.BatchNorm2d(cout)
    self.has_projection = stride != 1 or cin != cout
    if self.has_projection:
      self.downsample_conv = _conv(cin, cout, 1, stride)
      self.downsample_bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    residual = self.downsample_bn(self.downsample_conv(x)) if self.has_projection else x
    return F.relu(y + residual)


class CifarResNet(nn.Module):
  def __init__(self, depth, widths=(16, 16, 32, 64), num_classes=100):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = _conv(3, widths[0], 3)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.block_names = []
    cin = widths[0]
    for stage, width in enumerate(widths[1:]):
      for block in range(n):
        name = f"layer{stage + 1}_{block}"
        self.add_module(name, BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
        self.block_names.append(name)
        cin = width
    self.fc = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return self.fc(x.mean((2, 3)))


class WideBasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.equal_in_out = cin == cout
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn2 = nn.BatchNorm2d(cout)
    self.conv2 = _conv(cout, cout, 3)
    if not self.equal_in_out:
      self.shortcut_conv = _conv(cin, cout, 1, stride, padding=0)

  def forward(self, x):
    preact = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(preact))))
    return (x if self.equal_in_out else self.shortcut_conv(preact)) + y


class WideResNet(nn.Module):
  def __init__(self, depth, widen_factor, num_classes=100):
    super().__init__()
    n = (depth - 4) // 6
    self.conv1 = _conv(3, 16, 3)
    self.block_names = []
    cin = 16
    for stage, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
      for block in range(n):
        name = f"block{stage + 1}_{block}"
        self.add_module(name, WideBasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
        self.block_names.append(name)
        cin = width
    self.bn1 = nn.BatchNorm2d(cin)
    self.fc = nn.Linear(cin, num_classes)
    _init_conv_bn(self)
    nn.init.zeros_(self.fc.bias)

  def forward(self, x):
    x = self.conv1(x)
    for name in self.block_names:
      x = getattr(self, name)(x)
    return self.fc(F.relu(self.bn1(x)).mean((2, 3)))


class VGG(nn.Module):
  def __init__(self, blocks, num_classes=100):
    super().__init__()
    self.layer_names = []
    cin = 3
    for b, block in enumerate(blocks):
      names = []
      for i, width in enumerate(block):
        self.add_module(f"block{b}_conv{i}", _conv(cin, width, 3, bias=True))
        self.add_module(f"block{b}_bn{i}", nn.BatchNorm2d(width))
        names.append((f"block{b}_conv{i}", f"block{b}_bn{i}"))
        cin = width
      self.layer_names.append(names)
    self.classifier = nn.Linear(512, num_classes)
    _init_conv_bn(self)
    nn.init.normal_(self.classifier.weight, 0, 0.01)
    nn.init.zeros_(self.classifier.bias)

  def forward(self, x):
    height = x.shape[2]
    for b, names in enumerate(self.layer_names):
      for conv_name, bn_name in names:
        x = F.relu(getattr(self, bn_name)(getattr(self, conv_name)(x)))
      if b < 3 or (b == 3 and height == 64):
        x = F.max_pool2d(x, 2, 2)
    return self.classifier(x.mean((2, 3)))


class SmallCNN(nn.Module):
  def __init__(self, widths, num_classes=10, in_channels=1):
    super().__init__()
    self.count = len(widths)
    cin = in_channels
    for i, width in enumerate(widths):
      self.add_module(f"conv{i}", _conv(cin, width, 3, 1 if i == 0 else 2))
      self.add_module(f"bn{i}", nn.BatchNorm2d(width))
      cin = width
    self.fc = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    for i in range(self.count):
      x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
    return self.fc(x.mean((2, 3)))


class MLP(nn.Module):
  def __init__(self, hidden, num_classes=10, in_features=64):
    super().__init__()
    self.count = len(hidden)
    for i, width in enumerate(hidden):
      self.add_module(f"dense{i}", nn.Linear(in_features, width))
      in_features = width
    self.fc = nn.Linear(in_features, num_classes)

  def forward(self, x):
    # Flatten in NHWC order, as the Flax MLP does on NHWC input.
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    for i in range(self.count):
      x = F.relu(getattr(self, f"dense{i}")(x))
    return self.fc(x)


def create_torch_model(name: str, num_classes: int, in_channels: int = 3,
                       image_size: int = 32) -> nn.Module:
  """The PyTorch twin of ``kd_jax.models.create_model(name, num_classes)``."""
  x4 = (32, 64, 128, 256)
  table = {
      **{f"resnet{d}": lambda d=d: CifarResNet(d, num_classes=num_classes)
         for d in (8, 14, 20, 32, 44, 56, 110)},
      "resnet8x4": lambda: CifarResNet(8, x4, num_classes),
      "resnet32x4": lambda: CifarResNet(32, x4, num_classes),
      **{f"wrn_{d}_{k}": lambda d=d, k=k: WideResNet(d, k, num_classes)
         for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
      **{f"vgg{d}": lambda d=d: VGG(VGG_CONFIGS[d], num_classes) for d in VGG_CONFIGS},
      "cnn_tiny": lambda: SmallCNN((8, 16), num_classes, in_channels),
      "cnn_small": lambda: SmallCNN((32, 64), num_classes, in_channels),
      "cnn_medium": lambda: SmallCNN((64, 128, 128), num_classes, in_channels),
      "mlp_tiny": lambda: MLP((16,), num_classes, in_channels * image_size ** 2),
      "mlp_small": lambda: MLP((64,), num_classes, in_channels * image_size ** 2),
  }
  if name not in table:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(table))}.")
  return table[name]()


def count_parameters(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
