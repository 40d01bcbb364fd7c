"""What the command-line entry points share: start JAX, run the loop, report, and turn a
user's mistakes into one clear line."""

import ast
import contextlib
import functools
import glob
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging

from kd_jax.data import pipeline, tfds_loaders
from kd_jax.train import checkpoint, loop, metrics, run_lock, sharding

VERBOSE = flags.DEFINE_bool("verbose", False, "Show the whole traceback of an error, not one line.")
# What a user or the machine can get wrong, each as one line: names, options, paths and a
# changed config on resume (ValueError, TypeError); a run that diverged (FloatingPointError);
# a damaged run or teacher directory (CheckpointError); a full disk, a read-only or missing
# directory (OSError); a directory another run holds (WorkdirLockedError).
USER_ERRORS = (
  ValueError,
  TypeError,
  OSError,
  ImportError,
  FloatingPointError,
  checkpoint.CheckpointError,
  run_lock.WorkdirLockedError,
  tfds_loaders.DatasetNotPreparedError,
  pipeline.RecordError,
)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# The keys most runs set, listed by --help.
COMMON_KEYS = (
  "method",
  "teacher_workdir",
  "num_epochs",
  "seed",
  "batch_size",
  "model",
  "dataset",
  "optimizer.learning_rate",
  "kd.temperature",
  "view.name",
  "allow_config_change",
  "progress_bar",
)


# An entry point: absl calls it with the command line left after the flags.
Main = Callable[[Sequence[str]], None]


def help_text() -> str:
  """The methods, views, models by family, config files and most used keys, for an entry
  point's --help."""
  from kd_jax import methods, models
  from kd_jax.experiments.configs import common

  config = common.base_config()
  files = []
  for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
    name = os.path.basename(path)
    if name in ("__init__.py", "common.py", "text_common.py"):
      continue
    with open(path) as f:
      first = (ast.get_docstring(ast.parse(f.read())) or "").splitlines()[:1]
    files.append(f"  kd_jax/experiments/configs/{name:<24} {''.join(first)}")
  keys = [
    f"  --config.{key}={config[key.split('.')[0]][key.split('.')[1]]!r}"
    if "." in key
    else f"  --config.{key}={config[key]!r}"
    for key in COMMON_KEYS
  ]
  return "\n".join(
    [
      "",
      "Methods (--config.method): " + ", ".join(methods.METHODS) + ".",
      "Views to compose with any method (--config.view.name): "
      + ", ".join(methods.VIEW_NAMES)
      + "; each reads its own block (--config.cutmix_pick.score,"
      " --config.backward.steps, ...).",
      "Models (--config.model, --config.teacher_model), by family:",
      models.families_text(),
      "Config files (--config=FILE:ARGUMENT):",
      *files,
      "Most used keys (defaults of kd_jax/experiments/configs/common.py, which documents "
      "every key):",
      *keys,
      "",
    ]
  )


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


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with ``--config`` resolved from anywhere (resolve_config_path); an
  override of a key the config does not have (a typo) and any other flag mistake (an unknown
  flag, a value of the wrong type, a missing required flag) are one line naming the
  argument instead of a traceback."""
  argv = [
    f"--config={resolve_config_path(word[len('--config=') :])}"
    if word.startswith("--config=")
    else word
    for word in argv
  ]
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    message = unknown_key_message(error, argv)
  except flags.Error as error:
    message = f"error: {' '.join(str(error).split())} (--help lists the flags)."
  print(message, file=sys.stderr)
  sys.exit(2)  # a mistake on the command line, as every other user error


def unknown_key_message(error: BaseException, argv: Sequence[str]) -> str:
  """The line for ml_collections' error about an override of a key the config lacks: its
  message is the key's repr, sometimes followed by a line ``Did you mean "x" ...?``."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError)
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  first, _, rest = text.partition("\n")
  key = first.strip().strip("\"'")
  suggestion = ""
  if "Did you mean" in rest and '"' in rest:
    suggestion = f"; did you mean {rest.split(chr(34))[1]!r}?"
  culprit = next(
    (
      word.split("=")[0]
      for word in argv
      if word.startswith("--config.") and key in word.split("=")[0].split(".")
    ),
    "a --config override",
  )
  return (
    f"error: {culprit}: the config has no key {key!r}{suggestion} (--help lists the "
    "common keys; kd_jax/experiments/configs/common.py documents them all)."
  )


