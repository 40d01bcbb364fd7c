"""Distils a student from a frozen teacher (or trains one from scratch with method "ce").

  python -m kd_jax.experiments.distill --config=kd_jax/experiments/configs/digits.py:kd \
      --workdir=runs/digits/kd --config.teacher_workdir=runs/digits/teacher

Methods: kd_jax.methods.METHODS (the README's table). Rerunning the same command resumes
from the newest checkpoint in --workdir; SIGTERM saves a checkpoint and exits with 143.
Expected result: for seed 0 of the config's kd row, one sample of the KD row of
results/demo_digits.md (its 5-seed mean ± std); each config's docstring names its own.
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
