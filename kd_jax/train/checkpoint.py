"""Orbax checkpoints of a run: model variables, training state and JSON metadata, verified.

Three items per step, so a frozen teacher can read just its variables:
  * ``model``: ``{"params", "batch_stats"}``;
  * ``train``: ``{"step", "opt_state", "rng"}`` and any other key of the state (``aux_pool``
    for pooled backward KD, ``annealing_best*`` for Annealing-KD's two phases);
  * ``meta``: JSON with the step, the sampler position, the run's config, its evaluation
    history (so best-epoch tracking survives a restart), the checksums of every array of
    the other two items (kd_jax.train.integrity) and a checksum of itself.

What can go wrong with a run directory, and what happens:
  * a run killed mid-save: Orbax writes each step to a temporary directory and renames it
    when complete, so the previous checkpoint is intact;
  * a checkpoint that fails its own integrity check (unreadable files, a metadata or array
    checksum that does not match: a truncated copy, a flipped bit) is *set aside*: moved to
    ``corrupt_<step>`` with a ``SET_ASIDE.json`` that says why, with a warning naming the step
    and the reason, and the previous step is used; every later run of the directory warns
    that it holds set-aside checkpoints;
  * an intact checkpoint that belongs to another run (a changed config or model: the caller's
    ``check_meta`` refuses it, or its arrays' shapes differ from this run's) is refused
    before anything is restored or moved: ``CheckpointMismatchError``, nothing touched;
  * too little disk space for the next checkpoint: refused before Orbax writes anything
    (``DiskFullError``), so the earlier checkpoints stay as they are.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from kd_jax.train import files, integrity

logger = logging.getLogger(__name__)

MODEL_KEYS = ("params", "batch_stats")
ARRAY_CHECKSUMS = "array_checksums"  # meta key: {"model": {path: [h1, h2]}, "train": ...}
META_CHECKSUM = "meta_checksum"  # meta key: SHA-256 of the rest of the metadata
SET_ASIDE_PREFIX = "corrupt_"
SET_ASIDE_RECORD = "SET_ASIDE.json"
# Room kept free beyond a checkpoint's raw size (metadata, logs, the filesystem's blocks).
_FREE_SPACE_MARGIN = 1.1
_FREE_SPACE_SLACK = 1 << 20


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was required."""


class CheckpointMismatchError(ValueError):
  """An intact checkpoint that belongs to another run (config, model or array shapes);
  refused without touching it."""


class DiskFullError(OSError):
  """Too little free space to write the next checkpoint; nothing was written."""

  def __init__(self, message: str):
    super().__init__(errno.ENOSPC, message)

  def __str__(self) -> str:
    return self.strerror or ""


class _NotIntact(Exception):
  """A checkpoint failed its own integrity check (the reason is the message)."""


# A read can fail for reasons that say nothing about the checkpoint's files: memory, a
# permission, a flaky network filesystem. Such a failure stops the run with an error and
# sets nothing aside; only decoding errors, missing files inside a step and checksum
# mismatches count as damage.
_NOT_DAMAGE_STATUS = (
  "RESOURCE_EXHAUSTED",
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "CANCELLED",
  "ABORTED",
  "PERMISSION_DENIED",
  "UNAUTHENTICATED",
  "out of memory",
  "Out of memory",
  "Permission denied",
)
_NOT_DAMAGE_ERRNO = {
  errno.EACCES,
  errno.EPERM,
  errno.EMFILE,
  errno.ENFILE,
  errno.ENOMEM,
  errno.ESTALE,
  errno.EIO,
  errno.EAGAIN,
  errno.EINTR,
  errno.ETIMEDOUT,
}


def _read_failure(error: BaseException, what: str, directory: str, step: int) -> Exception:
  """A failed read of ``what`` as damage (_NotIntact) or, when the error says nothing
  about the files, as a CheckpointError that sets nothing aside."""
  if (
    isinstance(error, MemoryError)
    or (isinstance(error, OSError) and error.errno in _NOT_DAMAGE_ERRNO)
    or any(status in str(error) for status in _NOT_DAMAGE_STATUS)
  ):
    return CheckpointError(
      f"could not read {what} of step {step} in {directory} ({first_line(error)}); this "
      "says nothing about the checkpoint itself, so it was left in place. Rerun when the "
      "cause is gone."
    )
  return _NotIntact(f"{what} cannot be read ({first_line(error)})")


