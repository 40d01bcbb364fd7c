"""ImageNet (ILSVRC 2012, 1,000 classes), Wang et al.'s Table 5 protocol: torchvision's
pretrained ResNet-34 → ResNet-18, batch 256, SGD momentum 0.9, lr 0.1 ×0.1 at epochs
30/60/90 of 100, weight decay 1e-4; τ 4, ce 0.1, kd 0.9; training images random-resized-
cropped to 224 on the host (torchvision's recipe) and flipped on the device; evaluation
resizes to 256 and takes the central 224. The "_200" rows: --config.epoch_factor=2 (200
epochs, milestones ×2).

The argument is the role: ``teacher`` (train the ResNet-34 yourself), ``scratch``, ``kd``,
``kd_cutmix`` (KD + TL-CutMix) or ``kd_cutmix_pick``. Streamed from prepared files, the
teacher read from torchvision's file (ResNet34_Weights.IMAGENET1K_V1,
https://download.pytorch.org/models/resnet34-b627a593.pth, fetched on a machine with
internet; no torch is needed to read it):

  python -m kd_jax.experiments.prepare_data --dataset=imagenet2012 \
      --manual_dir=RAW --data_dir=DATA   # RAW: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar
  python -m kd_jax.experiments.distill \
      --config=kd_jax/experiments/configs/imagenet.py:kd_cutmix_pick --config.data_dir=DATA \
      --config.teacher_checkpoint=teachers/resnet34-b627a593.pth \
      --workdir=runs/imagenet/kd_cutmix_pick

The teacher's top-1 on the validation split is logged before training (73.31 for this file
in the paper; a wrong conversion shows at once). A teacher trained with kd_jax instead:
--config.teacher_checkpoint= --config.teacher_model= --config.teacher_workdir=runs/imagenet/teacher.

The study's other views of the same protocol: --config.view.name=cutout --config.cutout.size=56
(Cutout 56), --config.view.name=autoaugment --config.autoaugment.policy=imagenet.

On a pod, every host runs the same command with --config.multihost=True; each reads and
decodes only its share of every global batch (kd_jax.data.pipeline). The lr is given for a
global batch of 256 and scales linearly with it (optimizer.lr_reference_batch, Goyal et al.):
--config.batch_size=1024 trains with lr 0.4. The ImageNet recipes' other options
(optimizer.schedule="cosine", optimizer.warmup_epochs, optimizer.decay_norm_and_bias,
label_smoothing; kd_jax/experiments/configs/common.py) are off, as in the paper.

Expected top-1 / top-5 (Table 5): teacher 73.31 / 91.42, student 69.75 / 89.97, KD 70.66 /
89.88, KD_200 71.38 / 90.59, KD + TL-CutMix 71.05 / 90.36, KD + TL-CutMix + pick 70.78 /
90.04, pick_200 71.76 / 90.58.

Models: torchvision's ResNet-34 (teacher) and ResNet-18 (student), layer for layer
(kd_jax.models.resnet_imagenet; torchvision's recipe trains the ResNet-34 to 73.3 in 90
epochs).
"""

import ml_collections

from kd_jax.experiments.configs import common

ROLES = ("teacher", "scratch", "kd", "kd_cutmix", "kd_cutmix_pick")
# Table 5 top-1 by (role, epoch factor).
TABLE5 = {
  ("teacher", 1): 73.31,
  ("scratch", 1): 69.75,
  ("kd", 1): 70.66,
  ("kd", 2): 71.38,
  ("kd_cutmix", 1): 71.05,
  ("kd_cutmix_pick", 1): 70.78,
  ("kd_cutmix_pick", 2): 71.76,
}
TEACHER_MODEL = "imagenet_resnet34"
STUDENT_MODEL = "imagenet_resnet18"
# torchvision's ResNet34_Weights.IMAGENET1K_V1 file, where the commands above put it.
TEACHER_CHECKPOINT = "teachers/resnet34-b627a593.pth"


def get_config(role: str = "kd") -> ml_collections.ConfigDict:
  if role not in ROLES:
    raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}.")
  config = common.base_config()
  config.dataset = "imagenet2012"
  config.model = TEACHER_MODEL if role == "teacher" else STUDENT_MODEL
  config.method = "ce" if role in ("teacher", "scratch") else role
  if role not in ("teacher", "scratch"):
    config.teacher_checkpoint = TEACHER_CHECKPOINT
    config.teacher_model = TEACHER_MODEL
  config.num_epochs = 100
  config.batch_size = 256
  config.eval_batch_size = 256  # divides over 8 GPUs or a pod slice's 16 or 32 chips
  config.augment.crop_pad = 0  # the random-resized crop happens on the host
  config.augment.flip = True
  config.input.workers = 8
  config.optimizer.learning_rate = 0.1
  config.optimizer.lr_reference_batch = 256
  config.optimizer.weight_decay = 1e-4
  config.optimizer.lr_milestones = (30, 60, 90)
  config.log_every_steps = 500
  config.checkpoint_every_steps = 2500
  config.expected_top1 = TABLE5[(role, 1)]
  return config
