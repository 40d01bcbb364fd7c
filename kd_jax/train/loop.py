"""The one training loop: images and text, teachers and students, one process or many.

``train_and_evaluate(config, workdir)`` builds the run from its config (kd_jax.train.setup:
data, student, teacher, preprocess, method), resumes from the newest intact checkpoint in
``workdir``, and writes metrics, checkpoints, a summary and a plot there. The loop body is
deliberately plain: fetch this process's slice of the global batch, run the compiled step
(kd_jax.train.step), and at a few sync points (log interval, epoch end, checkpoint) look at
metrics on the host. Every guarantee lives here once, for every modality and for
populations: one process holds a workdir at a time (kd_jax.train.run_lock); a rerun whose
config, teacher or model would change the result is refused before anything is restored
and touches nothing; SIGTERM and SIGINT save and exit; a non-finite loss stops naming the
step; a checkpoint that fails its checksums is set aside, loudly, and the previous one used;
metrics.jsonl is append-only; a resumed run reaches the same parameters; and the step
compiles once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import methods
from kd_jax.data import EpochSampler, pipeline
from kd_jax.methods import backward_kd
from kd_jax.train import checkpoint, files, integrity, metrics, optim, run_lock, sharding
from kd_jax.train import setup as setup_lib
from kd_jax.train import state as state_lib
from kd_jax.train import step as step_lib

logger = logging.getLogger(__name__)

# The shapes the loop passes around: a train state (``{"step", "params", "batch_stats",
# "opt_state", "rng", ...}``), a batch of device arrays, and any pytree of arrays.
State = dict[str, Any]
Batch = dict[str, Any]
Pytree = Any
# ``step(state, batch, teacher_variables, hparams, teacher_constants) -> (state, metrics)``.
TrainStep = Callable[[State, Batch, Pytree, Pytree, Pytree], tuple[State, dict[str, Any]]]

# Config keys that may differ between a run and its resumption without changing its result.
_RESUME_NEUTRAL_KEYS = {
  "progress_bar",
  "log_every_steps",
  "multihost",
  "data_dir",
  "download",
  "coordinator_address",
  "num_processes",
  "process_id",
  "checkpoint_every_steps",
  "max_checkpoints_to_keep",
  "eval_batch_size",
  "allow_config_change",
  "teacher_workdir",
  "teacher_checkpoint",
  "teacher_model",
}
# Leaves of other blocks that cannot change the result: how the input is read, not what.
_RESUME_NEUTRAL_LEAVES = {"input.workers", "input.prefetch", "input.cache", "input.cache_limit_gb"}
# Keys a resumption may change with a warning: a longer run (num_epochs). The teacher's path
# and model name may change freely: the teacher itself is compared by its checksum
# (check_resume_identity).
_RESUME_WARNING_KEYS = {"num_epochs"}
# Keys added to the config since runs were first saved, with the value that gives the code
# of before: a checkpoint without one of them was trained with that value, so resuming it
# with another is a change like any other.
ADDED_KEY_DEFAULTS = {
  "label_smoothing": 0.0,
  "optimizer.schedule": "",
  "optimizer.warmup_epochs": 0.0,
  "optimizer.decay_norm_and_bias": None,
  "optimizer.lr_reference_batch": 0,
  "kd.standardize": False,
  "augment.randaugment_ops": 0,
  "augment.randaugment_magnitude": 9,
}


class ConfigChangedError(ValueError):
  """A run directory was resumed with a config that changes the run's result."""


def _agreed_preemption(
  local_signal: int | None, step: int, sync_every: int, force: bool = False
) -> int | None:
  """The signal every process stops for at ``step`` to save, or None. One process stops as
  soon as its own SIGTERM or SIGINT arrives. Processes of a multi-host job save together,
  so they must agree on the step: at every ``sync_every``-th step (the same steps on all of
  them) they gather their signals, and all stop if any was signalled; a signal therefore
  takes effect within ``sync_every`` steps, for the cost of one tiny collective per
  ``sync_every`` steps (``force``: gather now, at the end of the run)."""
  if jax.process_count() == 1:
    return local_signal
  if step % sync_every and not force:
    return None
  from jax.experimental import multihost_utils

  signals = np.asarray(multihost_utils.process_allgather(np.int32(local_signal or 0)))
  return int(signals.max()) or None