_OK, _DAMAGED, _FAILED = 0, 1, 2


def _agreed(code: int) -> int:
  """The worst of every process's ``code``: the processes of a multi-process job read the
  same checkpoint and must take the same decision before their next collective."""
  if jax.process_count() == 1:
    return code
  from jax.experimental import multihost_utils

  return int(np.max(multihost_utils.process_allgather(np.int32(code))))


def _on_every_process(step: int, read: Callable[[], Any]) -> Any:
  """``read()`` with a verdict that every process shares: raises _NotIntact when any
  process found the step damaged, CheckpointError when any could not read it for another
  reason; other errors (a refused config: the same everywhere) pass through."""
  code, value, message = _OK, None, ""
  try:
    value = read()
  except _NotIntact as error:
    code, message = _DAMAGED, str(error)
  except CheckpointError as error:
    code, message = _FAILED, str(error)
  verdict = _agreed(code)
  if verdict == _FAILED:
    raise CheckpointError(message or f"another process could not read step {step}; see its error.")
  if verdict == _DAMAGED:
    raise _NotIntact(message or "another process of this job found it damaged")
  return value


def _abstract(tree):
  """Shape/dtype/sharding stand-ins, so restored arrays land where ``tree``'s live."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def first_line(error: BaseException, limit: int = 300) -> str:
  """``Type: first line of the message``, at most ``limit`` characters: Orbax and
  TensorStore errors run to pages, and a warning or an error line must stay one line."""
  text = str(error).strip().splitlines()
  message = f"{type(error).__name__}: {text[0] if text else ''}"
  return message if len(message) <= limit else message[: limit - 1] + "…"


def _normalised(meta: dict) -> dict:
  """``meta`` as JSON stores it (tuples become lists), so its checksum is the one that a
  restore recomputes."""
  return json.loads(json.dumps(meta))


class RunCheckpoints:
  """The checkpoints of one run directory (``<workdir>/checkpoints``)."""

  def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False):
    if (
      isinstance(max_to_keep, bool)
      or not isinstance(max_to_keep, (int, np.integer))
      or max_to_keep < 1
    ):
      raise ValueError(
        f"max_checkpoints_to_keep must be an integer ≥ 1 (the newest "
        f"checkpoint is what a run resumes from); got {max_to_keep!r}."
      )
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.read_only = read_only
    options = ocp.CheckpointManagerOptions(
      max_to_keep=int(max_to_keep), create=not read_only, read_only=read_only
    )
    handlers = {
      "model": ocp.StandardCheckpointHandler(),
      "train": ocp.StandardCheckpointHandler(),
      "meta": ocp.JsonCheckpointHandler(),
    }
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    if not read_only and jax.process_index() == 0:
      self._report_set_aside()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  # --- Writing. ---

  def save(self, state: dict, meta: dict[str, Any]) -> None:
    """Saves asynchronously under ``meta["step"]`` (the loop's step: a population's state
    holds one step per trial); the next save or ``wait`` waits for it to finish. The
    arrays' checksums and the metadata's own checksum are added to ``meta``. Raises
    DiskFullError, writing nothing, when the disk cannot hold another checkpoint."""
    step = int(meta["step"])
    model, train = _model_item(state), _train_item(state)
    self.wait()  # the previous save's files count against the free space
    self._check_free_space(step, (model, train))
    meta = _normalised(
      {
        **meta,
        ARRAY_CHECKSUMS: {
          "model": integrity.fingerprints(model),
          "train": integrity.fingerprints(train),
        },
      }
    )
    meta[META_CHECKSUM] = integrity.json_checksum(meta, META_CHECKSUM)
    args = ocp.args.Composite(
      model=ocp.args.StandardSave(model),
      train=ocp.args.StandardSave(train),
      meta=ocp.args.JsonSave(meta),
    )
    try:
      self._manager.save(step, args=args, force=True)
    except Exception as error:
      raise _write_error(error, self.directory, step) from error

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as error:
      raise _write_error(error, self.directory, None) from error

  def close(self) -> None:
    self._manager.close()

  def _check_free_space(self, step: int, items) -> None:
    needed = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(items))
    usage = shutil.disk_usage(self.directory)
    if usage.total == 0:  # a virtual filesystem that reports no sizes: nothing to check
      usage = usage._replace(free=float("inf"))
    free = usage.free
    short = free < needed * _FREE_SPACE_MARGIN + _FREE_SPACE_SLACK
    if _agreed(int(short)):  # every process stops, or none: Orbax's save is collective
      steps = self.all_steps()
      kept = (
        f"the checkpoint of step {steps[-1]} is kept"
        if steps
        else "no checkpoint has been written yet"
      )
      where = (
        f"{_mib(free)} are free"
        if short
        else "another process of this job found too little free space"
      )
      raise DiskFullError(
        f"no room for the checkpoint of step {step} in {self.directory}: it needs about "
        f"{_mib(needed * _FREE_SPACE_MARGIN + _FREE_SPACE_SLACK)}, {where}; {kept}. Free "
        "some space (or use another --workdir) and rerun the same command to resume."
      )

  # --- Reading. ---

  def restore_latest(
    self, state_template: dict, check_meta: Callable[[dict], None] | None = None
  ) -> tuple[dict, dict] | None:
    """Restores the newest intact checkpoint into the structure of ``state_template``.

    For each step from the newest: its metadata is read and verified, ``check_meta(meta)``
    may refuse it (raise; nothing is touched), its arrays' shapes and dtypes are compared
    with the template (CheckpointMismatchError, nothing touched), then its arrays are
    restored and their checksums verified. A step that fails its own integrity check is
    set aside (``_set_aside``) and the previous one is tried. Returns ``(state, meta)``, or
    None when the run has no checkpoint yet; raises CheckpointError if none is intact.
    """
    steps = self.all_steps()
    if not steps:
      if self.set_aside():
        raise CheckpointError(
          f"{self.directory} holds only checkpoints set aside as damaged "
          f"({', '.join(name for name, _ in self.set_aside())}; each {SET_ASIDE_RECORD} "
          "says why), so this run will not silently start over from step 0. Move the run "
          "directory away (or delete it) to start over."
        )
      return None
    templates = {"model": _model_item(state_template), "train": _train_item(state_template)}
    for step in reversed(steps):
      try:
        meta = _on_every_process(step, functools.partial(self._verified_meta, step))
        if check_meta is not None:
          check_meta(meta)  # a refusal: nothing has been touched
        _on_every_process(step, functools.partial(self._check_structure, step, templates))
        items = self._restore(step, templates, meta)
      except _NotIntact as error:
        self._set_aside(step, str(error))
        continue
      return {**items["model"], **items["train"]}, meta
    raise CheckpointError(
      f"no intact checkpoint in {self.directory}: every step failed its integrity check "
      f"and was set aside as {SET_ASIDE_PREFIX}<step> (each holds {SET_ASIDE_RECORD} with "
      "the reason). Move the run directory away, or delete it, to start over."
    )

  def _restore(self, step: int, templates: dict, meta: dict) -> dict:
    """The step's items restored into ``templates`` and verified against their checksums,
    in phases whose verdicts every process shares (each may end in a collective). A restore
    that fails after the shapes matched counts as damage only if the step also fails when
    read with its own shapes on the host (``_confirm_damage``)."""
    errors = []

    def restore():
      try:
        return self._manager.restore(
          step,
          args=ocp.args.Composite(
            **{
              item: ocp.args.StandardRestore(_abstract(template))
              for item, template in templates.items()
            }
          ),
        )
      except Exception as error:
        errors.append(error)
        raise _read_failure(error, "its arrays", self.directory, step) from None

    try:
      restored = _on_every_process(step, restore)
    except _NotIntact:
      _on_every_process(
        step, lambda: self._confirm_damage(step, meta, errors[0] if errors else None)
      )
      raise
    items = {item: restored[item] for item in templates}

    def verify():
      bad = self._bad_arrays(meta, items)
      if bad:
        raise _NotIntact(f"the checksums of {_some(bad)} do not match")

    _on_every_process(step, verify)
    return items

  def _confirm_damage(self, step: int, meta: dict, error: Exception | None) -> None:
    """Returns if the step fails its own integrity check (read with its own shapes on the
    host's CPU and verified); raises CheckpointError when it is intact, as then the
    restore failed for another reason and the step must not be set aside."""
    try:
      arrays = self._read_on_host(step)
    except _NotIntact:
      return
    if self._bad_arrays(meta, arrays) or error is None:
      return  # damaged; or intact here, and another process's read decides
    raise CheckpointError(
      f"the checkpoint of step {step} in {self.directory} is intact but "
      f"could not be restored into this run: {first_line(error)}"
    )

  def restore_model(self, model_template: dict, step: int | None = None) -> tuple[dict, dict]:
    """Reads only ``{"params", "batch_stats"}`` and the metadata (for frozen teachers) of
    ``step``, or of the newest step whose model passes its integrity check (a step that
    fails is skipped with a warning; nothing is moved: a teacher's directory belongs to
    another run). Raises CheckpointMismatchError when the arrays' shapes differ from
    ``model_template``'s and CheckpointError when no step is intact."""
    steps = self.all_steps()
    if not steps:
      raise self._no_checkpoint("train that run first")
    candidates = [step] if step is not None else list(reversed(steps))
    templates = {"model": model_template}
    reasons = []
    for candidate in candidates:
      try:
        meta = _on_every_process(candidate, functools.partial(self._verified_meta, candidate))
        _on_every_process(candidate, functools.partial(self._check_structure, candidate, templates))
        model = self._restore(candidate, templates, meta)["model"]
      except _NotIntact as error:
        reasons.append(f"step {candidate}: {error}")
        logger.warning(
          "the checkpoint of step %d in %s fails its integrity check (%s)%s",
          candidate,
          self.directory,
          error,
          "; trying the previous step." if candidate != candidates[-1] else ".",
        )
        continue
      if candidate != candidates[0]:
        logger.warning(
          "using the checkpoint of step %d of %s instead of step %d.",
          candidate,
          self.directory,
          candidates[0],
        )
      return model, meta
    raise CheckpointError(f"no intact checkpoint in {self.directory} ({'; '.join(reasons)}).")

  def read_arrays(self, step: int | None = None) -> dict:
    """Reads the ``model`` and ``train`` items as host NumPy arrays, whatever the topology,
    verified against their checksums.

    For inspecting, exporting or comparing runs: no template and no devices needed, and a
    checkpoint written on 8 devices reads the same on 1.
    """
    steps = self.all_steps()
    if not steps:
      raise self._no_checkpoint("nothing to read")
    step = steps[-1] if step is None else step
    try:
      meta = self._verified_meta(step)
      arrays = self._read_on_host(step)
    except _NotIntact as error:
      raise CheckpointError(
        f"the checkpoint of step {step} in {self.directory} fails its integrity check: {error}."
      ) from None
    bad = self._bad_arrays(meta, arrays)
    if bad:
      raise CheckpointError(
        f"the checkpoint of step {step} in {self.directory} fails its "
        f"integrity check: the checksums of {_some(bad)} do not match."
      )
    return jax.tree.map(np.asarray, arrays)

  def read_meta(self, step: int | None = None) -> dict:
    """The metadata of ``step``, or of the newest step whose metadata is intact (a step
    that fails is skipped with a warning)."""
    steps = self.all_steps()
    if not steps:
      raise self._no_checkpoint("train that run first")
    candidates = [step] if step is not None else list(reversed(steps))
    reasons = []
    for candidate in candidates:
      try:
        return _on_every_process(candidate, functools.partial(self._verified_meta, candidate))
      except _NotIntact as error:
        reasons.append(f"step {candidate}: {error}")
        logger.warning(
          "the metadata of step %d in %s fails its integrity check (%s).",
          candidate,
          self.directory,
          error,
        )
    raise CheckpointError(
      f"no intact checkpoint metadata in {self.directory} ({'; '.join(reasons)})."
    )

  def _no_checkpoint(self, advice: str) -> CheckpointError:
    found = self.set_aside()
    if found:
      return CheckpointError(
        f"no intact checkpoint in {self.directory}: it holds only checkpoints set aside as "
        f"damaged ({', '.join(name for name, _ in found)}; each {SET_ASIDE_RECORD} says "
        "why)."
      )
    return CheckpointError(f"no checkpoint in {self.directory}: {advice}.")

  # --- Integrity. ---

  def _verified_meta(self, step: int) -> dict:
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      meta = restored["meta"]
    except Exception as error:
      raise _read_failure(error, "its metadata", self.directory, step) from None
    if not isinstance(meta, dict) or meta.get("step") != step:
      raise _NotIntact("its metadata is missing or names another step")
    if META_CHECKSUM in meta:
      if integrity.json_checksum(meta, META_CHECKSUM) != meta[META_CHECKSUM]:
        raise _NotIntact("the checksum of its metadata does not match")
    else:
      logger.warning(
        "the checkpoint of step %d in %s was written before kd_jax recorded "
        "checksums: it cannot be verified.",
        step,
        self.directory,
      )
    return meta

  def _stored_structure(self, step: int, item: str) -> dict[str, tuple]:
    try:
      metadata = self._manager.item_metadata(step)[item]
      leaves = jax.tree_util.tree_flatten_with_path(metadata)[0]
      return {
        integrity.path_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype))
        for path, leaf in leaves
      }
    except Exception as error:
      raise _read_failure(
        error, f"the description of its {item!r} arrays", self.directory, step
      ) from None

  def _check_structure(self, step: int, templates: dict) -> None:
    """Raises CheckpointMismatchError, naming the arrays, when the stored arrays' names,
    shapes or dtypes differ from the templates' (the checkpoint is another run's)."""
    differences = []
    for item, template in templates.items():
      stored = self._stored_structure(step, item)
      wanted = {
        integrity.path_name(path): (tuple(np.shape(leaf)), np.dtype(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]
      }
      for path in sorted(set(stored) | set(wanted)):
        if path not in wanted:
          differences.append(f"{path} is in the checkpoint but not in this run")
        elif path not in stored:
          differences.append(f"{path} is in this run but not in the checkpoint")
        elif stored[path] != wanted[path]:
          differences.append(
            f"{path}: {_describe(stored[path])} in the checkpoint, "
            f"{_describe(wanted[path])} in this run"
          )
    if differences:
      shown = "; ".join(differences[:3]) + (
        f"; and {len(differences) - 3} more" if len(differences) > 3 else ""
      )
      raise CheckpointMismatchError(
        f"the checkpoint of step {step} in {self.directory} holds another model or "
        f"training state than this run builds ({shown}); nothing was changed. Use a new "
        "--workdir, or rerun with the config that wrote it."
      )

  def _bad_arrays(self, meta: dict, items: dict) -> list[str]:
    expected = meta.get(ARRAY_CHECKSUMS)
    if expected is None:  # written before checksums (warned about with the metadata)
      return []
    bad = []
    for item, tree in items.items():
      actual = integrity.fingerprints(tree)
      bad += [f"{item}/{path}" for path in integrity.mismatched(expected.get(item, {}), actual)]
    return bad

  def _read_on_host(self, step: int) -> dict:
    """The arrays with the checkpoint's own shapes and dtypes (no template), on the host's
    CPU: an independent read that needs no accelerator memory."""
    try:
      metadata = self._manager.item_metadata(step)
      on_host = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
      args = {}
      for item in ("model", "train"):
        template = jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=on_host),
          metadata[item],
        )
        args[item] = ocp.args.StandardRestore(template)
      restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as error:
      raise _read_failure(error, "its arrays", self.directory, step) from None
    return {"model": restored["model"], "train": restored["train"]}

  def _set_aside(self, step: int, reason: str) -> None:
    """Moves the step's directory to ``corrupt_<step>`` (``corrupt_<step>.<n>`` if taken) with
    a record of why, and says so."""
    path = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, f"{SET_ASIDE_PREFIX}{step}")
    suffix = 1
    while os.path.exists(target):
      target = os.path.join(self.directory, f"{SET_ASIDE_PREFIX}{step}.{suffix}")
      suffix += 1
    if self.read_only:  # another run's directory (a teacher): skipped, never moved
      logger.warning(
        "the checkpoint of step %d in %s fails its integrity check (%s); skipping it.",
        step,
        self.directory,
        reason,
      )
      return
    logger.warning(
      "the checkpoint of step %d in %s fails its integrity check (%s): moved it "
      "to %s; trying the previous checkpoint.",
      step,
      self.directory,
      reason,
      os.path.basename(target),
    )
    if jax.process_index() == 0 and os.path.isdir(path):
      os.replace(path, target)
      files.write_json_atomically(
        os.path.join(target, SET_ASIDE_RECORD),
        {
          "step": step,
          "reason": reason,
          "set_aside_at": time.strftime("%Y-%m-%d %H:%M:%S"),
          "host": socket.gethostname(),
          "pid": os.getpid(),
        },
      )
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"kd_jax set aside {step}")
    self._manager.reload()

  def set_aside(self) -> list[tuple[str, str]]:
    """``[(folder name, reason)]`` of the checkpoints set aside in this directory."""
    if not os.path.isdir(self.directory):
      return []
    found = []
    for name in sorted(os.listdir(self.directory)):
      if not name.startswith(SET_ASIDE_PREFIX):
        continue
      reason = "no record of why"
      try:
        with open(os.path.join(self.directory, name, SET_ASIDE_RECORD)) as f:
          reason = json.load(f).get("reason", reason)
      except (OSError, ValueError):
        pass
      found.append((name, reason))
    return found

  def _report_set_aside(self) -> None:
    found = self.set_aside()
    if found:
      logger.warning(
        "%s holds %d checkpoint(s) set aside as damaged, kept for inspection "
        "(delete them when no longer needed): %s.",
        self.directory,
        len(found),
        "; ".join(f"{name} ({reason})" for name, reason in found),
      )


