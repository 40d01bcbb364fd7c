"""What the command-line entry points share: start JAX, run the loop, report."""

import logging
import sys

import jax
from absl import logging as absl_logging

from kd_jax.train import loop, metrics, sharding


def run(config, workdir: str) -> dict:
  """Runs ``config`` in ``workdir``; exits 143 after saving if SIGTERM arrives."""
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO
  logging.getLogger("kd_jax").setLevel(logging.INFO)
  if config.multihost:
    sharding.initialize_multihost()
  logging.getLogger("kd_jax").info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  try:
    summary = loop.train_and_evaluate(config, workdir)
  except loop.PreemptedError as preempted:
    print(preempted, file=sys.stderr)
    sys.exit(143)
  print(metrics.summary_table(summary))
  return summary
