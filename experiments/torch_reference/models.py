"""The RepDistiller CIFAR models and the small nets, written in PyTorch.

Written to compute what RepDistiller's ``models/`` compute, with module names chosen to
mirror kd_jax's Flax modules one to one, so ``convert.py`` can map weights by name.
Layout is NCHW as usual in PyTorch; the converter transposes.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from kd_jax.models.pytorch import torchvision_resnet_key
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
  """``make_conv(cin, cout, kernel, stride)`` builds its convolutions (quantised ones too);
  ``block_input``, if given, replaces the block's input before the convolutions and the
  shortcut see it (the quantised ResNet-18's role-kd shortcut)."""

  def __init__(self, cin, cout, stride, make_conv=_conv, block_input=None):
    super().__init__()
    self.block_input = block_input
    self.conv1 = make_conv(cin, cout, 3, stride)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = make_conv(cout, cout, 3, 1)
    self.bn2 = nn.BatchNorm2d(cout)
    self.has_projection = stride != 1 or cin != cout
    if self.has_projection:
      self.downsample_conv = make_conv(cin, cout, 1, stride)
      self.downsample_bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    if self.block_input is not None:
      x = self.block_input(x)
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    residual = self.downsample_bn(self.downsample_conv(x)) if self.has_projection else x
    return F.relu(y + residual)


class StagedResNet(nn.Module):
  """Stem conv + BN + ReLU → stages of ``blocks_per_stage`` BasicBlocks (stride 2 from the
  second stage on) → global mean pool → fc. ``widths``: the stem's, then each stage's
  channels; ``make_conv`` builds the blocks' convolutions, ``block_input`` (optional) maps
  each block's input first."""

  def __init__(self, widths, blocks_per_stage, num_classes, make_conv=_conv,
               block_input=None):
    super().__init__()
    self.conv1 = _conv(3, widths[0], 3)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.block_names = []
    cin = widths[0]
    for stage, width in enumerate(widths[1:]):
      for block in range(blocks_per_stage):
        name = f"layer{stage + 1}_{block}"
        self.add_module(name, BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1,
                                         make_conv, block_input))
        self.block_names.append(name)
        cin = width
    self.fc = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return self.fc(x.mean((2, 3)))


