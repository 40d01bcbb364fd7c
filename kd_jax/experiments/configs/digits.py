"""The embedded default: scikit-learn's 8x8 digits (1,438 train / 359 test, fixed split).

Runs offline in seconds on a CPU. The argument picks the role:
  teacher  cnn_medium trained with cross-entropy,
  scratch  the cnn_tiny student with cross-entropy only,
  kd       the cnn_tiny student distilled from a teacher run (teacher_workdir).

Launch:
  python -m kd_jax.experiments.train_teacher --config=kd_jax/experiments/configs/digits.py:teacher \
      --workdir=runs/digits/teacher
  python -m kd_jax.experiments.distill --config=kd_jax/experiments/configs/digits.py:kd \
      --workdir=runs/digits/kd --config.teacher_workdir=runs/digits/teacher

Expected results: results/demo_digits.md, over 5 seeds (python -m kd_jax.experiments.demo
--dataset=digits --workdir=runs/demo5 --seeds=0,1,2,3,4 --results_dir=results); the
commands above are one seed (0) of its teacher, scratch and kd rows.
"""

import ml_collections

from kd_jax.experiments.configs import common

TEACHER_MODEL = "cnn_medium"
STUDENT_MODEL = "cnn_tiny"


def get_config(role: str = "kd") -> ml_collections.ConfigDict:
  roles = ("teacher", "scratch", "kd")
  if role not in roles:
    raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(roles)}.")
  config = common.base_config()
  config.dataset = "digits"
  config.num_epochs = 30
  config.batch_size = 64
  config.eval_batch_size = 120
  config.augment.crop_pad = 1  # 8x8 images: a 4-pixel shift would erase half a digit
  config.augment.flip = False  # mirrored digits are other digits
  # The study's views at this size: the CIFAR-100 settings (4 of 32 px padding, 8 px Cutout,
  # also after the dual view's strong view) scaled to 8 px.
  config.crop_flip.pad = 1
  config.cutout.size = 2
  config.dual.cutout_size = 2
  config.optimizer.learning_rate = 0.05
  config.optimizer.lr_milestones = (20, 25)
  config.log_every_steps = 22
  # Every 5 epochs: each Orbax save costs ~0.1 s, a third of a 30-epoch digits run if done
  # every epoch; a killed run still loses at most 5 epochs of a few seconds.
  config.checkpoint_every_steps = 110
  # Continuation-KD over 30 epochs: T steps down every 3 epochs, psi ramps over 22 epochs
  # (the CIFAR schedule's 150 of 200, scaled).
  config.continuation.t_max = 10
  config.continuation.psi_ramp_epochs = 22
  # DKD's warm-up: 20 of 240 epochs, scaled to 30.
  config.dkd.warmup_epochs = 3
  # MLKD's batch and class terms grow with (batch / classes): at the official weight 1 they
  # swamp the KD term on 10 classes and the student fails; 0.01 is the best of
  # results/sweep_mlkd_correlation_weight_digits.md (with LS's KD weight 9, 0.001 keeps
  # the same absolute weight).
  config.mlkd.correlation_weight = 0.01
  config.model = TEACHER_MODEL if role == "teacher" else STUDENT_MODEL
  config.method = "kd" if role == "kd" else "ce"
  config.teacher_workdir = "runs/digits/teacher" if role == "kd" else ""
  return config
