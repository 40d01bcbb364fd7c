"""The training loop: one function that trains a teacher or distils a student.

``train_and_evaluate(config, workdir)`` reads everything from an ml_collections config (see
``experiments/configs``), resumes from the newest readable checkpoint in ``workdir``, and
writes metrics, checkpoints, a summary and a plot there. The loop body is deliberately
plain: fetch the host batch, run the compiled step, and at a few sync points (log interval,
epoch end, checkpoint) look at metrics on the host.
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

from kd_jax import continuation, models
from kd_jax.data import EpochSampler, ImageDataset, eval_batches, load_dataset
from kd_jax.train import checkpoint, metrics, objectives, optim, sharding, state as state_lib
from kd_jax.train import steps

logger = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
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


def _dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; valid names: {', '.join(DTYPES)}.")
  return DTYPES[name]


def load_teacher(teacher_workdir: str, dataset: ImageDataset, mesh, dtype):
  """Reads a frozen teacher (model and variables) from another run's checkpoints."""
  if not teacher_workdir:
    raise ValueError("this method needs a teacher: set --config.teacher_workdir to the "
                     "--workdir of a finished `python -m experiments.train_teacher` run.")
  if not os.path.isdir(os.path.join(teacher_workdir, "checkpoints")):
    raise checkpoint.CheckpointError(
        f"no teacher checkpoints in {teacher_workdir}/checkpoints: train the teacher first.")
  teacher_checkpoints = checkpoint.RunCheckpoints(teacher_workdir, read_only=True)
  meta = teacher_checkpoints.read_meta()
  teacher_config = meta["config"]
  if teacher_config["dataset"] != dataset.name:
    raise ValueError(f"the teacher in {teacher_workdir} was trained on "
                     f"{teacher_config['dataset']!r}, not on {dataset.name!r}.")
  if not meta.get("finished", False):
    logger.warning("the teacher run in %s has not finished (step %d); using it anyway.",
                    teacher_workdir, meta["step"])
  teacher_model = models.create_model(teacher_config["model"], dataset.num_classes, dtype)
  template = sharding.replicate(
      models.init_variables(teacher_model, jax.random.PRNGKey(0), dataset.image_shape), mesh)
  variables, _ = teacher_checkpoints.restore_model(template)
  teacher_checkpoints.close()
  return teacher_model, variables


def epoch_hparams(config, method, epoch: int, num_epochs: int) -> dict[str, float]:
  """The values the objectives read during ``epoch`` (counted from 1).

  Constant for KD; Continuation-KD's φ, ψ and Annealing-KD's step ψ change once per epoch.
  """
  values = {"temperature": config.kd.temperature, "ce_weight": config.kd.ce_weight,
            "kd_weight": config.kd.kd_weight, "view_weight": config.view.weight,
            "phi": 1.0, "psi": 1.0, "margin": config.continuation.margin}
  if method.objective in ("continuation", "annealing"):
    c = config.continuation
    psi_schedule, switch_epoch = c.psi_schedule, c.psi_switch_epoch
    if method.objective == "annealing":
      psi_schedule = "step"
      switch_epoch = c.psi_switch_epoch or continuation.annealing_switch_epoch(num_epochs,
                                                                               c.t_max)
    values.update(continuation.schedule_values(
        epoch, num_epochs, c.t_max, psi_schedule, ramp_epochs=c.psi_ramp_epochs,
        switch_epoch=switch_epoch))
  return values


def preprocess_for(data: ImageDataset, config, dtype) -> steps.Preprocess:
  return steps.make_preprocess(data.mean, data.std, config.augment.crop_pad,
                               config.augment.flip, dtype)


def _device_hparams(values: dict[str, float], mesh) -> dict[str, jax.Array]:
  """Schedule values as replicated arrays: changing them never recompiles the step."""
  return sharding.replicate({k: jnp.float32(v) for k, v in values.items()}, mesh)


def _warn_on_changed_config(saved: dict, current: dict, workdir: str) -> None:
  changed = sorted(key for key in set(saved) | set(current)
                   if key not in _RESUME_NEUTRAL_KEYS and saved.get(key) != current.get(key))
  if changed:
    logger.warning("resuming %s with a config that differs from its checkpoint in: %s",
                    workdir, ", ".join(changed))


