"""Role-wise data augmentation (Fu et al. 2020): PBA-searched policies for a full-precision
teacher and its DoReFa low-bit student.

The argument picks the scale:
  digits    CPU scale: the embedded 8×8 digits, ResNet-18 with widths 16-32-64-128, 2-bit
            student; 16 trials searched on 400 training images with the other 1,038 for
            validation, 30 epochs everywhere.
  mnist5k   the embedded 5,000 MNIST digits (28×28): the digits scale's networks, optimiser
            and epochs; 16 trials searched on 1,000 training images with the other 3,000 for
            validation; pad 2 and cutout 6 (as configs/mnist.py). About 30× the digits
            scale's compute (a GPU run of all four stages takes minutes; the 2-core CPU,
            hours).
  cifar100  the paper's setting: ResNet-18 (64-128-256-512), 2-bit weights and
            activations, 16 trials searched on 4,000 training / 46,000 validation images,
            exploit/explore every 3 epochs, cutout 8 (needs a GPU and the TFDS cifar100).
            The optimiser is the official code's (bigaidream-projects/role-kd,
            scripts/cifar_KD_eval.sh and pba/kd/op_util.py Optimizer_w_MHGD): Adam lr 1e-3
            (ε 1e-5) for the student, L2 weight decay 1e-5 on conv / fc weights, batch 128,
            200 epochs, lr × 0.1 at 30/60/80 % of them (epochs 60, 120, 160); the teacher
            uses the same block (role-kd ships its teacher as a checkpoint, without its
            training settings). No global-norm clipping: role-kd's setup.py sets
            gradient_clipping_by_global_norm=5.0, but only the plain PBA model's train op
            (pba/model.py) reads it; the KD train op that trains the student
            (KDModel._build_train_op_kd) clips only its distillation gradient, per
            variable, to the norm of the cross-entropy gradient (set
            --config.optimizer.clip_global_norm=5 for the PBA model's rule). The KD loss
            stays Hinton KD (τ 4, weights 0.1/0.9) by our choice: role-kd's student is
            trained with cross-entropy + 0.4 × (MHGD + RKD + KD-SVD) feature and relation
            losses, that weight × 0.6 at the same epochs as the lr; we study the
            augmentation, not those losses.

Keys: the common schema (kd_jax/experiments/configs/common.py) with model = the low-bit student and
num_epochs / batch_size = the final trainings; role-wise adds teacher_model, seeds,
student_learning_rate, population_mode and search.* (see get_config).

Stages, each launched as
  python -m kd_jax.experiments.rolewise --config=kd_jax/experiments/configs/rolewise.py:digits \
      --workdir=runs/rolewise --stage=teacher
(then --stage=student_search, --stage=student, and '--config.seeds=(0,1,2,3,4)'
--stage=compare --out=results/rolewise_digits.md; each scale in its own workdir, mnist5k in
runs/rolewise_mnist5k; expected results: results/rolewise_digits.md and
results/rolewise_mnist5k.md, each ending with the commands of its stages):
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

from kd_jax.experiments.configs import common


def get_config(scale: str = "digits") -> ml_collections.ConfigDict:
  """The common schema (kd_jax/experiments/configs/common.py: dataset, model = the low-bit student,
  method and view.name = the student's KD method and an extra view composed with its policy,
  num_epochs and batch_size = the final trainings, optimizer, kd, augment, checkpoints,
  multi-host) plus role-wise's own keys: teacher_model, seeds (one population member each in
  the compare stage), student_learning_rate (fine-tuning from the teacher),
  population_mode and the search block (PBA); augment.cutout_size is common's."""
  if scale not in ("digits", "mnist5k", "cifar100"):
    raise ValueError(f"unknown scale {scale!r}; valid: digits, mnist5k, cifar100.")
  small = scale != "cifar100"  # the embedded datasets: narrow networks, SGD, 30 epochs
  c = common.base_config()
  c.dataset = scale
  c.model = "resnet18_narrow_w2a2" if small else "resnet18_w2a2"
  c.teacher_model = "resnet18_narrow" if small else "resnet18"
  c.method = "kd"  # the student's; the teacher trains with cross-entropy
  c.seeds = (0, 1, 2)
  c.eval_batch_size = 500
  c.population_mode = "vmap"  # or "unroll" (kd_jax.train.step.jit_population)

  # Pad and cutout: 1/8 and 1/4 of the side, as CIFAR-100's 4 and 8 of 32 px (mnist5k: its
  # configs' usual 2 and 6 of 28).
  c.augment.crop_pad = {"digits": 1, "mnist5k": 2, "cifar100": 4}[scale]
  c.augment.flip = not small  # a mirrored digit is another digit
  c.augment.cutout_size = {"digits": 2, "mnist5k": 6, "cifar100": 8}[scale]

  c.search = ml_collections.ConfigDict()
  c.search.population = 16
  c.search.train_examples = {"digits": 400, "mnist5k": 1000, "cifar100": 4000}[scale]
  c.search.epochs = 30 if small else 200
  c.search.exploit_every = 3
  c.search.batch_size = 50 if small else 128

  c.num_epochs = 30 if small else 200  # the final trainings
  c.batch_size = 64 if small else 128

  if small:
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 5e-4
    c.optimizer.lr_milestones = (20, 25)
    c.optimizer.lr_decay = 0.1
    c.student_learning_rate = 0.01  # fine-tuning from the FP teacher
  else:  # role-kd's optimiser (module docstring): Adam, L2 1e-5, no global-norm clipping
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.adam_eps = 1e-5
    c.optimizer.weight_decay = 1e-5
    c.optimizer.lr_milestones = (60, 120, 160)  # 30 / 60 / 80 % of 200 epochs
    c.optimizer.lr_decay = 0.1
    c.optimizer.clip_global_norm = None
    c.student_learning_rate = 1e-3  # role-kd's student lr (scripts/cifar_KD_eval.sh)

  # Populations checkpoint every exploit round (searches) and every epoch (trainings), or
  # every N steps (checkpoint_every_steps); multi-host keys as in common.py.
  c.kd.temperature = 4.0
  c.kd.ce_weight = 0.1
  c.kd.kd_weight = 0.9
  return c
