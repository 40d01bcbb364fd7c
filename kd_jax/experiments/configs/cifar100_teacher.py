"""CIFAR-100 teacher (or student from scratch), RepDistiller protocol.

240 epochs, batch 64, SGD momentum 0.9, lr 0.05 (0.01 for MobileNetV2 / ShuffleNet),
x0.1 at epochs 150/180/210, weight decay 5e-4, random crop 32 (pad 4) + flip.

Launch (the argument after ":" names the model):
  python -m kd_jax.experiments.train_teacher \
      --config=kd_jax/experiments/configs/cifar100_teacher.py:resnet56 \
      --workdir=runs/cifar100/resnet56/seed0

Expected top-1 (RepDistiller README, CIFAR-100): resnet56 72.34, resnet110 74.31,
resnet32x4 79.42, wrn_40_2 75.61, vgg13 74.64; from scratch resnet20 69.06,
resnet32 71.14, resnet8x4 72.50, wrn_16_2 73.26, wrn_40_1 71.98, vgg8 70.36.
"""

import ml_collections

from kd_jax.experiments.configs import common

EXPECTED_TOP1 = {
  "resnet56": 72.34,
  "resnet110": 74.31,
  "resnet32x4": 79.42,
  "wrn_40_2": 75.61,
  "vgg13": 74.64,
  "resnet20": 69.06,
  "resnet32": 71.14,
  "resnet8x4": 72.50,
  "wrn_16_2": 73.26,
  "wrn_40_1": 71.98,
  "vgg8": 70.36,
}


def get_config(model: str = "resnet56") -> ml_collections.ConfigDict:
  config = common.base_config()
  config.dataset = "cifar100"
  config.model = model
  config.method = "ce"
  if model in ("mobilenetv2", "shufflenetv2"):
    config.optimizer.learning_rate = 0.01
  config.expected_top1 = EXPECTED_TOP1.get(model, -1.0)
  return config
