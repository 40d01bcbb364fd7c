"""What the command-line entry points share: start JAX, run the loop, report, and turn a
user's mistakes into one clear line."""

import ast
import contextlib
import functools
import glob
import logging
import os
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging

from kd_jax.train import checkpoint, loop, metrics, sharding

VERBOSE = flags.DEFINE_bool("verbose", False, "Show the whole traceback of an error, not one "
                            "line.")
# What a user gets wrong (names, options, paths, a changed config on resume): one line.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, checkpoint.CheckpointError)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# The keys most runs set, listed by --help.
COMMON_KEYS = ("method", "teacher_workdir", "num_epochs", "seed", "batch_size", "model",
               "dataset", "optimizer.learning_rate", "kd.temperature", "view.name",
               "allow_config_change", "progress_bar")


def help_text() -> str:
  """The methods, views, config files and most used keys, for an entry point's --help."""
  from kd_jax.experiments.configs import common
  from kd_jax import methods
  config = common.base_config()
  files = []
  for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
    name = os.path.basename(path)
    if name in ("__init__.py", "common.py", "text_common.py"):
      continue
    with open(path) as f:
      first = (ast.get_docstring(ast.parse(f.read())) or "").splitlines()[:1]
    files.append(f"  kd_jax/experiments/configs/{name:<24} {''.join(first)}")
  keys = [f"  --config.{key}={config[key.split('.')[0]][key.split('.')[1]]!r}" if "." in key
          else f"  --config.{key}={config[key]!r}" for key in COMMON_KEYS]
  return "\n".join([
      "", "Methods (--config.method): " + ", ".join(methods.METHODS) + ".",
      "Views to compose with any method (--config.view.name): "
      + ", ".join(methods.VIEW_NAMES) + "; each reads its own block (--config.cutmix_pick.score,"
      " --config.backward.steps, ...).",
      "Config files (--config=FILE:ARGUMENT):", *files,
      "Most used keys (defaults of kd_jax/experiments/configs/common.py, which documents "
      "every key):",
      *keys, ""])


def resolve_config_path(value: str) -> str:
  """``--config``'s file from anywhere: a bare name (``digits:kd``) or a path that does not
  exist from the working directory (``kd_jax/experiments/configs/digits.py:kd`` run
  elsewhere, or the configs' old place ``experiments/configs/digits.py:kd``) is looked up
  in this package's configs/."""
  path, colon, argument = value.partition(":")
  if os.path.exists(path):
    return value
  name = os.path.basename(path)
  candidate = os.path.join(CONFIG_DIR, name if name.endswith(".py") else f"{name}.py")
  return f"{candidate}{colon}{argument}" if os.path.exists(candidate) else value


def parse_flags(argv):
  """absl's flag parsing, with ``--config`` resolved from anywhere (resolve_config_path); an
  override of a key the config does not have (a typo) is one line naming the argument
  instead of ml_collections' bare ``AttributeError: 'temp'``."""
  argv = [f"--config={resolve_config_path(word[len('--config='):])}"
          if word.startswith("--config=") else word for word in argv]
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    key = str(error).strip("\"'")
    culprit = next((word.split("=")[0] for word in argv
                    if word.startswith("--config.") and key in word.split("=")[0].split(".")),
                   "a --config override")
    raise SystemExit(f"error: {culprit}: the config has no key {key!r} (--help lists the "
                     "common keys; kd_jax/experiments/configs/common.py documents them all).")


def one_line_errors(main):
  """Runs ``main``; a user's mistake exits with status 2 and one line ``error: ...`` (the
  traceback with --verbose)."""
  @functools.wraps(main)
  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as error:
      if VERBOSE.value:
        raise
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)
  return guarded


def run_app(main) -> None:
  """``app.run`` for an entry point: typo-proof flag parsing, one-line errors."""
  app.run(one_line_errors(main), flags_parser=parse_flags)


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
