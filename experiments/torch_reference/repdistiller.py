"""RepDistiller's CIFAR models with RepDistiller's own module tree and state-dict keys.

``models.py`` names its twins after kd_jax's Flax modules; these instead are laid out as
HobbitLong/RepDistiller's ``models/`` lays them out (``layer1.0.downsample.1``,
``block1.layer.0.convShortcut``, ``block2.3``, ``blocks.1.0.conv.4``, ...), so that
``state_dict()`` has exactly the keys of the files RepDistiller's training writes
(``{'model': state_dict, ...}``), and ``forward`` computes what RepDistiller's computes on
32×32 inputs, pooling included. They exist to test ``kd_jax.models.from_pytorch`` against.

``create_repdistiller_model(name, num_classes)`` takes kd_jax's name (``REPDISTILLER_NAMES``
gives RepDistiller's ``model_dict`` name for each).
"""

from __future__ import annotations

from torch import nn
import torch.nn.functional as F

from experiments.torch_reference import models as twins
from experiments.torch_reference.models import _conv, _init_conv_bn

# kd_jax's name → the name in RepDistiller's models/__init__.py model_dict.
REPDISTILLER_NAMES = {
    **{f"resnet{d}": f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": "resnet8x4", "resnet32x4": "resnet32x4",
    **{f"wrn_{d}_{k}": f"wrn_{d}_{k}" for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{f"vgg{d}": f"vgg{d}" for d in (8, 11, 13, 16, 19)},  # the *_bn constructors
    "resnet50": "ResNet50", "mobilenetv2": "mobile_half", "shufflenetv2": "ShuffleV2",
}


def _stage(blocks) -> nn.Sequential:
  return nn.Sequential(*blocks)


# --- resnet.py: CIFAR ResNets. Its BasicBlock is torchvision's, keys and all. ---

class CifarResNet(nn.Module):
  """3×3 stem, three stages of (depth − 2) / 6 basic blocks (``layer1..3``), 8×8 average
  pool, ``fc``."""

  def __init__(self, depth, widths, num_classes):
    super().__init__()
    self.conv1 = _conv(3, widths[0], 3)
    self.bn1 = nn.BatchNorm2d(widths[0])
    cin = widths[0]
    for stage, width in enumerate(widths[1:]):
      blocks = []
      for index in range((depth - 2) // 6):
        blocks.append(twins.TorchvisionBasicBlock(cin, width,
                                                  2 if stage and not index else 1))
        cin = width
      setattr(self, f"layer{stage + 1}", _stage(blocks))
    self.fc = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    return self.fc(F.avg_pool2d(x, 8).flatten(1))


# --- wrn.py: pre-activation blocks inside ``blockN.layer``. ---

class WideBlock(nn.Module):
  """A width-changing block pre-activates its input once and feeds that to both the 3×3
  branch and the 1×1 ``convShortcut``; a width-keeping one adds its raw input."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn2 = nn.BatchNorm2d(cout)
    self.conv2 = _conv(cout, cout, 3)
    self.convShortcut = None if cin == cout else _conv(cin, cout, 1, stride, padding=0)

  def forward(self, x):
    activated = F.relu(self.bn1(x))
    branch = self.conv2(F.relu(self.bn2(self.conv1(activated))))
    return branch + (x if self.convShortcut is None else self.convShortcut(activated))


class WideGroup(nn.Module):
  def __init__(self, count, cin, cout, stride):
    super().__init__()
    self.layer = _stage(WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                        for i in range(count))

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):
  def __init__(self, depth, widen_factor, num_classes):
    super().__init__()
    widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    self.conv1 = _conv(3, widths[0], 3)
    for group in range(3):
      setattr(self, f"block{group + 1}", WideGroup((depth - 4) // 6, widths[group],
                                                   widths[group + 1], 1 if group == 0 else 2))
    self.bn1 = nn.BatchNorm2d(widths[-1])
    self.fc = nn.Linear(widths[-1], num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = self.block3(self.block2(self.block1(self.conv1(x))))
    return self.fc(F.avg_pool2d(F.relu(self.bn1(x)), 8).flatten(1))


# --- vgg.py, the batch-norm variants: ``blockB`` is (conv, BN, ReLU) × n less the last ReLU.

# Convolutions per block for each depth (configurations S, A, B, D, E); widths 64..512.
_VGG_LAYERS = {8: (1, 1, 1, 1, 1), 11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2),
               16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_VGG_WIDTHS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
  def __init__(self, depth, num_classes):
    super().__init__()
    cin = 3
    for block, (count, width) in enumerate(zip(_VGG_LAYERS[depth], _VGG_WIDTHS)):
      layers = []
      for _ in range(count):
        layers += [nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
      setattr(self, f"block{block}", _stage(layers[:-1]))
    self.classifier = nn.Linear(512, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    height = x.shape[2]
    for block in range(5):
      x = F.relu(getattr(self, f"block{block}")(x))
      if block < 3 or (block == 3 and height == 64):
        x = F.max_pool2d(x, 2, 2)
    return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- resnetv2.py: ResNet-50 with a CIFAR stem; the projection is ``shortcut.0/1``. ---

class Bottleneck(twins.TorchvisionBottleneck):
  """torchvision's bottleneck (stride on the 3×3), its projection held as ``shortcut``, an
  empty Sequential where the block has none."""

  def __init__(self, cin, planes, stride):
    super().__init__(cin, planes, stride)
    projection = self.downsample
    del self.downsample
    self.shortcut = nn.Sequential() if projection is None else projection

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNet50(nn.Module):
  def __init__(self, num_classes, stage_blocks=(3, 4, 6, 3)):
    super().__init__()
    self.conv1 = _conv(3, 64, 3)
    self.bn1 = nn.BatchNorm2d(64)
    cin = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), stage_blocks)):
      blocks = []
      for index in range(count):
        blocks.append(Bottleneck(cin, planes, 2 if stage and not index else 1))
        cin = 4 * planes
      setattr(self, f"layer{stage + 1}", _stage(blocks))
    self.linear = nn.Linear(cin, num_classes)
    _init_conv_bn(self)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- mobilenetv2.py, mobile_half: Sequentials of conv/BN/ReLU indexed by position. ---

def _conv_bn_relu(cin, cout, kernel, stride):
  return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU())


class InvertedResidual(nn.Module):
  """``conv``: 1×1 expansion (0, 1, 2), 3×3 depthwise (3, 4, 5), 1×1 projection (6, 7)."""

  def __init__(self, cin, cout, stride, expansion):
    super().__init__()
    hidden = cin * expansion
    self.residual = stride == 1 and cin == cout
    self.conv = nn.Sequential(
        *_conv_bn_relu(cin, hidden, 1, 1),
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
        nn.BatchNorm2d(hidden), nn.ReLU(),
        nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    return x + self.conv(x) if self.residual else self.conv(x)


# (expansion, channels, blocks, first stride) per stage, before the width multiplier; "T" is
# the expansion RepDistiller passes in (6 for mobile_half).
_MOBILENETV2_STAGES = ((1, 16, 1, 1), ("T", 24, 2, 1), ("T", 32, 3, 2), ("T", 64, 4, 2),
                       ("T", 96, 3, 1), ("T", 160, 3, 2), ("T", 320, 1, 1))


class MobileNetV2(nn.Module):
  def __init__(self, num_classes, expansion=6, width=0.5):
    super().__init__()
    cin = int(32 * width)
    self.conv1 = _conv_bn_relu(3, cin, 3, 2)
    self.blocks = nn.ModuleList()
    for t, channels, count, stride in _MOBILENETV2_STAGES:
      cout = int(channels * width)
      stage = []
      for index in range(count):
        stage.append(InvertedResidual(cin, cout, stride if index == 0 else 1,
                                      expansion if t == "T" else t))
        cin = cout
      self.blocks.append(_stage(stage))
    last = int(1280 * width) if width > 1.0 else 1280
    self.conv2 = _conv_bn_relu(cin, last, 1, 1)
    self.classifier = nn.Sequential(nn.Linear(last, num_classes))
    _init_conv_bn(self)

  def forward(self, x):
    x = self.conv1(x)
    for stage in self.blocks:
      x = stage(x)
    # RepDistiller: AvgPool2d(input_size // 16, ceil_mode=True) with input_size 32.
    x = F.avg_pool2d(self.conv2(x), 2, ceil_mode=True)
    return self.classifier(x.flatten(1))


# --- ShuffleNetv2.py, ShuffleV2 (net size 1): models.py's twin already has its stem, head
# and block attribute names; only the blocks regroup into ``layerK`` Sequentials, ``layerK.0``
# the down-sampling block. (Its global mean is RepDistiller's 4×4 average pool at 32×32.) ---

class ShuffleNetV2(twins.ShuffleNetV2):
  def __init__(self, num_classes):
    super().__init__(num_classes)
    for stage in (1, 2, 3):
      names = [name for name in self.block_names if name.startswith(f"layer{stage}_")]
      blocks = [getattr(self, name) for name in names]
      for name in names:
        delattr(self, name)
      setattr(self, f"layer{stage}", _stage(blocks))
    self.block_names = ["layer1", "layer2", "layer3"]


def create_repdistiller_model(name: str, num_classes: int = 100) -> nn.Module:
  """The RepDistiller-layout twin of kd_jax's ``name`` (a key of ``REPDISTILLER_NAMES``),
  read from the name as RepDistiller's constructors are: ``wrn_{depth}_{widen}``,
  ``vgg{depth}``, ``resnet{depth}`` and ``resnet{depth}x4`` (widths 32-64-128-256)."""
  if name not in REPDISTILLER_NAMES:
    raise ValueError(f"no RepDistiller twin of {name!r}; there are: "
                     f"{', '.join(sorted(REPDISTILLER_NAMES))}.")
  single = {"resnet50": ResNet50, "mobilenetv2": MobileNetV2, "shufflenetv2": ShuffleNetV2}
  if name in single:
    return single[name](num_classes)
  if name.startswith("wrn_"):
    _, depth, widen_factor = name.split("_")
    return WideResNet(int(depth), int(widen_factor), num_classes)
  if name.startswith("vgg"):
    return VGG(int(name[len("vgg"):]), num_classes)
  depth, _, x4 = name[len("resnet"):].partition("x")
  return CifarResNet(int(depth), (32, 64, 128, 256) if x4 else (16, 16, 32, 64), num_classes)