def one_line_errors(main: Main) -> Main:
  """Runs ``main``; a user's mistake (a name, an option, a changed config: ValueError,
  TypeError; flag mistakes too, in ``parse_flags``) exits with status 2 and one line
  ``error: ...`` (the traceback with --verbose); a diverged run, a damaged checkpoint, a
  full disk or a directory in use exit with status 1 and one line; SIGTERM or SIGINT during training
  saves and exits with 143 or 130 (``exit_143_on_sigterm``), and Ctrl-C outside the
  training loop (nothing in flight) exits with 130 and one line."""

  @functools.wraps(main)
  def guarded(argv: Sequence[str]) -> None:
    try:
      with exit_143_on_sigterm():
        main(argv)
        return
    except KeyboardInterrupt:
      if VERBOSE.value:
        raise
      print(
        "interrupted (SIGINT); the newest complete checkpoint is kept: rerun the same "
        "command to resume.",
        file=sys.stderr,
      )
      sys.exit(130)
    except USER_ERRORS as error:
      if VERBOSE.value:
        raise
      print(f"error: {error_line(error)}", file=sys.stderr)
      sys.exit(2 if isinstance(error, (ValueError, TypeError)) else 1)

  return guarded


def error_line(error: BaseException) -> str:
  """The error's message on one line: errors of Orbax, TensorStore or the OS can run to
  pages (a TensorStore status, a list of paths), so only the first line is kept, and an
  OSError says which file."""
  if isinstance(error, OSError) and error.strerror:  # without "[Errno 28]"
    return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
  lines = str(error).strip().splitlines() or [type(error).__name__]
  return lines[0] if len(lines) == 1 else f"{lines[0]} (--verbose shows the rest)"


def check_workdir(workdir: str | None) -> str:
  """``--workdir``, refused when empty (it would write into the current directory)."""
  if not workdir or not workdir.strip():
    raise ValueError("--workdir is empty: name the run directory (--workdir=runs/NAME).")
  return workdir


def run_app(main: Main) -> None:
  """``app.run`` for an entry point: typo-proof flag parsing, one-line errors, and a second
  SIGTERM or Ctrl-C during training exits at once (loop.EXIT_ON_SECOND_SIGNAL)."""
  loop.EXIT_ON_SECOND_SIGNAL = True
  app.run(one_line_errors(main), flags_parser=parse_flags)


def configure_logging() -> None:
  """kd_jax's own messages at INFO. Orbax's and TensorStore's logs (absl logging) are left
  out unless --verbose: their failures reach kd_jax as exceptions, which end the command
  with one line, while their own log records would print each failed write's traceback."""
  verbose = flags.FLAGS.is_parsed() and VERBOSE.value
  absl_logging.set_verbosity(absl_logging.ERROR if verbose else absl_logging.FATAL)
  logging.getLogger("kd_jax").setLevel(logging.INFO)
  if not verbose:
    sys.unraisablehook = _quiet_closed_event_loops


def _quiet_closed_event_loops(unraisable) -> None:
  """Drops the "Event loop is closed" errors that TensorStore's late callbacks raise after
  Orbax gave up a read of a damaged file (kd_jax reports the damage itself, in one line);
  anything else goes to Python's default hook."""
  if (
    isinstance(unraisable.exc_value, RuntimeError)
    and str(unraisable.exc_value) == "Event loop is closed"
  ):
    return
  sys.__unraisablehook__(unraisable)


def start(config: ml_collections.ConfigDict) -> None:
  """Logging, then ``jax.distributed.initialize`` when ``config.multihost`` (its arguments
  from the config, or from the cluster's environment where they are None)."""
  configure_logging()
  if config.get("multihost", False):
    sharding.initialize_multihost(
      config.coordinator_address, config.num_processes, config.process_id
    )
  logging.getLogger("kd_jax").info(
    "JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(), jax.process_count()
  )


@contextlib.contextmanager
def exit_143_on_sigterm() -> Iterator[None]:
  """SIGTERM or SIGINT made the loop save a checkpoint and stop: say so and exit with 128 +
  the signal's number (143 for SIGTERM, 130 for SIGINT), as a process killed by it would."""
  try:
    yield
  except loop.PreemptedError as preempted:
    print(preempted, file=sys.stderr)
    sys.exit(128 + int(preempted.signum))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs ``config`` in ``workdir``; exits 143 (130 for Ctrl-C) after saving if SIGTERM
  (SIGINT) arrives."""
  check_workdir(workdir)
  start(config)
  with exit_143_on_sigterm():
    summary = loop.train_and_evaluate(config, workdir)
  print(metrics.summary_table(summary))
  return summary
