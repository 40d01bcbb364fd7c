"""Orbax checkpoints of a run: model variables, training state and JSON metadata.

Three items per step, so a frozen teacher can read just its variables:
  * ``model``: ``{"params", "batch_stats"}``;
  * ``train``: ``{"step", "opt_state", "rng"}`` and any other key of the state (``aux_pool``
    for pooled backward KD, ``annealing_best*`` for Annealing-KD's two phases);
  * ``meta``: JSON with the step, the sampler position, the run's config and its
    evaluation history (so best-epoch tracking survives a restart).
Orbax writes each step to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. A checkpoint that exists but cannot
be read (corrupt files) is moved aside with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

class CheckpointError(RuntimeError):
  """No readable checkpoint where one was required."""


def _abstract(tree):
  """Shape/dtype/sharding stand-ins, so restored arrays land where ``tree``'s live."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class RunCheckpoints:
  """The checkpoints of one run directory (``<workdir>/checkpoints``)."""

  def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                           read_only=read_only)
    handlers = {"model": ocp.StandardCheckpointHandler(),
                "train": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: dict, meta: dict[str, Any]) -> None:
    """Saves asynchronously under ``meta["step"]`` (the loop's step: a population's state
    holds one step per trial); the next save or ``wait`` waits for it to finish."""
    step = int(meta["step"])
    args = ocp.args.Composite(
        model=ocp.args.StandardSave({"params": state["params"],
                                     "batch_stats": state["batch_stats"]}),
        train=ocp.args.StandardSave(_train_item(state)),
        meta=ocp.args.JsonSave(meta))
    self._manager.save(step, args=args, force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def _quarantine(self, step: int, error: Exception) -> None:
    path = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, f"corrupt_{step}")
    logger.warning("checkpoint at step %d in %s cannot be read (%s: %s); moving it to %s and "
                    "falling back to the previous checkpoint.", step, self.directory,
                    type(error).__name__, error, target)
    if os.path.isdir(path):
      os.replace(path, target)
    self._manager.reload()

  def restore_latest(self, state_template: dict) -> tuple[dict, dict] | None:
    """Restores the newest readable checkpoint into the structure of ``state_template``.

    Returns ``(state, meta)``, or None when the run has no checkpoint yet. Unreadable
    checkpoints are quarantined with a warning; raises CheckpointError if none is readable.
    """
    steps = self.all_steps()
    if not steps:
      return None
    model_template = {"params": state_template["params"],
                      "batch_stats": state_template["batch_stats"]}
    train_template = _train_item(state_template)
    for step in reversed(steps):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(_abstract(model_template)),
            train=ocp.args.StandardRestore(_abstract(train_template)),
            meta=ocp.args.JsonRestore()))
        _check_meta(restored.meta, step)
      except Exception as error:  # corrupt or truncated files raise many error types
        self._quarantine(step, error)
        continue
      state = {**restored.model, **restored.train}
      return state, restored.meta
    raise CheckpointError(f"no readable checkpoint in {self.directory}; the unreadable ones "
                          f"were moved to corrupt_<step>. Delete the directory to start over.")

  def restore_model(self, model_template: dict, step: int | None = None) -> tuple[dict, dict]:
    """Reads only ``{"params", "batch_stats"}`` and the metadata (for frozen teachers)."""
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}: train that run first.")
    step = steps[-1] if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(_abstract(model_template)),
        meta=ocp.args.JsonRestore()))
    return restored.model, restored.meta

  def read_arrays(self, step: int | None = None) -> dict:
    """Reads the ``model`` and ``train`` items as host NumPy arrays, whatever the topology.

    For inspecting, exporting or comparing runs: no template and no devices needed, and a
    checkpoint written on 8 devices reads the same on 1.
    """
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}.")
    step = steps[-1] if step is None else step
    metadata = self._manager.item_metadata(step)
    on_one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    args = {}
    for item in ("model", "train"):
      template = jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=on_one_device),
          metadata[item])
      args[item] = ocp.args.StandardRestore(template)
    restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    return jax.tree.map(np.asarray, {"model": restored.model, "train": restored.train})

  def read_meta(self, step: int | None = None) -> dict:
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}: train that run first.")
    step = steps[-1] if step is None else step
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


MODEL_KEYS = ("params", "batch_stats")


def _train_item(state: dict) -> dict:
  """What resumes training besides the model: step, optimiser, RNG, and whatever else a
  method keeps in the state (pooled backward KD's samples, Annealing-KD's best epoch)."""
  return {key: value for key, value in state.items() if key not in MODEL_KEYS}


def _check_meta(meta, step: int) -> None:
  if not isinstance(meta, dict) or meta.get("step") != step:
    raise ValueError(f"metadata of step {step} is missing or names another step")