def evaluate(eval_step, variables, dataset: ImageDataset, batch_size: int, mesh,
             teacher_variables) -> dict[str, float]:
  """Top-1, loss and (with a teacher) agreement and KL over the whole dataset."""
  totals: dict[str, float] = {}
  for batch in eval_batches(dataset, batch_size, jax.process_index(), jax.process_count()):
    sums = jax.device_get(eval_step(variables, sharding.global_batch(batch, mesh),
                                    teacher_variables))
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + float(value)
  return metrics.finalize_eval(totals)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run that ``config`` describes in ``workdir``.

  Returns the summary: top-1 at the last and the best epoch, and, when distilling,
  teacher–student agreement and KL on the test set. Raises PreemptedError after saving
  when SIGTERM arrives, and FloatingPointError naming the step when the loss stops being
  finite (the last checkpoint, all of whose steps had finite losses, is kept).
  """
  method = objectives.get_method(config.method, config.view.name)
  models.create_model(config.model, 1)  # fail early, listing the valid names
  dtype = _dtype(config.dtype)
  data_dir = config.data_dir or None
  train_data = load_dataset(config.dataset, "train", data_dir, config.download)
  test_data = load_dataset(config.dataset, "test", data_dir, config.download)

  mesh = sharding.make_data_mesh()
  sharding.check_batch_divisible(config.batch_size, mesh, "config.batch_size")
  sharding.check_batch_divisible(config.eval_batch_size, mesh, "config.eval_batch_size")
  sampler = EpochSampler(len(train_data), config.batch_size, config.seed,
                         jax.process_index(), jax.process_count())
  steps_per_epoch = sampler.steps_per_epoch
  # The "longer training" of Wang et al.: the epoch factor stretches epochs and lr milestones.
  num_epochs = config.num_epochs * config.epoch_factor
  total_steps = num_epochs * steps_per_epoch

  model = models.create_model(config.model, train_data.num_classes, dtype)
  teacher_model, teacher_variables = None, {}
  if method.needs_teacher:
    teacher_model, teacher_variables = load_teacher(config.teacher_workdir, train_data, mesh,
                                                    dtype)
  optimizer, lr_schedule = optim.make_optimizer(config.optimizer, steps_per_epoch,
                                                config.epoch_factor)
  state = sharding.replicate(
      state_lib.create_train_state(model, optimizer, train_data.image_shape, config.seed), mesh)

  preprocess = preprocess_for(train_data, config, dtype)
  # Pooled backward KD: generated samples for the whole training set, refreshed every
  # pool_every epochs, live in the state (and its checkpoints) so a resumed run is exact.
  pool_every = config.view.pool_every_epochs if method.view == "backward" else 0
  if pool_every:
    chunk = min(config.eval_batch_size, len(train_data))
    padded = -(-len(train_data) // chunk) * chunk
    pool_images = sharding.replicate(
        np.concatenate([train_data.images, train_data.images[:padded - len(train_data)]]), mesh)
    state["aux_pool"] = sharding.replicate(
        jnp.zeros((len(train_data), *train_data.image_shape), dtype), mesh)
    generate_pool = steps.make_pool_generator(model, teacher_model, preprocess, config.view,
                                              mesh, chunk, len(train_data))

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

  train_step = steps.make_train_step(model, optimizer, method, mesh, preprocess, teacher_model,
                                     config.view, pooled_view=bool(pool_every))
  eval_step = steps.make_eval_step(model, mesh, preprocess, teacher_model)
  hparams_epoch = None

  def save(step: int, finished: bool = False) -> None:
    # Copies: the save finishes in the background while the loop keeps appending.
    run_checkpoints.save(state, {"step": step, "sampler": sampler.position(step),
                                 "config": config_dict, "history": list(history),
                                 "epoch_sums": dict(epoch_sums), "finished": finished,
                                 "train_seconds": train_seconds()})

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
      epoch_sums["accuracy"] += float(row["accuracy"])
      epoch_sums["count"] += 1
    if pending:
      means = {name: float(np.mean([row[name] for row in host_rows])) for name in host_rows[0]}
      means["lr"] = float(lr_schedule(pending[-1][0] - 1))
      if method.objective in ("continuation", "annealing"):
        means.update({k: host_hparams[k] for k in ("phi", "psi", "continuation_temperature")})
      writer.write(pending[-1][0], "train", means)
    pending.clear()

  progress = _progress_bar(config, total_steps, step, is_writer)
  with _sigterm_flag() as sigterm:
    while step < total_steps:
      if step // steps_per_epoch + 1 != hparams_epoch:
        hparams_epoch = step // steps_per_epoch + 1
        host_hparams = epoch_hparams(config, method, hparams_epoch, num_epochs)
        hparams = _device_hparams(host_hparams, mesh)
        if pool_every and (hparams_epoch - 1) % pool_every == 0 and step % steps_per_epoch == 0:
          state = {**state, "aux_pool": generate_pool(state, teacher_variables, pool_images)}
      local = sampler.local_indices(step)
      host_batch = {"image": train_data.images[local], "label": train_data.labels[local]}
      if pool_every:
        host_batch["index"] = local.astype(np.int32)
      batch = sharding.global_batch(host_batch, mesh)
      state, step_metrics = train_step(state, batch, teacher_variables, hparams)
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
               "train_loss": epoch_sums["loss"] / max(epoch_sums["count"], 1),
               "train_accuracy": 100.0 * epoch_sums["accuracy"] / max(epoch_sums["count"], 1)}
        epoch_sums.update(loss=0.0, accuracy=0.0, count=0)
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        row.update(evaluate(eval_step, variables, test_data, config.eval_batch_size, mesh,
                            teacher_variables))
        history.append(row)
        writer.write(step, "test", row)
        progress.set_postfix(epoch=epoch, top1=f"{row['top1']:.2f}")
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

  summary = metrics.summarize(history)
  summary.update(model=config.model, method=config.method, dataset=config.dataset,
                 seed=config.seed, steps=step,
                 train_seconds=train_seconds(),
                 # 1 unless something (a shape, a dtype, a Python value) changed between steps.
                 train_step_compilations=train_step._cache_size())
  if is_writer:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
      f.write(metrics.summary_table(summary) + "\n")
    metrics.plot_history(history, os.path.join(workdir, "curves.png"),
                         title=f"{config.method}: {config.model} on {config.dataset}")
  return summary


def _progress_bar(config, total: int, initial: int, is_writer: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
              disable=not (config.progress_bar and is_writer))
