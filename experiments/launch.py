"""What the command-line entry points share: start JAX, run the loop, report."""

import contextlib
import logging
import sys

import jax
from absl import logging as absl_logging

from kd_jax.train import loop, metrics, sharding


def configure_logging() -> None:
  """kd_jax's own messages at INFO; Orbax's per-file chatter (absl logging) only on errors."""
  absl_logging.set_verbosity(absl_logging.ERROR)
  logging.getLogger("kd_jax").setLevel(logging.INFO)


def start(config) -> None:
  """Logging, then ``jax.distributed.initialize`` when ``config.multihost`` (its arguments
  from the config, or from the cluster's environment where they are None)."""
  configure_logging()
  if config.get("multihost", False):
    sharding.initialize_multihost(config.coordinator_address, config.num_processes,
                                  config.process_id)
  logging.getLogger("kd_jax").info("JAX devices: %s (process %d of %d)", jax.devices(),
                                   jax.process_index(), jax.process_count())


@contextlib.contextmanager
def exit_143_on_sigterm():
  """SIGTERM made the loop save a checkpoint and stop: say so and exit with 128 + 15."""
  try:
    yield
  except loop.PreemptedError as preempted:
    print(preempted, file=sys.stderr)
    sys.exit(143)


def run(config, workdir: str) -> dict:
  """Runs ``config`` in ``workdir``; exits 143 after saving if SIGTERM arrives."""
  start(config)
  with exit_143_on_sigterm():
    summary = loop.train_and_evaluate(config, workdir)
  print(metrics.summary_table(summary))
  return summary
