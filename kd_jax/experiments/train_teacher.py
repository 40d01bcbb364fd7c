"""Trains a teacher (or a student from scratch) with cross-entropy.

  python -m kd_jax.experiments.train_teacher --config=kd_jax/experiments/configs/digits.py:teacher \
      --workdir=runs/digits/teacher [--config.key=value ...]

Rerunning the same command resumes from the newest checkpoint in --workdir. Expected
result: for seed 0, one sample of the teacher row of results/demo_digits.md; each config's
docstring names its own.
"""

from collections.abc import Sequence

from absl import app, flags
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
  config = _CONFIG.value
  if config.method != "ce":
    raise app.UsageError(
      f"train_teacher trains with cross-entropy (method 'ce'); the config "
      f"says {config.method!r}: use kd_jax.experiments.distill for that."
    )
  launch.run(config, _WORKDIR.value)


if __name__ == "__main__":
  launch.run_app(main)