class CifarResNet(StagedResNet):
  def __init__(self, depth, widths=(16, 16, 32, 64), num_classes=100):
    super().__init__(widths, (depth - 2) // 6, num_classes)


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


class InvertedResidual(nn.Module):
  def __init__(self, cin, cout, stride, expansion):
    super().__init__()
    hidden = cin * expansion
    self.use_residual = stride == 1 and cin == cout
    self.expand_conv = _conv(cin, hidden, 1)
    self.expand_bn = nn.BatchNorm2d(hidden)
    self.depthwise_conv = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
    self.depthwise_bn = nn.BatchNorm2d(hidden)
    self.project_conv = _conv(hidden, cout, 1)
    self.project_bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    y = F.relu(self.expand_bn(self.expand_conv(x)))
    y = F.relu(self.depthwise_bn(self.depthwise_conv(y)))
    y = self.project_bn(self.project_conv(y))
    return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
  def __init__(self, width=0.5, expansion=6, num_classes=100):
    super().__init__()
    from kd_jax.models.mobile import MOBILENETV2_STAGES
    cin = int(32 * width)
    self.stem_conv = nn.Conv2d(3, cin, 3, 2, 1, bias=False)
    self.stem_bn = nn.BatchNorm2d(cin)
    self.block_names = []
    for stage, (t, c, n, s) in enumerate(MOBILENETV2_STAGES):
      for block in range(n):
        name = f"stage{stage}_{block}"
        self.add_module(name, InvertedResidual(cin, int(c * width), s if block == 0 else 1,
                                               expansion if t != 1 else 1))
        self.block_names.append(name)
        cin = int(c * width)
    last = int(1280 * width) if width > 1.0 else 1280
    self.head_conv = _conv(cin, last, 1)
    self.head_bn = nn.BatchNorm2d(last)
    self.classifier = nn.Linear(last, num_classes)
    _init_conv_bn(self)
    nn.init.normal_(self.classifier.weight, 0, 0.01)
    nn.init.zeros_(self.classifier.bias)

  def forward(self, x):
    x = F.relu(self.stem_bn(self.stem_conv(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    x = F.relu(self.head_bn(self.head_conv(x)))
    return self.classifier(x.mean((2, 3)))


def _shuffle(x, groups=2):
  n, c, h, w = x.shape
  return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ShuffleBasicBlock(nn.Module):
  def __init__(self, channels):
    super().__init__()
    half = channels // 2
    self.conv1 = _conv(half, half, 1)
    self.bn1 = nn.BatchNorm2d(half)
    self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
    self.bn2 = nn.BatchNorm2d(half)
    self.conv3 = _conv(half, half, 1)
    self.bn3 = nn.BatchNorm2d(half)

  def forward(self, x):
    half = x.shape[1] // 2
    kept, y = x[:, :half], x[:, half:]
    y = F.relu(self.bn1(self.conv1(y)))
    y = self.bn2(self.conv2(y))
    y = F.relu(self.bn3(self.conv3(y)))
    return _shuffle(torch.cat([kept, y], 1))


class ShuffleDownBlock(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    mid = cout // 2
    self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv2 = _conv(cin, mid, 1)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv3 = _conv(cin, mid, 1)
    self.bn3 = nn.BatchNorm2d(mid)
    self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
    self.bn4 = nn.BatchNorm2d(mid)
    self.conv5 = _conv(mid, mid, 1)
    self.bn5 = nn.BatchNorm2d(mid)

  def forward(self, x):
    left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
    right = F.relu(self.bn3(self.conv3(x)))
    right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
    return _shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
  """PyTorch's default initialisation, as in RepDistiller's ShuffleV2."""

  def __init__(self, num_classes=100, stage_channels=(116, 232, 464, 1024),
               stage_blocks=(3, 7, 3)):
    super().__init__()
    self.conv1 = _conv(3, 24, 1)
    self.bn1 = nn.BatchNorm2d(24)
    self.block_names = []
    cin = 24
    for stage, (channels, blocks) in enumerate(zip(stage_channels, stage_blocks)):
      self.add_module(f"layer{stage + 1}_down", ShuffleDownBlock(cin, channels))
      self.block_names.append(f"layer{stage + 1}_down")
      for block in range(blocks):
        self.add_module(f"layer{stage + 1}_{block}", ShuffleBasicBlock(channels))
        self.block_names.append(f"layer{stage + 1}_{block}")
      cin = channels
    self.conv2 = _conv(cin, stage_channels[-1], 1)
    self.bn2 = nn.BatchNorm2d(stage_channels[-1])
    self.linear = nn.Linear(stage_channels[-1], num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    x = F.relu(self.bn2(self.conv2(x)))
    return self.linear(x.mean((2, 3)))


class Bottleneck(nn.Module):
  def __init__(self, cin, planes, stride):
    super().__init__()
    cout = 4 * planes
    self.conv1 = _conv(cin, planes, 1)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3, stride)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = _conv(planes, cout, 1)
    self.bn3 = nn.BatchNorm2d(cout)
    self.has_projection = stride != 1 or cin != cout
    if self.has_projection:
      self.shortcut_conv = _conv(cin, cout, 1, stride, padding=0)
      self.shortcut_bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.has_projection else x
    return F.relu(y + shortcut)


class ResNetV2(nn.Module):
  def __init__(self, stage_blocks=(3, 4, 6, 3), num_classes=100):
    super().__init__()
    self.conv1 = _conv(3, 64, 3)
    self.bn1 = nn.BatchNorm2d(64)
    self.block_names = []
    cin = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), stage_blocks)):
      for block in range(blocks):
        name = f"layer{stage + 1}_{block}"
        self.add_module(name, Bottleneck(cin, planes, 2 if stage > 0 and block == 0 else 1))
        self.block_names.append(name)
        cin = 4 * planes
    self.linear = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return self.linear(x.mean((2, 3)))


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


def dorefa_weights(w, bits: int):
  """DoReFa weights with a straight-through round (the DoReFa-Net reference code's rule)."""
  if bits >= 32:
    return w
  t = torch.tanh(w)
  unit = t / (2 * t.abs().max()) + 0.5
  levels = 2 ** bits - 1
  return 2 * (unit + (torch.round(unit * levels) / levels - unit).detach()) - 1


def dorefa_activations(a, bits: int):
  if bits >= 32:
    return a
  a = torch.clamp(a, 0.0, 1.0)
  levels = 2 ** bits - 1
  return a + (torch.round(a * levels) / levels - a).detach()


class QuantConv2d(nn.Conv2d):
  """A convolution on DoReFa-quantised input and weights (no bias)."""

  def __init__(self, cin, cout, kernel, stride, weight_bits, activation_bits):
    super().__init__(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    self.weight_bits, self.activation_bits = weight_bits, activation_bits

  def forward(self, x):
    return F.conv2d(dorefa_activations(x, self.activation_bits),
                    dorefa_weights(self.weight, self.weight_bits), None, self.stride,
                    self.padding)


class ResNet18(StagedResNet):
  """CIFAR ResNet-18; DoReFa-quantised blocks below 32 bits (stem and fc full precision).
  With ``quantised_shortcut`` (kd_jax's default, role-kd's block) a quantised block clips
  and quantises its input once, and the convolutions and the shortcut all see that."""

  def __init__(self, widths=(64, 128, 256, 512), num_classes=100, weight_bits=32,
               activation_bits=32, quantised_shortcut=True):
    block_input = None
    if quantised_shortcut and activation_bits < 32:
      block_input = lambda a: dorefa_activations(a, activation_bits)  # noqa: E731
    super().__init__((widths[0], *widths), 2, num_classes,
                     lambda ci, co, k, s: QuantConv2d(ci, co, k, s, weight_bits,
                                                      activation_bits), block_input)


class TorchvisionBasicBlock(nn.Module):
  """torchvision's BasicBlock, with its attribute names (its state-dict keys)."""
  expansion = 1

  def __init__(self, cin, planes, stride=1):
    super().__init__()
    self.conv1 = _conv(cin, planes, 3, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or cin != planes:
      self.downsample = nn.Sequential(_conv(cin, planes, 1, stride, 0), nn.BatchNorm2d(planes))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionBottleneck(nn.Module):
  """torchvision's Bottleneck (the stride on the 3×3 convolution), with its names."""
  expansion = 4

  def __init__(self, cin, planes, stride=1):
    super().__init__()
    self.conv1 = _conv(cin, planes, 1, padding=0)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3, stride)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = _conv(planes, 4 * planes, 1, padding=0)
    self.bn3 = nn.BatchNorm2d(4 * planes)
    self.downsample = None
    if stride != 1 or cin != 4 * planes:
      self.downsample = nn.Sequential(_conv(cin, 4 * planes, 1, stride, 0),
                                      nn.BatchNorm2d(4 * planes))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
  """torchvision.models.ResNet (7×7 stem, max pool, four stages, fc), written out so that
  its state dict has torchvision's exact keys (``layer1.0.downsample.1.weight``, ...);
  ``flax_key`` renames them to kd_jax's (convert.py uses it)."""

  flax_key = staticmethod(torchvision_resnet_key)

  def __init__(self, block, stage_blocks, num_classes=1000):
    super().__init__()
    self.conv1 = _conv(3, 64, 7, 2, 3)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), stage_blocks)):
      layer = []
      for index in range(blocks):
        layer.append(block(cin, planes, 2 if stage > 0 and index == 0 else 1))
        cin = planes * block.expansion
      setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
    self.fc = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    for stage in range(1, 5):
      x = getattr(self, f"layer{stage}")(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


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
      "resnet50": lambda: ResNetV2((3, 4, 6, 3), num_classes),
      "mobilenetv2": lambda: MobileNetV2(0.5, 6, num_classes),
      "resnet18": lambda: ResNet18(num_classes=num_classes),
      "resnet18_w2a2": lambda: ResNet18(num_classes=num_classes, weight_bits=2,
                                        activation_bits=2),
      "resnet18_w4a4": lambda: ResNet18(num_classes=num_classes, weight_bits=4,
                                        activation_bits=4),
      "resnet18_narrow": lambda: ResNet18((16, 32, 64, 128), num_classes),
      "resnet18_narrow_w2a2": lambda: ResNet18((16, 32, 64, 128), num_classes, 2, 2),
      "resnet18_w2a2_fp_shortcut": lambda: ResNet18(num_classes=num_classes, weight_bits=2,
                                                    activation_bits=2,
                                                    quantised_shortcut=False),
      "resnet18_narrow_w2a2_fp_shortcut": lambda: ResNet18((16, 32, 64, 128), num_classes, 2,
                                                           2, quantised_shortcut=False),
      "shufflenetv2": lambda: ShuffleNetV2(num_classes),
      "imagenet_resnet18": lambda: TorchvisionResNet(TorchvisionBasicBlock, (2, 2, 2, 2),
                                                     num_classes),
      "imagenet_resnet34": lambda: TorchvisionResNet(TorchvisionBasicBlock, (3, 4, 6, 3),
                                                     num_classes),
      "imagenet_resnet50": lambda: TorchvisionResNet(TorchvisionBottleneck, (3, 4, 6, 3),
                                                     num_classes),
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
