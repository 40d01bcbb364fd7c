"""One run per directory: ``<workdir>/kd_jax.lock``, held while a run reads or writes it.

Two processes training in one directory would overwrite each other's checkpoints and
duplicate each other's metric rows. The lock is an advisory ``flock`` on the file, taken
without waiting, so the second process stops at once with a line naming the holder (host,
pid, start time and command, which the holder writes into the file). The kernel drops the
lock when its process exits in any way, ``kill -9`` included, so a lock is never stale in
the sense of blocking anyone; a file left by a killed run is recognised (it names a holder
but nobody holds it) and taken over with a note. On a filesystem without ``flock`` the
holder's pid is checked instead when it ran on this host.

In a multi-process job every process works in the same directory: process 0 takes the lock
and tells the others whether it got it, so a second job stops on every process. Holding is
re-entrant within a process (the training loop and the run around it both hold it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator

import jax
import numpy as np

logger = logging.getLogger(__name__)

LOCK_NAME = "kd_jax.lock"
_held: dict[str, list] = {}  # real path of the lock file -> [file descriptor, depth]


class WorkdirLockedError(RuntimeError):
  """Another process holds the run directory."""


def _holder_text(path: str) -> tuple[str, dict]:
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return "another process", {}
  if not isinstance(holder, dict):
    return "another process", {}
  return (
    f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
    f"{holder.get('started', '?')}: {holder.get('command', '?')}"
  ), holder


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _acquire(workdir: str) -> int:
  """Takes the lock of ``workdir`` (creating the directory); returns the open file."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise PermissionError(
      error.errno,
      f"cannot create the run directory {workdir} ({error.strerror}); choose a writable --workdir.",
    ) from error
  path = os.path.join(workdir, LOCK_NAME)
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
      raise PermissionError(
        error.errno,
        f"cannot write in the run directory {workdir} "
        f"({error.strerror}); choose a writable --workdir.",
      ) from error
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      holder, _ = _holder_text(path)
      raise WorkdirLockedError(
        f"{workdir} is in use by another kd_jax run ({holder}); two runs in one directory "
        "would overwrite each other's checkpoints. Wait for it to end, stop it, or use "
        "another --workdir."
      ) from None
    except OSError as error:
      if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        os.close(fd)
        raise
      _check_holder_without_flock(path, workdir)
    # The previous holder may have removed the file between our open and our flock: then
    # we hold a lock on a deleted file. Retry on the path's current file.
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  holder, previous = _holder_text(path)
  if previous:
    logger.info(
      "%s: taking over the lock left by a run that ended without releasing it (%s).",
      workdir,
      holder,
    )
  record = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    "command": " ".join(sys.argv),
  }
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps(record).encode(), 0)
  os.fsync(fd)
  return fd


def _check_holder_without_flock(path: str, workdir: str) -> None:
  """No flock here (some network filesystems): refuse a holder that is alive on this host;
  one on another host cannot be checked, so say so."""
  holder, record = _holder_text(path)
  if not record or record.get("pid") == os.getpid():
    return
  if record.get("host") == socket.gethostname():
    if _pid_alive(int(record.get("pid", -1))):
      raise WorkdirLockedError(
        f"{workdir} is in use by another kd_jax run ({holder}). Wait "
        "for it to end, stop it, or use another --workdir."
      )
    return
  logger.warning(
    "%s: this filesystem has no file locks, and the lock file names a run on "
    "another host (%s); make sure it has ended.",
    workdir,
    holder,
  )


def _release(workdir: str, fd: int) -> None:
  path = os.path.join(workdir, LOCK_NAME)
  try:
    os.remove(path)  # while still holding it: the next run creates a fresh file
  except FileNotFoundError:
    pass
  os.close(fd)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds ``workdir``'s lock for the block (see the module docstring). Raises
  WorkdirLockedError when another run holds it, PermissionError when the directory cannot
  be written. A directory that this call created and that is still empty at the end is
  removed again, so a run refused before it wrote anything leaves no trace."""
  workdir = os.path.abspath(workdir)
  key = os.path.realpath(os.path.join(workdir, LOCK_NAME))
  if key in _held:
    _held[key][1] += 1
    try:
      yield
    finally:
      _held[key][1] -= 1
    return
  created = not os.path.exists(workdir)
  fd, failure = None, None
  if jax.process_index() == 0:
    try:
      fd = _acquire(workdir)
    except Exception as error:
      failure = error
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    got = int(multihost_utils.broadcast_one_to_all(np.int32(fd is not None)))
    if not got and failure is None:
      failure = WorkdirLockedError(
        f"process 0 could not take the lock of {workdir} (its error says why)."
      )
  if failure is not None:
    raise failure
  # Every process records the hold (fd None on processes other than 0), so that a nested
  # hold is re-entrant on all of them and none waits in a broadcast the others skip.
  _held[key] = [fd, 1]
  try:
    yield
  finally:
    del _held[key]
    if fd is not None:
      _release(workdir, fd)
      if created and os.path.isdir(workdir) and not os.listdir(workdir):
        os.rmdir(workdir)
