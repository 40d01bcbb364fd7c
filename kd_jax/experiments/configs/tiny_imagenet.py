"""Tiny ImageNet (200 classes, 64 × 64, 100,000 train / 10,000 validation), Wang et al.'s
Table 4: the CIFAR-100 pairs at 64 × 64 on CIFAR-style models, random crop 64 with 8 px
padding + flip, the CIFAR schedule (240 epochs, batch 64, SGD momentum 0.9, lr 0.05 — 0.01
for MobileNetV2 / ShuffleNetV2 — ×0.1 at 150/180/210, weight decay 5e-4; τ 4, ce 0.1, kd 0.9).
The 480-epoch rows: --config.epoch_factor=2 (epochs and milestones ×2).

The argument is "role[,what]": ``teacher,MODEL`` and ``scratch,MODEL`` (cross-entropy),
``kd,PAIR`` and ``kd_cutmix_pick,PAIR[,score]`` (PAIR "teacher-student"; the teacher's run
directory defaults to runs/tiny_imagenet/<teacher>/seed0). Streamed from prepared files:

  python -m kd_jax.experiments.prepare_data --dataset=tiny_imagenet \
      --manual_dir=RAW --data_dir=DATA          # RAW: tiny-imagenet-200.zip (or unzipped)
  python -m kd_jax.experiments.train_teacher \
      --config=kd_jax/experiments/configs/tiny_imagenet.py:teacher,resnet56 \
      --config.data_dir=DATA --workdir=runs/tiny_imagenet/resnet56/seed0
  python -m kd_jax.experiments.distill \
      --config=kd_jax/experiments/configs/tiny_imagenet.py:kd_cutmix_pick,resnet56-resnet20 \
      --config.data_dir=DATA --workdir=runs/tiny_imagenet/kd_cutmix_pick/resnet56-resnet20/seed0

Expected top-1 (Wang et al., Table 4; teachers trained by the authors; config.expected_top1
carries the row's number, -1 where the table has none):

  pair                      teacher student  kd     kd x2  cutmix  pick   pick x2
  wrn_40_2-wrn_16_2         61.28   58.23   58.65  59.20  59.06   59.22  60.07
  resnet56-resnet20         58.37   52.53   53.58  54.23  53.77   53.66  54.25
  resnet32x4-resnet8x4      64.41   55.41   55.67  55.49  56.41   56.82  57.54
  vgg13-vgg8                62.59   56.67   61.48  61.72  62.17   62.32  62.60
  vgg13-mobilenetv2         62.59   58.20   59.28  59.27  60.48   60.53  60.66
  resnet50-vgg8             68.20   56.67   60.39  60.10  61.12   61.40  61.95
  resnet32x4-shufflenetv2   64.41   62.07   66.34  65.81  67.01   67.08  67.35

The table's models are CIFAR-style (a 3 × 3 stride-1 stem) at 64 × 64, as here; the host
only decodes the 64 × 64 JPEGs, and the padding crop and flip run on the device.
"""

import ml_collections

from kd_jax.experiments.configs import common

PAIRS = (
  "wrn_40_2-wrn_16_2",
  "resnet56-resnet20",
  "resnet32x4-resnet8x4",
  "vgg13-vgg8",
  "vgg13-mobilenetv2",
  "resnet50-vgg8",
  "resnet32x4-shufflenetv2",
)
ROLES = ("teacher", "scratch", "kd", "kd_cutmix_pick")
# Table 4, per pair: teacher, student, KD, KD ×2, KD+TL-CutMix, +pick, +pick ×2.
TABLE4 = {
  "wrn_40_2-wrn_16_2": (61.28, 58.23, 58.65, 59.20, 59.06, 59.22, 60.07),
  "resnet56-resnet20": (58.37, 52.53, 53.58, 54.23, 53.77, 53.66, 54.25),
  "resnet32x4-resnet8x4": (64.41, 55.41, 55.67, 55.49, 56.41, 56.82, 57.54),
  "vgg13-vgg8": (62.59, 56.67, 61.48, 61.72, 62.17, 62.32, 62.60),
  "vgg13-mobilenetv2": (62.59, 58.20, 59.28, 59.27, 60.48, 60.53, 60.66),
  "resnet50-vgg8": (68.20, 56.67, 60.39, 60.10, 61.12, 61.40, 61.95),
  "resnet32x4-shufflenetv2": (64.41, 62.07, 66.34, 65.81, 67.01, 67.08, 67.35),
}
SMALL_LR_MODELS = ("mobilenetv2", "shufflenetv2")
SCORES = ("teacher_entropy", "student_entropy", "kl")


def expected_top1(role: str, what: str, epoch_factor: int = 1) -> float:
  """Table 4's number for a role and pair (or model), -1 where it has none."""
  if role in ("teacher", "scratch"):
    column = 0 if role == "teacher" else 1
    found = {pair.split("-")[column]: row[column] for pair, row in TABLE4.items()}
    return found.get(what, -1.0) if epoch_factor == 1 else -1.0
  column = {("kd", 1): 2, ("kd", 2): 3, ("kd_cutmix_pick", 1): 5, ("kd_cutmix_pick", 2): 6}.get(
    (role, epoch_factor)
  )
  return -1.0 if column is None or what not in TABLE4 else TABLE4[what][column]


def get_config(argument: str = "kd,resnet56-resnet20") -> ml_collections.ConfigDict:
  role, _, rest = argument.partition(",")
  what, _, score = rest.partition(",")
  models_ok = role in ("teacher", "scratch") and what and "-" not in what and not score
  pair_ok = (
    role in ("kd", "kd_cutmix_pick")
    and what in PAIRS
    and (not score or (role == "kd_cutmix_pick" and score in SCORES))
  )
  if role not in ROLES or not (
    models_ok or pair_ok or (role in ("kd", "kd_cutmix_pick") and not what)
  ):
    raise ValueError(
      f"the config argument is 'role[,what]': teacher,MODEL | scratch,MODEL | "
      f"kd,PAIR | kd_cutmix_pick,PAIR[,score] with a pair among "
      f"{', '.join(PAIRS)} and a score among {', '.join(SCORES)}; "
      f"got {argument!r}."
    )
  if role in ("kd", "kd_cutmix_pick") and not what:
    what = "resnet56-resnet20"
  config = common.base_config()
  config.dataset = "tiny_imagenet"
  config.augment.crop_pad = 8
  config.augment.flip = True
  student = what.split("-")[-1]
  config.model = student
  config.method = "ce" if role in ("teacher", "scratch") else role
  if role in ("kd", "kd_cutmix_pick"):
    config.teacher_workdir = f"runs/tiny_imagenet/{what.split('-')[0]}/seed0"
  if role == "kd_cutmix_pick":
    config.cutmix_pick.score = score or "teacher_entropy"
  if student in SMALL_LR_MODELS:
    config.optimizer.learning_rate = 0.01
  config.eval_batch_size = 250
  config.expected_top1 = expected_top1(role, what)
  return config
