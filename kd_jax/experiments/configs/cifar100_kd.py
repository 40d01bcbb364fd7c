"""Vanilla KD on CIFAR-100, RepDistiller protocol (the pairs of METHODS.md §0).

tau = 4, ce_weight 0.1, kd_weight 0.9, 240 epochs, batch 64, SGD momentum 0.9, lr 0.05,
x0.1 at 150/180/210, weight decay 5e-4. The argument names the pair "teacher-student"; the
teacher's run directory defaults to runs/cifar100/<teacher>/seed0 (train it first with
kd_jax/experiments/configs/cifar100_teacher.py).

Launch:
  python -m kd_jax.experiments.distill \
      --config=kd_jax/experiments/configs/cifar100_kd.py:resnet56-resnet20 \
      --workdir=runs/cifar100/kd/resnet56-resnet20/seed0

Expected last-epoch top-1 (RepDistiller README): resnet56->resnet20 70.66,
resnet110->resnet32 73.08, resnet32x4->resnet8x4 73.33, wrn_40_2->wrn_16_2 74.92,
wrn_40_2->wrn_40_1 73.54, vgg13->vgg8 72.98.
"""

import ml_collections

from kd_jax.experiments.configs import common

EXPECTED_TOP1 = {
  "resnet56-resnet20": 70.66,
  "resnet110-resnet32": 73.08,
  "resnet32x4-resnet8x4": 73.33,
  "wrn_40_2-wrn_16_2": 74.92,
  "wrn_40_2-wrn_40_1": 73.54,
  "vgg13-vgg8": 72.98,
}


def get_config(pair: str = "resnet56-resnet20") -> ml_collections.ConfigDict:
  if pair.count("-") != 1:
    raise ValueError(
      f"the config argument is 'teacher-student', e.g. resnet56-resnet20; "
      f"got {pair!r}. Known pairs: {', '.join(EXPECTED_TOP1)}."
    )
  teacher, student = pair.split("-")
  config = common.base_config()
  config.dataset = "cifar100"
  config.model = student
  config.method = "kd"
  config.teacher_workdir = f"runs/cifar100/{teacher}/seed0"
  config.expected_top1 = EXPECTED_TOP1.get(pair, -1.0)
  return config