def _model_item(state: dict) -> dict:
  return {key: state[key] for key in MODEL_KEYS}


def _train_item(state: dict) -> dict:
  """What resumes training besides the model: step, optimiser, RNG, and whatever else a
  method keeps in the state (pooled backward KD's samples, Annealing-KD's best epoch)."""
  return {key: value for key, value in state.items() if key not in MODEL_KEYS}


def _describe(shape_dtype) -> str:
  shape, dtype = shape_dtype
  return f"{dtype}{list(shape)}"


def _some(paths: list[str], shown: int = 3) -> str:
  more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
  return ", ".join(paths[:shown]) + more


def _mib(num_bytes: float) -> str:
  return f"{num_bytes / 2**20:.1f} MiB"


def _write_error(error: Exception, directory: str, step: int | None) -> Exception:
  """An error of Orbax's writers as one clear error: a full disk or a read-only
  filesystem named as such (TensorStore reports them as RESOURCE_EXHAUSTED or a
  ValueError with the OS message in it), anything else unchanged."""
  text = str(error)
  what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES):
    return error
  if "RESOURCE_EXHAUSTED" in text or "No space left" in text:
    return DiskFullError(
      f"the disk filled up while writing {what} in {directory}; the "
      "earlier checkpoints are kept. Free some space and rerun the same "
      "command to resume."
    )
  if "Read-only file system" in text or "Permission denied" in text:
    code = errno.EROFS if "Read-only" in text else errno.EACCES
    return PermissionError(
      code, f"cannot write {what} in {directory} ({first_line(error)}); use a writable --workdir."
    )
  return error
