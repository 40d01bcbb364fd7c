"""The one training loop: images and text, teachers and students, one process or many.

``train_and_evaluate(config, workdir)`` builds the run from its config (kd_jax.train.setup:
data, student, teacher, preprocess, method), resumes from the newest readable checkpoint in
``workdir``, and writes metrics, checkpoints, a summary and a plot there. The loop body is
deliberately plain: fetch this process's slice of the global batch, run the compiled step
(kd_jax.train.step), and at a few sync points (log interval, epoch end, checkpoint) look at
metrics on the host. Every guarantee lives here once, for every modality: SIGTERM saves and
exits, a non-finite loss stops naming the step, an unreadable checkpoint falls back to the
previous one, a resumed run reaches the same parameters, and the step compiles once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import methods
from kd_jax.data import EpochSampler, eval_batches
from kd_jax.methods import backward_kd
from kd_jax.train import checkpoint, metrics, optim, setup as setup_lib, sharding
from kd_jax.train import state as state_lib
from kd_jax.train import step as step_lib

logger = logging.getLogger(__name__)

# Config keys that may differ between a run and its resumption without changing its result.
_RESUME_NEUTRAL_KEYS = {"progress_bar", "log_every_steps", "multihost", "data_dir",
                        "coordinator_address", "num_processes", "process_id"}
class PreemptedError(Exception):
  """SIGTERM arrived; a checkpoint was saved. Rerun the same command to resume."""


@contextlib.contextmanager
def _sigterm_flag():
  """Turns SIGTERM into a flag the loop polls, so it can save before exiting."""
  received = {"flag": False}

  def handler(signum, frame):
    del signum, frame
    received["flag"] = True

  try:
    previous = signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread: no handler, the flag stays False
    yield received
    return
  try:
    yield received
  finally:
    signal.signal(signal.SIGTERM, previous)


def epoch_hparams(config, method: methods.Method, epoch: int, num_epochs: int
                  ) -> dict[str, float]:
  """The values the step reads during ``epoch`` (counted from 1), from the config's ``kd``,
  ``view.weight`` and the method's own block (``continuation`` for Continuation-KD and
  Annealing-KD): kd_jax.methods.hparams_at."""
  block = method.schedule_block
  return methods.hparams_at(method, epoch, num_epochs, kd=config.kd.to_dict(),
                            view_weight=config.view.weight,
                            schedule_options=config[block].to_dict() if block else None)


def _device_hparams(values: dict[str, float], mesh) -> dict[str, jax.Array]:
  """Schedule values as replicated arrays: changing them never recompiles the step."""
  return sharding.replicate({k: jnp.float32(v) for k, v in values.items()}, mesh)


def _warn_on_changed_config(saved: dict, current: dict, workdir: str) -> None:
  changed = sorted(key for key in set(saved) | set(current)
                   if key not in _RESUME_NEUTRAL_KEYS and saved.get(key) != current.get(key))
  if changed:
    logger.warning("resuming %s with a config that differs from its checkpoint in: %s",
                    workdir, ", ".join(changed))


def evaluate(eval_step, variables, arrays, batch_size: int, mesh, teacher_variables,
             regression: bool = False) -> dict[str, float]:
  """Top-1, loss and (with a teacher) agreement and KL over a whole dataset (``arrays``: an
  ImageDataset or a dict of host arrays); Pearson/Spearman ×100 and MSE for regression."""
  totals: dict[str, float] = {}
  predictions = []
  for batch in eval_batches(arrays, batch_size, jax.process_index(), jax.process_count()):
    sums = jax.device_get(eval_step(variables, sharding.global_batch(batch, mesh),
                                    teacher_variables))
    if regression:
      keep = np.asarray(sums.pop("predictions"))
      predictions.append(keep[:int(round(float(sums["count"])))])
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + float(value)
  if regression:
    labels = arrays["label"] if isinstance(arrays, dict) else arrays.labels
    return metrics.finalize_regression(totals, np.concatenate(predictions), labels)
  return metrics.finalize_eval(totals)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run that ``config`` describes in ``workdir``.

  Returns the summary: the score (top-1, or Pearson for regression) at the last and the
  best epoch, and, when distilling, teacher–student agreement and KL on the test set.
  Raises PreemptedError after saving when SIGTERM arrives, and FloatingPointError naming
  the step when the loss stops being finite (the last checkpoint, all of whose steps had
  finite losses, is kept).
  """
  mesh = sharding.make_data_mesh()
  sharding.check_batch_divisible(config.batch_size, mesh, "config.batch_size")
  sharding.check_batch_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
  run = setup_lib.build_run(config, mesh)
  method = run.method
  score = "pearson" if run.regression else "top1"
  sampler = EpochSampler(run.num_train, config.batch_size, config.seed,
                         jax.process_index(), jax.process_count())
  steps_per_epoch = sampler.steps_per_epoch
  # The "longer training" of Wang et al.: the epoch factor stretches epochs and lr milestones.
  num_epochs = config.num_epochs * config.epoch_factor
  total_steps = num_epochs * steps_per_epoch
  optimizer, lr_schedule = optim.make_optimizer(
      **config.optimizer.to_dict(), steps_per_epoch=steps_per_epoch, num_epochs=num_epochs,
      epoch_factor=config.epoch_factor)
  state = sharding.replicate(state_lib.new_train_state(run.variables, optimizer, run.rng), mesh)
  teacher_variables = run.teacher_variables
  teacher_constants = sharding.replicate(run.teacher_constants, mesh)

  # Pooled backward KD: generated samples for the whole training set, refreshed every
  # pool_every epochs, live in the state (and its checkpoints) so a resumed run is exact.
  pool_every = (config.view.pool_every_epochs
                if run.modality == "image" and method.view == "backward" else 0)
  if pool_every:
    images = run.train["image"]
    chunk = min(config.eval_batch_size, len(images))
    padded = -(-len(images) // chunk) * chunk
    pool_images = sharding.replicate(
        np.concatenate([images, images[:padded - len(images)]]), mesh)
    state["aux_pool"] = sharding.replicate(
        jnp.zeros((len(images), *images.shape[1:]), run.preprocess.compute_dtype), mesh)
    replicated = sharding.replicated(mesh)
    generate_pool = jax.jit(
        backward_kd.make_pool_generator(run.student, run.teacher, run.preprocess,
                                        run.pool_options, chunk, len(images)),
        in_shardings=(replicated, replicated, replicated), out_shardings=replicated)

  config_dict = config.to_dict()
  run_checkpoints = checkpoint.RunCheckpoints(workdir, config.max_checkpoints_to_keep)
  history: list[dict[str, Any]] = []
  # Running sums of the current epoch's training metrics (checkpointed: a run resumed
  # mid-epoch reports the same epoch means as an uninterrupted one).
  epoch_sums = {"loss": 0.0, "accuracy": 0.0, "count": 0}
  seconds_before = 0.0  # wall-clock time of the loop in earlier (interrupted) processes
  restored = run_checkpoints.restore_latest(state)
  if restored is not None:
    state, meta = restored
    history = meta["history"]
    epoch_sums = meta.get("epoch_sums", epoch_sums)
    seconds_before = meta.get("train_seconds", 0.0)
    _warn_on_changed_config(meta["config"], config_dict, workdir)
    logger.info("resumed %s from step %d", workdir, int(state["step"]))
  is_writer = jax.process_index() == 0
  writer = metrics.MetricWriter(workdir, is_writer, resume_step=int(state["step"]))

  train_step = step_lib.jit_data_parallel(step_lib.make_train_step(
      run.student, optimizer, method, run.preprocess, teacher=run.teacher, view=run.view,
      regression=run.regression, pooled_view=bool(pool_every)), mesh)
  eval_step = step_lib.jit_eval(step_lib.make_eval_step(
      run.student, run.preprocess, run.teacher, run.regression), mesh)
  hparams_epoch = None
  # The values the method's schedule sets (T, φ, ψ, ...) are logged with the train rows.
  schedule_keys = []
  if method.schedule is not None:
    schedule_keys = sorted(method.schedule(1, num_epochs,
                                           **config[method.schedule_block].to_dict()))

  def save(step: int, finished: bool = False) -> None:
    # Copies: the save finishes in the background while the loop keeps appending.
    run_checkpoints.save(state, {"step": step, "sampler": sampler.position(step),
                                 "config": config_dict, "history": list(history),
                                 "epoch_sums": dict(epoch_sums), "finished": finished,
                                 "train_seconds": train_seconds(), **run.meta})

  loop_start = time.perf_counter()

  def train_seconds() -> float:
    """Wall-clock seconds of the training loop (compilation, steps, evaluation, saving)."""
    return seconds_before + time.perf_counter() - loop_start

  step = int(state["step"])
  last_saved_step = step if restored is not None else None
  pending: list[tuple[int, dict]] = []  # device metrics not yet looked at on the host

  def flush() -> None:
    """Looks at the pending step metrics: stop on a non-finite loss, log the rest."""
    host_rows = jax.device_get([row for _, row in pending])
    for (row_step, _), row in zip(pending, host_rows):
      if not math.isfinite(float(row["loss"])):
        run_checkpoints.wait()
        kept = (f"the last good checkpoint (step {last_saved_step}) is kept in "
                f"{run_checkpoints.directory}" if last_saved_step is not None
                else "no checkpoint had been written yet")
        raise FloatingPointError(
            f"the training loss became {float(row['loss'])} at step {row_step} (epoch "
            f"{(row_step - 1) // steps_per_epoch + 1}); {kept}. Lower the learning rate or "
            f"check the inputs.")
      epoch_sums["loss"] += float(row["loss"])
      epoch_sums["accuracy"] += float(row.get("accuracy", 0.0))
      epoch_sums["count"] += 1
    if pending:
      means = {name: float(np.mean([row[name] for row in host_rows])) for name in host_rows[0]}
      means["lr"] = float(lr_schedule(pending[-1][0] - 1))
      means.update(schedule_values)
      writer.write(pending[-1][0], "train", means)
    pending.clear()

  progress = _progress_bar(config, total_steps, step, is_writer)
  with _sigterm_flag() as sigterm:
    while step < total_steps:
      if step // steps_per_epoch + 1 != hparams_epoch:
        hparams_epoch = step // steps_per_epoch + 1
        host_hparams = epoch_hparams(config, method, hparams_epoch, num_epochs)
        schedule_values = {k: host_hparams[k] for k in schedule_keys}
        hparams = _device_hparams(host_hparams, mesh)
        if pool_every and (hparams_epoch - 1) % pool_every == 0 and step % steps_per_epoch == 0:
          state = {**state, "aux_pool": generate_pool(state, teacher_variables, pool_images)}
      local = sampler.local_indices(step)
      host_batch = {name: values[local] for name, values in run.train.items()}
      if pool_every:
        host_batch["index"] = local.astype(np.int32)
      batch = sharding.global_batch(host_batch, mesh)
      state, step_metrics = train_step(state, batch, teacher_variables, hparams,
                                       teacher_constants)
      step += 1
      pending.append((step, step_metrics))
      progress.update(1)

      epoch_done = step % steps_per_epoch == 0
      if config.checkpoint_every_steps > 0:
        checkpoint_due = step % config.checkpoint_every_steps == 0
      else:
        checkpoint_due = epoch_done
      checkpoint_due = checkpoint_due or step == total_steps or sigterm["flag"]
      if len(pending) >= config.log_every_steps or epoch_done or checkpoint_due:
        flush()
      if epoch_done:
        epoch = step // steps_per_epoch
        row = {"epoch": epoch, "step": step,
               "train_loss": epoch_sums["loss"] / max(epoch_sums["count"], 1)}
        if not run.regression:
          row["train_accuracy"] = 100.0 * epoch_sums["accuracy"] / max(epoch_sums["count"], 1)
        epoch_sums.update(loss=0.0, accuracy=0.0, count=0)
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        row.update(evaluate(eval_step, variables, run.test, config.eval_batch_size, mesh,
                            teacher_variables, run.regression))
        history.append(row)
        writer.write(step, "test", row)
        progress.set_postfix(epoch=epoch, **{score: f"{row[score]:.2f}"})
      if checkpoint_due:
        save(step, finished=step == total_steps)
        last_saved_step = step
      if sigterm["flag"] and step < total_steps:
        run_checkpoints.wait()
        run_checkpoints.close()
        writer.close()
        progress.close()
        raise PreemptedError(f"SIGTERM: saved a checkpoint at step {step} in "
                             f"{run_checkpoints.directory}; rerun the same command to resume.")
  progress.close()
  run_checkpoints.wait()
  run_checkpoints.close()
  writer.close()

  summary = metrics.summarize(history, score)
  summary.update(method=config.method, seed=config.seed, steps=step, **run.describe,
                 train_seconds=train_seconds(),
                 # 1 unless something (a shape, a dtype, a Python value) changed between steps.
                 train_step_compilations=train_step._cache_size())
  if is_writer:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
      f.write(metrics.summary_table(summary) + "\n")
    metrics.plot_history(history, os.path.join(workdir, "curves.png"), score,
                         title=f"{config.method}: {run.describe['model']} on "
                               f"{run.describe['dataset']}")
  return summary

def _progress_bar(config, total: int, initial: int, is_writer: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
              disable=not (config.progress_bar and is_writer))
