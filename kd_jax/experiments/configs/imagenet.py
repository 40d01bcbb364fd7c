"""ImageNet (ILSVRC 2012, 1,000 classes), Wang et al.'s Table 5 protocol: batch 256, SGD
momentum 0.9, lr 0.1 ×0.1 at epochs 30/60/90 of 100, weight decay 1e-4; τ 4, ce 0.1, kd 0.9;
training images random-resized-cropped to 224 on the host (torchvision's recipe) and
flipped on the device; evaluation resizes to 256 and takes the central 224. The "_200"
rows: --config.epoch_factor=2 (200 epochs, milestones ×2).

The argument is the role: ``teacher``, ``scratch``, ``kd`` or ``kd_cutmix_pick``. Streamed
from prepared files:

  python -m kd_jax.experiments.prepare_data --dataset=imagenet2012 \
      --manual_dir=RAW --data_dir=DATA   # RAW: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar
  python -m kd_jax.experiments.distill \
      --config=kd_jax/experiments/configs/imagenet.py:kd_cutmix_pick --config.data_dir=DATA \
      --config.teacher_workdir=runs/imagenet/teacher --workdir=runs/imagenet/kd_cutmix_pick

On a pod, every host runs the same command with --config.multihost=True; each reads and
decodes only its share of every global batch of 256 (kd_jax.data.pipeline).

Expected top-1 / top-5 (Table 5; teacher torchvision's pretrained ResNet-34 → ResNet-18):
teacher 73.31 / 91.42, student 69.75 / 89.97, KD 70.66 / 89.88, KD_200 71.38 / 90.59,
KD + TL-CutMix 71.05 / 90.36, KD + TL-CutMix + pick 70.78 / 90.04, pick_200 71.76 / 90.58.

Models: torchvision's ResNet-34 (teacher) and ResNet-18 (student), layer for layer
(kd_jax.models.resnet_imagenet). The paper's teacher is torchvision's *pretrained*
ResNet-34; loading it from its PyTorch file is the next step (issue 27), so until then the
teacher role trains one from scratch (torchvision's recipe reaches 73.3 with 90 epochs).
"""

from kd_jax.experiments.configs import common

ROLES = ("teacher", "scratch", "kd", "kd_cutmix_pick")
# Table 5 top-1 by (role, epoch factor).
TABLE5 = {("teacher", 1): 73.31, ("scratch", 1): 69.75, ("kd", 1): 70.66, ("kd", 2): 71.38,
          ("kd_cutmix_pick", 1): 70.78, ("kd_cutmix_pick", 2): 71.76}
TEACHER_MODEL = "imagenet_resnet34"
STUDENT_MODEL = "imagenet_resnet18"


def get_config(role: str = "kd"):
  if role not in ROLES:
    raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}.")
  config = common.base_config()
  config.dataset = "imagenet2012"
  config.model = TEACHER_MODEL if role == "teacher" else STUDENT_MODEL
  config.method = "ce" if role in ("teacher", "scratch") else role
  config.teacher_workdir = "runs/imagenet/teacher" if role not in ("teacher", "scratch") else ""
  config.num_epochs = 100
  config.batch_size = 256
  config.eval_batch_size = 250
  config.augment.crop_pad = 0  # the random-resized crop happens on the host
  config.augment.flip = True
  config.input.workers = 8
  config.optimizer.learning_rate = 0.1
  config.optimizer.weight_decay = 1e-4
  config.optimizer.lr_milestones = (30, 60, 90)
  config.log_every_steps = 500
  config.checkpoint_every_steps = 2500
  config.expected_top1 = TABLE5[(role, 1)]
  return config
