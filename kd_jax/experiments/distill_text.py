"""Fine-tunes a BERT-style teacher or distils a student on a text dataset.

  python -m kd_jax.experiments.distill_text --config=kd_jax/experiments/configs/rotten_tomatoes.py:teacher \
      --workdir=runs/rt/teacher
  python -m kd_jax.experiments.distill_text --config=kd_jax/experiments/configs/rotten_tomatoes.py:kd \
      --workdir=runs/rt/kd --config.teacher_workdir=runs/rt/teacher

The same loop as the image runs (kd_jax.train.loop): rerunning the same command resumes from
the newest checkpoint in --workdir; SIGTERM saves a checkpoint and exits with 143.
Expected result: configs/rotten_tomatoes.py's docstring names it (results/text_rotten_tomatoes.md,
measured on a shortened version of that config).
"""

from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from kd_jax.experiments import launch

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file (file.py:arg).", lock_config=True
)
flags.mark_flag_as_required("config")
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Run directory (checkpoints, logs, summary).", required=True
)
__doc__ = (__doc__ or "") + launch.help_text()


def main(argv: Sequence[str]) -> None:
  del argv
  launch.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  launch.run_app(main)
