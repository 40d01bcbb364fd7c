"""Role-wise data augmentation (Fu et al. 2020): PBA-searched policies for a full-precision
teacher and its DoReFa low-bit student.

The argument picks the scale:
  digits    CPU scale: the embedded 8×8 digits, ResNet-18 with widths 16-32-64-128, 2-bit
            student; 16 trials searched on 400 training images with the other 1,038 for
            validation, 30 epochs everywhere.
  cifar100  the paper's setting: ResNet-18 (64-128-256-512), 2-bit weights and
            activations, 16 trials searched on 4,000 training / 46,000 validation images,
            exploit/explore every 3 epochs, cutout 8 (needs a GPU and the TFDS cifar100).

Stages (python -m experiments.rolewise --stage=...):
  teacher         PBA schedule search for the teacher (cross-entropy), then the teacher
                  trained with its best schedule on all training data
  student_search  PBA schedule search for the low-bit student under KD from the frozen
                  teacher (the teacher sees the student's augmented images)
  student         the student trained with its own schedule on all training data
  compare         the evidence: students without a learned policy, with the teacher's
                  schedule, and with their own (role-wise), over config.seeds, as one
                  population
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config(scale: str = "digits"):
  if scale not in ("digits", "cifar100"):
    raise ValueError(f"unknown scale {scale!r}; valid: digits, cifar100.")
  c = ml_collections.ConfigDict()
  c.dataset = scale
  c.data_dir = placeholder(str)
  c.teacher_model = "resnet18_narrow" if scale == "digits" else "resnet18"
  c.student_model = "resnet18_narrow_w2a2" if scale == "digits" else "resnet18_w2a2"
  c.seeds = (0, 1, 2)
  c.eval_batch_size = 500
  c.population_mode = "vmap"  # or "unroll" (kd_jax.train.step.jit_population)

  c.augment = ml_collections.ConfigDict()
  c.augment.pad = 1 if scale == "digits" else 4
  c.augment.flip = scale != "digits"  # a mirrored digit is another digit
  c.augment.cutout_size = 2 if scale == "digits" else 8

  c.search = ml_collections.ConfigDict()
  c.search.population = 16
  c.search.train_examples = 400 if scale == "digits" else 4000
  c.search.epochs = 30 if scale == "digits" else 200
  c.search.exploit_every = 3
  c.search.batch_size = 50 if scale == "digits" else 128

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 30 if scale == "digits" else 200
  c.train.batch_size = 64 if scale == "digits" else 128

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.05 if scale == "digits" else 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 5e-4
  c.optimizer.lr_milestones = (20, 25) if scale == "digits" else (60, 120, 160)
  c.optimizer.lr_decay = 0.1
  c.student_learning_rate = 0.01 if scale == "digits" else 0.02  # from the FP teacher

  # Populations checkpoint every exploit round (searches) and every epoch (trainings), or
  # every N steps; multi-host jobs as in experiments/configs/common.py.
  c.checkpoint_every_steps = 0
  c.multihost = False
  c.coordinator_address = placeholder(str)
  c.num_processes = placeholder(int)
  c.process_id = placeholder(int)

  c.kd = ml_collections.ConfigDict()
  c.kd.temperature = 4.0
  c.kd.ce_weight = 0.1
  c.kd.kd_weight = 0.9
  return c