class PreemptedError(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint was saved. Rerun the same command to resume."""

  def __init__(self, message: str, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What a second signal does while the first is being handled. The command-line scripts set
# this (kd_jax.experiments.launch): the process exits at once, keeping the newest complete
# checkpoint. Library use (a notebook) keeps Python's own behaviour for the second signal:
# KeyboardInterrupt for SIGINT, termination for SIGTERM, so a kernel survives it.
EXIT_ON_SECOND_SIGNAL = False


@contextlib.contextmanager
def _stop_signals(workdir: str):
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop polls, so it saves a checkpoint
  and stops at the end of the current step instead of dying mid-save (an interrupted Orbax
  save can leave the process waiting on its threads for minutes). A second signal while
  the first is being handled: see EXIT_ON_SECOND_SIGNAL."""
  received = {"signal": None}
  previous = {}

  def restore_handlers():
    for signum, old in previous.items():
      try:
        signal.signal(signum, old if old is not None else signal.SIG_DFL)
      except (ValueError, TypeError, OSError):
        pass

  def handler(signum, frame):
    del frame
    if received["signal"] is None:
      received["signal"] = signum
      return
    if EXIT_ON_SECOND_SIGNAL:
      print(
        f"{signal.Signals(signum).name} again: exiting now without saving; the newest "
        f"complete checkpoint in {workdir} is kept.",
        file=sys.stderr,
        flush=True,
      )
      os._exit(128 + signum)
    restore_handlers()
    signal.raise_signal(signum)  # as if the loop were not there

  for signum in STOP_SIGNALS:
    try:
      previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: no handlers, the flag stays None
      break
  try:
    yield received
  finally:
    restore_handlers()


def epoch_hparams(config, method: methods.Method, epoch: int, num_epochs: int) -> dict[str, float]:
  """The values the step reads during ``epoch`` (counted from 1), from the config's ``kd``,
  ``view.weight`` and the method's own block (``continuation`` for Continuation-KD and
  Annealing-KD): kd_jax.methods.hparams_at."""
  block = method.schedule_block
  return methods.hparams_at(
    method,
    epoch,
    num_epochs,
    kd=config.kd.to_dict(),
    view_weight=config.view.weight,
    schedule_options=config[block].to_dict() if block else None,
    label_smoothing=config.get("label_smoothing", 0.0),
  )


def _device_hparams(values: dict[str, float], mesh) -> dict[str, jax.Array]:
  """Schedule values as replicated arrays: changing them never recompiles the step."""
  return sharding.replicate({k: jnp.float32(v) for k, v in values.items()}, mesh)


def _flat_config(config: dict, prefix: str = "") -> dict:
  """``{"optimizer.lr_milestones": [150, 180], ...}``, normalised as JSON stores it (tuples
  become lists), so a config and its checkpointed copy compare equal."""
  flat = {}
  for key, value in json.loads(json.dumps(config)).items():
    if isinstance(value, dict):
      flat.update(_flat_config(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


# Config blocks read only by some methods: each view's block (named after the view) and each
# schedule block; derived from the registry so a new view or method is covered.
METHOD_BLOCKS = tuple(name for name in methods.VIEW_NAMES if name != "none") + tuple(
  sorted({m.schedule_block for m in methods.METHODS.values() if m.schedule_block})
)


def unread_blocks(method: methods.Method, config=None) -> tuple[str, ...]:
  """The blocks of METHOD_BLOCKS that ``method`` does not read: a change there cannot
  change its run. The dual view also reads its strong view's block (``config.dual.strong``)."""
  read = {method.view, method.schedule_block}
  if method.view == "dual" and config is not None and "dual" in config:
    read.add(config.dual.get("strong"))
  return tuple(block for block in METHOD_BLOCKS if block not in read)


def check_resume_config(
  saved: dict, current: dict, workdir: str, ignored: tuple[str, ...] = ()
) -> None:
  """Resuming ``workdir`` with ``current``: keys that cannot change the result pass, a longer
  run or a moved teacher warns, and any other changed value is refused, naming the keys,
  unless ``current["allow_config_change"]`` (the run would then mix two configs). Keys only
  one side has (the config schema grew or was renamed since the checkpoint was written) are
  warned about: the run was trained with the code of its time."""
  saved, current = _flat_config(saved), _flat_config(current)
  saved = {**{key: value for key, value in ADDED_KEY_DEFAULTS.items() if key in current}, **saved}
  changed = sorted(
    key
    for key in set(saved) | set(current)
    if key.split(".")[0] not in _RESUME_NEUTRAL_KEYS
    and key not in _RESUME_NEUTRAL_LEAVES
    and key.split(".")[0] not in ignored
    and saved.get(key) != current.get(key)
  )
  details = {
    key: f"{key}: {saved.get(key, '(absent)')!r} -> {current.get(key, '(absent)')!r}"
    for key in changed
  }
  refused = [
    key
    for key in changed
    if key.split(".")[0] not in _RESUME_WARNING_KEYS and key in saved and key in current
  ]
  if refused and not current.get("allow_config_change", False):
    raise ConfigChangedError(
      f"{workdir} holds a run with another config; resuming it would change its result: "
      f"{'; '.join(details[key] for key in refused)}. Use a new --workdir, or set "
      f"--config.allow_config_change=True (allow_config_change in the config) to resume "
      "anyway."
    )
  if changed:
    logger.warning(
      "resuming %s with a config that differs from its checkpoint in: %s",
      workdir,
      "; ".join(details.values()),
    )


def run_identity(teacher_variables) -> dict[str, str]:
  """What a run depends on besides its config, by content: the frozen teacher's parameters
  (a checksum of every array, kd_jax.train.integrity), so that a resumed run is refused
  when its teacher changed, wherever the teacher now lives."""
  if not teacher_variables:
    return {}
  return {"teacher": integrity.digest(integrity.fingerprints(teacher_variables))}


def check_resume_identity(
  saved: dict | None, current: dict, workdir: str, allow_change: bool = False
) -> None:
  """Refuses resuming ``workdir`` when what it was trained from (``run_identity``) differs,
  naming it, unless ``allow_change``; a checkpoint written before identities were recorded
  cannot be checked and is resumed with a warning."""
  if saved is None:
    if current:
      logger.warning(
        "%s was written before kd_jax recorded its teacher's checksum: the "
        "teacher cannot be verified to be the same.",
        workdir,
      )
    return
  changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
  if not changed:
    return
  details = "; ".join(
    f"{key}: checksum {saved.get(key, '(none)')} -> {current.get(key, '(none)')}" for key in changed
  )
  if allow_change:
    logger.warning("resuming %s with a different %s (%s).", workdir, ", ".join(changed), details)
    return
  raise ConfigChangedError(
    f"{workdir} was trained with another {', '.join(changed)} ({details}); resuming would "
    "mix two. Use a new --workdir, point at the teacher (or data_dir) it was trained "
    "with, or set --config.allow_config_change=True to resume anyway."
  )


def evaluate(
  eval_step: Callable[..., dict[str, Any]],
  variables: Pytree,
  data: Any,
  batch_size: int,
  mesh: Any,
  teacher_variables: Pytree,
  regression: bool = False,
  *,
  check_teacher_sums: bool = False,
) -> dict[str, float]:
  """Top-1, loss and (with a teacher) agreement and KL over a whole split (``data``: a
  kd_jax.data Split, an ImageData, an ImageDataset or a dict of host arrays); Pearson/Spearman
  ×100 and MSE for regression. ``check_teacher_sums``: log ``check_teacher``'s warning."""
  split = _as_split(data)
  totals: dict[str, float] = {}
  predictions = []
  for batch in split.eval_batches(batch_size, jax.process_index(), jax.process_count()):
    sums = jax.device_get(
      eval_step(variables, sharding.global_batch(batch, mesh), teacher_variables)
    )
    if regression:
      keep = np.asarray(sums.pop("predictions"))
      predictions.append(keep[: int(round(float(sums["count"])))])
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + float(value)
  if regression:
    labels = cast(Any, split).arrays["label"]  # regression tasks are in-memory text splits
    return metrics.finalize_regression(totals, np.concatenate(predictions), labels)
  if check_teacher_sums and "teacher_spread" in totals and jax.process_index() == 0:
    warning = check_teacher(totals)
    if warning:
      logger.warning("%s", warning)
  return metrics.finalize_eval(totals)


def check_teacher(sums: dict[str, float]) -> str | None:
  """A warning when the teacher cannot teach, from an evaluation's summed counts
  (``make_eval_step``): its logits are the same for every example (they do not depend on
  the input: an untrained network, or a zero-initialised head), or its top-1 is within
  three standard deviations of chance (a wrong checkpoint, class order or preprocessing).
  None when it looks fine."""
  count = max(sums["count"], 1.0)
  if sums["teacher_spread"] == 0.0:
    return (
      f"the teacher's logits are the same for all {int(count)} evaluation examples: they do "
      "not depend on the input (an untrained teacher, or a zero-initialised head), so the KD "
      "term carries no information and backward-KD samples equal x. Check the teacher."
    )
  chance = sums["teacher_chance"] / count
  top1 = sums["teacher_correct"] / count
  if top1 <= chance + 3.0 * math.sqrt(chance * (1.0 - chance) / count):
    return (
      f"the teacher's top-1 on the evaluation split is {100 * top1:.2f}%, at chance "
      f"({100 * chance:.2f}% for {round(1 / chance)} classes): check the teacher's run or "
      "checkpoint, its class order and its preprocessing."
    )
  return None


def _as_split(data) -> pipeline.Split:
  if hasattr(data, "eval_batches"):
    return data
  if hasattr(data, "split"):  # kd_jax.data.ImageData
    return data.split
  if isinstance(data, dict):
    return pipeline.ArraySplit(data)
  return pipeline.ArraySplit({"image": data.images, "label": data.labels})


@dataclasses.dataclass
class Loop:
  """What ``run_loop`` trains: a compiled step, where its batches and values come from, how
  it is evaluated, and the hooks a run adds. The same loop serves single runs (images,
  text) and populations (kd_jax.pba), so every guarantee holds on every path.

  ``batches(start_step, stop_step)``: an iterator over the global batches of those steps,
  as device arrays (each process reads only its share; kd_jax.data.pipeline); the loop
  closes it when it stops.
  ``hparams_at(epoch)``: ``(device hparams, values to log)`` for ``epoch`` (from 1).
  ``evaluate(state, epoch)``: a dict of test values, or None to skip this epoch.
  ``start_of_epoch(state, epoch)``, ``end_of_epoch(state, epoch, row)``: hooks that may
  return a new state (a backward-KD pool; PBA's exploit/explore); ``end_of_epoch`` runs
  before the epoch's checkpoint, so a resumed run continues from after it.
  ``extra_meta(step)`` is saved with every checkpoint; ``restore_extra(meta)`` reads it back.
  ``config``: the run's config as a dict (saved; a resumed run warns on changed keys).
  ``log_every_steps``: a train row in metrics.jsonl and a log line (logger INFO, process 0)
  every that many steps (0: only at epoch ends, where a line with the test values follows);
  ``examples_per_step`` (0: not shown) and ``example_name`` give the lines' examples/s.
  """

  train_step: TrainStep
  batches: Callable[[int, int], Iterator[Batch]]
  hparams_at: Callable[[int], tuple[Pytree, dict[str, float]]]
  evaluate: Callable[[State, int], dict[str, Any] | None]
  steps_per_epoch: int
  total_steps: int
  config: dict[str, Any]
  teacher_variables: Pytree = dataclasses.field(default_factory=dict)
  teacher_constants: Pytree = dataclasses.field(default_factory=dict)
  lr_schedule: Callable[[int], Any] | None = None
  start_of_epoch: Callable[[State, int], State] | None = None
  end_of_epoch: Callable[[State, int, dict[str, Any]], State] | None = None
  extra_meta: Callable[[int], dict[str, Any]] | None = None
  restore_extra: Callable[[dict[str, Any]], None] | None = None
  checkpoint_every_steps: int = 0
  max_checkpoints_to_keep: int = 3
  log_every_steps: int = 100
  progress_bar: bool = True
  score: str = "top1"
  examples_per_step: int = 0
  # config blocks this run does not read (check_resume_config)
  resume_ignored: tuple[str, ...] = ()
  # more of run_identity's entries
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)
  example_name: str = "examples"


@dataclasses.dataclass
class LoopResult:
  """What ``run_loop`` returns: the final state, one row per epoch (test values and the
  epoch's training means), the steps done, the training time and how often XLA compiled
  the step in this call (1 unless a shape, dtype or Python value changed between steps)."""

  state: State
  history: list[dict[str, Any]]
  steps: int
  train_seconds: float
  compilations: int


def run_loop(spec: Loop, state, workdir: str) -> LoopResult:
  """Trains ``state`` with ``spec`` in ``workdir``, resuming from its newest intact
  checkpoint; checkpoints, logs metrics, stops on SIGTERM/SIGINT and on a non-finite loss.

  The directory is locked for the run (kd_jax.train.run_lock: a second process stops at
  once). Before anything is restored, the newest checkpoint's config and teacher are
  compared with this run's (``check_resume_config``, ``check_resume_identity``) and its
  arrays' shapes with ``state``'s: a mismatch is refused and touches nothing.
  """
  if spec.total_steps < 1 or spec.steps_per_epoch < 1:
    raise ValueError(
      f"a run needs at least one step; got {spec.total_steps} steps of "
      f"{spec.steps_per_epoch} per epoch (check num_epochs and the batch size)."
    )
  if not workdir:
    raise ValueError("workdir is empty: name the run directory.")
  with run_lock.hold(workdir), _stop_signals(workdir) as stop:
    run_checkpoints = checkpoint.RunCheckpoints(workdir, spec.max_checkpoints_to_keep)
    try:
      with _counting_compilations(spec.train_step) as compilations:
        result = _train(spec, state, workdir, run_checkpoints, stop)
      result = dataclasses.replace(result, compilations=compilations[0])
      # A signal that arrived after the last step was checked (during the final wait, or
      # while a finished run was read back) still stops the process: a pipeline of runs
      # must not start its next one.
      signum = _agreed_preemption(stop["signal"], result.steps, 1, force=True)
      if signum is not None:
        raise PreemptedError(
          f"{signal.Signals(signum).name}: the run in "
          f"{run_checkpoints.directory} is complete and saved; rerun the "
          "same command to report its result.",
          signum,
        )
      return result
    except BaseException:
      # A save may be in flight: let it finish (it holds a good state) so that the process
      # exits promptly and cleanly; its own failure must not hide the error being raised.
      try:
        run_checkpoints.wait()
      except Exception as error:
        logger.debug("the last save did not complete: %s", error)
      raise
    finally:
      run_checkpoints.close()


def _train(
  spec: Loop, state, workdir: str, run_checkpoints: checkpoint.RunCheckpoints, stop: dict
) -> LoopResult:
  steps_per_epoch, total_steps = spec.steps_per_epoch, spec.total_steps
  history: list[dict[str, Any]] = []
  # Running sums of the current epoch's training metrics (checkpointed: a run resumed
  # mid-epoch reports the same epoch means as an uninterrupted one).
  epoch_sums: dict[str, float] = {"loss": 0.0, "accuracy": 0.0, "count": 0}
  seconds_before = 0.0  # wall-clock time of the loop in earlier (interrupted) processes
  identity = {**run_identity(spec.teacher_variables), **spec.identity}

  def check_meta(meta: dict) -> None:  # before anything is restored
    if "config" not in meta:
      raise checkpoint.CheckpointMismatchError(
        f"{workdir} holds a checkpoint that no training run wrote (no config in its "
        "metadata: a saved teacher, or another tool's); nothing was changed. Use a new "
        "--workdir."
      )
    check_resume_config(meta["config"], spec.config, workdir, spec.resume_ignored)
    check_resume_identity(
      meta.get("identity"), identity, workdir, bool(spec.config.get("allow_config_change", False))
    )

  restored = run_checkpoints.restore_latest(state, check_meta)
  step = 0
  if restored is not None:
    state, meta = restored
    step = int(meta["step"])
    history = meta["history"]
    epoch_sums = meta.get("epoch_sums", epoch_sums)
    seconds_before = meta.get("train_seconds", 0.0)
    if spec.restore_extra is not None:
      spec.restore_extra(meta)
    logger.info("resumed %s from step %d", workdir, step)
  is_writer = jax.process_index() == 0
  writer = metrics.MetricWriter(workdir, is_writer, resume_step=step)
  hparams_epoch = None
  hparams: Pytree = {}  # set before the first step
  logged_values: dict[str, float] = {}
  loop_start = time.perf_counter()

  def train_seconds() -> float:
    """Wall-clock seconds of the training loop (compilation, steps, evaluation, saving)."""
    return seconds_before + time.perf_counter() - loop_start

  def save(step: int, finished: bool = False) -> None:
    # Copies: the save finishes in the background while the loop keeps appending.
    extra = spec.extra_meta(step) if spec.extra_meta is not None else {}
    run_checkpoints.save(
      state,
      {
        "step": step,
        "config": spec.config,
        "history": list(history),
        "epoch_sums": dict(epoch_sums),
        "finished": finished,
        "train_seconds": train_seconds(),
        "identity": identity,
        **extra,
      },
    )

  last_saved_step = step if restored is not None else None
  pending: list[tuple[int, dict]] = []  # device metrics not yet looked at on the host
  logged_values: dict[str, float] = {}
  has_accuracy = []  # whether the step reports accuracy (classes, not regression)
  # Means of the steps since the last log line (the epoch's are in epoch_sums).
  log_sums: dict[str, float] = {"loss": 0.0, "accuracy": 0.0, "count": 0}
  num_epochs = -(-total_steps // steps_per_epoch)
  pace = metrics.Pace(step, total_steps, spec.examples_per_step)

  def train_values(sums: dict) -> dict[str, float]:
    """Mean loss, top-1 (%) and lr for a log line, from running sums of step metrics."""
    count = max(sums["count"], 1)
    values = {"loss": sums["loss"] / count}
    if has_accuracy:
      values["top1"] = 100.0 * sums["accuracy"] / count
    if spec.lr_schedule is not None:
      values["lr"] = float(spec.lr_schedule(step - 1))
    return values

  def flush() -> None:
    """Looks at the pending step metrics: stop on a non-finite loss, log the rest."""
    host_rows = jax.device_get([row for _, row in pending])
    for (row_step, _), row in zip(pending, host_rows):
      bad_labels = int(np.sum(row.pop(step_lib.LABEL_ERRORS, 0)))
      if bad_labels:
        run_checkpoints.wait()  # the checkpoints written so far stay as they are
        raise ValueError(
          f"the batch of step {row_step} has {bad_labels} label(s) outside [0, number of "
          "classes): check the dataset's labels (class ids count from 0)."
        )
      loss = np.asarray(row["loss"])
      if not np.all(np.isfinite(loss)):
        run_checkpoints.wait()
        kept = (
          f"the last good checkpoint (step {last_saved_step}) is kept in "
          f"{run_checkpoints.directory}"
          if last_saved_step is not None
          else "no checkpoint had been written yet"
        )
        where = (
          "" if loss.ndim == 0 else f" in trial(s) {np.flatnonzero(~np.isfinite(loss)).tolist()}"
        )
        raise FloatingPointError(
          f"the training loss became {loss[~np.isfinite(loss)].ravel()[0]} at step "
          f"{row_step} (epoch {(row_step - 1) // steps_per_epoch + 1}){where}; {kept}. "
          f"Lower the learning rate or check the inputs."
        )
      for sums in (epoch_sums, log_sums):
        sums["loss"] += float(np.mean(loss))
        if "accuracy" in row:
          has_accuracy[:] = [True]
          sums["accuracy"] += float(np.mean(row["accuracy"]))
        sums["count"] += 1
    if pending:
      last_step = pending[-1][0]
      means: dict[str, float] = {"epoch": (last_step - 1) // steps_per_epoch + 1}
      means.update(
        {name: float(np.mean([row[name] for row in host_rows])) for name in host_rows[0]}
      )
      if "accuracy" in means:  # a fraction in the step; top-1 in percent in every row
        means["top1"] = 100.0 * means.pop("accuracy")
      if spec.lr_schedule is not None:
        means["lr"] = float(spec.lr_schedule(last_step - 1))
      means.update(logged_values)
      writer.write(last_step, "train", means)
    pending.clear()

  progress = _progress_bar(spec.progress_bar, total_steps, step, is_writer)
  batches = spec.batches(step, total_steps)
  # Multi-host: the processes agree on a preemption at these steps (_agreed_preemption).
  preemption_sync_every = spec.log_every_steps or steps_per_epoch
  try:
    while step < total_steps:
      if step // steps_per_epoch + 1 != hparams_epoch:
        hparams_epoch = step // steps_per_epoch + 1
        hparams, logged_values = spec.hparams_at(hparams_epoch)
        if spec.start_of_epoch is not None and step % steps_per_epoch == 0:
          state = spec.start_of_epoch(state, hparams_epoch)
      state, step_metrics = spec.train_step(
        state, next(batches), spec.teacher_variables, hparams, spec.teacher_constants
      )
      step += 1
      pending.append((step, step_metrics))
      progress.update(1)

      epoch_done = step % steps_per_epoch == 0
      if spec.checkpoint_every_steps > 0:
        checkpoint_due = step % spec.checkpoint_every_steps == 0
      else:
        checkpoint_due = epoch_done
      preempted = _agreed_preemption(stop["signal"], step, preemption_sync_every)
      checkpoint_due = checkpoint_due or step == total_steps or preempted is not None
      log_due = spec.log_every_steps > 0 and step % spec.log_every_steps == 0
      if log_due or epoch_done or checkpoint_due:
        flush()  # the only host syncs: log lines and rows are made from flushed values
      if log_due and not epoch_done:  # at an epoch end, the epoch's line follows instead
        if is_writer:
          logger.info(
            metrics.log_line(
              step,
              total_steps,
              (step - 1) // steps_per_epoch + 1,
              num_epochs,
              train_values(log_sums),
              pace.lap(step),
              spec.example_name,
            )
          )
        log_sums.update(loss=0.0, accuracy=0.0, count=0)
      if epoch_done:
        epoch = step // steps_per_epoch
        train_means = train_values(epoch_sums)
        row = {"epoch": epoch, "step": step, "train_loss": train_means["loss"]}
        if has_accuracy:
          row["train_top1"] = train_means["top1"]
        epoch_sums.update(loss=0.0, accuracy=0.0, count=0)
        epoch_pace = pace.lap(step)  # the training since the last line, without this eval
        eval_start = time.perf_counter()
        evaluated = spec.evaluate(state, epoch)
        eval_seconds = time.perf_counter() - eval_start
        if evaluated is not None:
          row.update(evaluated)
        if spec.end_of_epoch is not None:
          state = spec.end_of_epoch(state, epoch, row)
        history.append(row)
        writer.write(step, "test", row)
        if is_writer:
          logger.info(
            metrics.log_line(
              step,
              total_steps,
              epoch,
              num_epochs,
              train_means,
              epoch_pace,
              spec.example_name,
              epoch_end=True,
              test=evaluated,
              eval_seconds=eval_seconds if evaluated is not None else None,
            )
          )
        log_sums.update(loss=0.0, accuracy=0.0, count=0)
        pace.restart()
        if spec.score in row:
          progress.set_postfix(epoch=epoch, **{spec.score: f"{row[spec.score]:.2f}"})
      if checkpoint_due:
        save(step, finished=step == total_steps)
        last_saved_step = step
      if step == total_steps:  # a signal during the last evaluation or save counts too
        preempted = _agreed_preemption(stop["signal"], step, preemption_sync_every, force=True)
      if preempted is not None:
        # Also on the last step: the run is complete and saved, but the signal asks the
        # process to stop, and a pipeline of runs (PBA's search, then its training) must
        # not start the next one. Rerunning reports the finished run.
        run_checkpoints.wait()
        name = signal.Signals(preempted).name
        what = "the final checkpoint" if step == total_steps else "a checkpoint"
        raise PreemptedError(
          f"{name}: saved {what} at step {step} in "
          f"{run_checkpoints.directory}; rerun the same command to "
          f"{'report the result' if step == total_steps else 'resume'}.",
          preempted,
        )
  finally:
    pipeline.close_iterator(batches)
    progress.close()
    writer.close()
  run_checkpoints.wait()
  return LoopResult(state, history, step, train_seconds(), compilations=0)  # run_loop counts


@contextlib.contextmanager
def _counting_compilations(train_step: Callable) -> Iterator[list[int]]:
  """``[n]``: how many times XLA compiles ``train_step`` while the block runs, from JAX's
  public compile events (jax.monitoring); a step that recompiles shows up as n > 1."""
  compiled = getattr(train_step, "compiled", train_step)  # jit_population's inner jit
  target = f"jit({getattr(compiled, '__name__', '')})"
  count = [0]

  def listener(event: str, duration_secs: float, **kwargs: str | int) -> None:
    del duration_secs
    if event == "/jax/core/compile/backend_compile_duration" and kwargs.get("fun_name") == target:
      count[0] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def device_batches(split, sampler, mesh, prefetch: int = 2):
  """``batches(start_step, stop_step)`` for a Loop: ``split``'s batches for ``sampler``
  (kd_jax.data.pipeline), put on the devices ``prefetch`` steps ahead in a background
  thread, so reading, decoding and the host-to-device copy overlap the running step."""

  def batches(start_step: int, stop_step: int):
    return pipeline.prefetch(
      split.train_batches(sampler, start_step, stop_step),
      prefetch,
      lambda host_batch: sharding.global_batch(host_batch, mesh),
    )

  return batches


def _chain_hooks(first, second):
  """``start_of_epoch`` hooks run one after the other (either may be None)."""
  if first is None or second is None:
    return first or second
  return lambda state, epoch: second(first(state, epoch), epoch)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the image or text run that ``config`` describes in ``workdir``.

  Returns the summary: the score (top-1, or Pearson for regression) at the last and the
  best epoch, and, when distilling, teacher–student agreement and KL on the test set.
  Raises PreemptedError after saving when SIGTERM or SIGINT arrives, FloatingPointError
  naming the step when the loss stops being finite (the last checkpoint, all of whose steps
  had finite losses, is kept), ConfigChangedError or CheckpointMismatchError when
  ``workdir`` holds another run (nothing is touched), WorkdirLockedError when another
  process holds it, and DiskFullError before a checkpoint that would not fit. Rerunning a
  finished run reports its summary without training.
  """
  setup_lib.check_config(config)  # before anything loads or is written
  if not workdir:
    raise ValueError("workdir is empty: name the run directory (--workdir=runs/NAME).")
  with run_lock.hold(workdir):  # a second process on this workdir stops before loading
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  mesh = sharding.make_data_mesh()
  sharding.check_batch_divisible(config.batch_size, mesh, "config.batch_size")
  sharding.check_batch_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
  run = setup_lib.build_run(config, mesh)
  method = run.method
  sampler = EpochSampler(
    run.num_train, config.batch_size, config.seed, jax.process_index(), jax.process_count()
  )
  steps_per_epoch = sampler.steps_per_epoch
  # The "longer training" of Wang et al.: the epoch factor stretches epochs and lr milestones.
  num_epochs = config.num_epochs * config.epoch_factor
  optimizer, lr_schedule = optim.make_optimizer(
    **config.optimizer.to_dict(),
    steps_per_epoch=steps_per_epoch,
    num_epochs=num_epochs,
    epoch_factor=config.epoch_factor,
    global_batch=config.batch_size,
  )
  state = sharding.replicate(state_lib.new_train_state(run.variables, optimizer, run.rng), mesh)

  # Pooled backward KD: generated samples for the whole training set, refreshed every
  # pool_every epochs, live in the state (and its checkpoints) so a resumed run is exact.
  pool_every = (
    config.backward.pool_every_epochs
    if run.modality == "image" and method.view == "backward"
    else 0
  )
  start_of_epoch = None
  train_split = run.train
  if pool_every:
    if not isinstance(run.train, pipeline.ArraySplit):  # check_config refuses this first
      raise ValueError("pooled backward KD needs an in-memory dataset.")
    state["aux_pool"], start_of_epoch = backward_kd.pool_hook(
      run.student,
      run.teacher,
      run.teacher_variables,
      run.preprocess,
      run.pool_options or {},
      cast(Any, run.train).arrays["image"],  # checked above: an in-memory dataset
      pool_every,
      min(config.eval_batch_size, run.num_train),
      mesh,
    )
    # Each example's pool entry is read by its index, which the batches carry.
    train_split = pipeline.ArraySplit(
      {**run.train.arrays, "index": np.arange(run.num_train, dtype=np.int32)}
    )

  # A method that changes the run between epochs (Annealing-KD's two phases: a fresh
  # optimiser for phase 2) brings its own hooks; their state rides in the checkpoints.
  score = "pearson" if run.regression else "top1"
  end_of_epoch = None
  phases = None
  if method.phases is not None:
    phases = method.phases(
      optimizer,
      num_epochs,
      steps_per_epoch,
      lr_schedule,
      lambda tree: sharding.replicate(tree, mesh),
      score=score,
      **method.split_block(config[method.schedule_block].to_dict()).phases,
    )
  if phases is not None:
    state = phases.initial_state(state)
    lr_schedule, end_of_epoch = phases.lr_at, phases.end_of_epoch
    start_of_epoch = _chain_hooks(start_of_epoch, phases.start_of_epoch)

  train_step = step_lib.jit_data_parallel(
    step_lib.make_train_step(
      run.student,
      optimizer,
      method,
      run.preprocess,
      teacher=run.teacher,
      view=run.view,
      regression=run.regression,
      pooled_view=bool(pool_every),
      joint_views=config.view.joint_pass,
    ),
    mesh,
  )
  eval_step = step_lib.jit_eval(
    step_lib.make_eval_step(run.student, run.preprocess, run.teacher, run.regression), mesh
  )
  # The values the method's schedule sets (T, φ, ψ, ...) are logged with the train rows.
  schedule_keys = []
  if method.schedule is not None:
    schedule_keys = sorted(
      method.schedule(
        1, num_epochs, **method.split_block(config[method.schedule_block].to_dict()).schedule
      )
    )

  def hparams_at(epoch):
    values = epoch_hparams(config, method, epoch, num_epochs)
    return _device_hparams(values, mesh), {k: values[k] for k in schedule_keys}

  teacher_checked = []  # the teacher is checked at the first evaluation of this process

  def evaluate_epoch(state, epoch):
    del epoch
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    check = not teacher_checked
    teacher_checked.append(True)
    return evaluate(
      eval_step,
      variables,
      run.test,
      config.eval_batch_size,
      mesh,
      run.teacher_variables,
      run.regression,
      check_teacher_sums=check,
    )

  if config.get("teacher_checkpoint", "") and run.teacher is not None:
    # A teacher converted from another framework: its accuracy first, so that a wrong
    # conversion or a mismatched class order shows before any training.
    teacher_top1 = evaluate_epoch(state, 0).get("teacher_top1")
    if jax.process_index() == 0:
      logger.info(
        "teacher %s from %s: top-1 %.2f on the evaluation split",
        config.teacher_model,
        config.teacher_checkpoint,
        teacher_top1,
      )

  spec = Loop(
    train_step,
    device_batches(train_split, sampler, mesh, config.input.prefetch),
    hparams_at,
    evaluate_epoch,
    steps_per_epoch,
    num_epochs * steps_per_epoch,
    config.to_dict(),
    run.teacher_variables,
    sharding.replicate(run.teacher_constants, mesh),
    lr_schedule,
    start_of_epoch=start_of_epoch,
    end_of_epoch=end_of_epoch,
    extra_meta=lambda step: {**run.meta, "sampler": sampler.position(step)},
    checkpoint_every_steps=config.checkpoint_every_steps,
    max_checkpoints_to_keep=config.max_checkpoints_to_keep,
    log_every_steps=config.log_every_steps,
    progress_bar=config.progress_bar,
    score=score,
    examples_per_step=config.batch_size,
    example_name="images" if run.modality == "image" else "examples",
    resume_ignored=unread_blocks(method, config),
    identity=run.identity,
  )
  result = run_loop(spec, state, workdir)

  summary = metrics.summarize(result.history, score)
  summary.update(
    method=config.method,
    seed=config.seed,
    steps=result.steps,
    **run.describe,
    train_seconds=result.train_seconds,
    # 1 unless something (a shape, a dtype, a Python value) changed between steps.
    train_step_compilations=result.compilations,
  )
  if jax.process_index() == 0:
    files.write_json_atomically(os.path.join(workdir, "summary.json"), summary, indent=2)
    files.write_text_atomically(
      os.path.join(workdir, "summary.md"), metrics.summary_table(summary) + "\n"
    )
    curves = os.path.join(workdir, "curves.png")
    if metrics.optional_module("matplotlib", f"plot of the curves in {curves}") is not None:
      metrics.plot_history(
        result.history,
        curves,
        score,
        title=f"{config.method}: {run.describe['model']} on {run.describe['dataset']}",
      )
  return summary


class _NoProgressBar:
  """What the loop calls on a progress bar, doing nothing (bar off, or tqdm not installed)."""

  def update(self, n: int = 1) -> None:
    del n

  def set_postfix(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs

  def close(self) -> None:
    pass


def _progress_bar(enabled: bool, total: int, initial: int, is_writer: bool) -> Any:
  if not (enabled and is_writer):
    return _NoProgressBar()
  tqdm = metrics.optional_module("tqdm.auto", "progress bar")
  if tqdm is None:
    return _NoProgressBar()
  return tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
