"""The run directory under an operator's mistakes, damage, concurrent runs and signals.

  python -m kd_jax.experiments.reliability --workdir=runs/reliability \
      --out=results/reliability.md

The automated part of the campaign behind issue 25, rerun against the current code: each
attempt does what an operator of a preemptible cluster (or a user of the library) might —
damage a checkpoint, rerun with the wrong flags, start a second process, send signals at
awkward moments, fill the disk — through the command-line scripts on the embedded digits
(or the library, for the pure functions), and records what happens now: the exit status,
the last line of stderr, and whether the run directory was left as it was or resumed to
exactly the numbers of an uninterrupted run. Expected result: every attempt holds
(results/reliability.md). The tests check the same behaviours one by one
(tests/test_reliability.py, tests/test_processes.py, tests/test_bad_input.py); this replay
is broader and slower (about 10 minutes on 2 CPU cores), so it is not part of CI.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import flags

from kd_jax.experiments import launch, reporting, shared

_WORKDIR = flags.DEFINE_string("workdir", "runs/reliability", "Scratch directory (emptied).")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown report here.")
_ONLY = flags.DEFINE_list(
  "only",
  None,
  "Run only the attempts whose number is listed "
  "(a partial replay, for debugging; the report needs them all).",
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "digits.py")
# A scratch student with a checkpoint every 10 steps: 6 epochs, 132 steps.
LONG = ("--config.num_epochs=6", "--config.checkpoint_every_steps=10", "--config.model=cnn_tiny")
TEACHER = (
  "--config.num_epochs=2",
  "--config.model=mlp_small",
  "--config.checkpoint_every_steps=22",
)


@dataclasses.dataclass
class Outcome:
  holds: bool | None  # None: could not be tried on this machine (the reason is observed)
  observed: str


@dataclasses.dataclass
class Attempt:
  number: int
  finding: str  # the numbered finding it reproduces, or "held" (held before)
  description: str
  run: Callable[[Lab], Outcome]


ATTEMPTS: list[Attempt] = []


def attempt(
  finding: str, description: str
) -> Callable[[Callable[[Lab], Outcome]], Callable[[Lab], Outcome]]:
  def register(function: Callable[[Lab], Outcome]) -> Callable[[Lab], Outcome]:
    ATTEMPTS.append(Attempt(len(ATTEMPTS) + 1, finding, description, function))
    return function

  return register


class Lab:
  """Runs the scripts in fresh directories under ``root``, and remembers shared runs."""

  def __init__(self, root: str):
    self.root = root
    self._counter = 0
    self._cache: dict[str, Any] = {}

  def fresh(self, name: str) -> str:
    self._counter += 1
    return os.path.join(self.root, f"{self._counter:03d}_{name}")

  @staticmethod
  def command(entry: str, role: str, workdir: str, *overrides: str) -> list[str]:
    return [
      sys.executable,
      "-m",
      f"kd_jax.experiments.{entry}",
      f"--config={CONFIG}:{role}",
      f"--workdir={workdir}",
      "--config.progress_bar=False",
      *overrides,
    ]

  @staticmethod
  def env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    return env

  def run(self, command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=timeout)

  def teacher(self) -> str:
    """A finished 2-epoch teacher (checkpoints at steps 22 and 44); copy before changing."""
    if "teacher" not in self._cache:
      workdir = self.fresh("teacher")
      result = self.run(self.command("train_teacher", "teacher", workdir, *TEACHER))
      assert result.returncode == 0, result.stderr[-2000:]
      self._cache["teacher"] = workdir
    return self._cache["teacher"]

  def copy(self, source: str, name: str) -> str:
    target = self.fresh(name)
    shutil.copytree(source, target)
    return target

  def long_command(self, workdir: str, *extra: str) -> list[str]:
    return self.command("distill", "scratch", workdir, *LONG, *extra)

  def reference(self) -> dict:
    """The final variables of the uninterrupted LONG run."""
    if "reference" not in self._cache:
      workdir = self.fresh("uninterrupted")
      result = self.run(self.long_command(workdir))
      assert result.returncode == 0, result.stderr[-2000:]
      self._cache["reference"] = final_arrays(workdir)
    return self._cache["reference"]


# --- What an attempt looks at. ---


def last_line(result: subprocess.CompletedProcess) -> str:
  lines = result.stderr.strip().splitlines()
  line = lines[-1] if lines else "(no output)"
  return line if len(line) <= 220 else line[:219] + "…"


def exit_and_line(result: subprocess.CompletedProcess) -> str:
  return f"exit {result.returncode}: {last_line(result)}"


def one_line(result: subprocess.CompletedProcess) -> bool:
  return "Traceback" not in result.stderr and last_line(result).startswith("error:")


def snapshot(workdir: str) -> dict[str, bytes]:
  found = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, workdir)] = f.read()
  return found


def final_arrays(workdir: str) -> dict:
  from kd_jax.train import checkpoint

  store = checkpoint.RunCheckpoints(workdir, read_only=True)
  arrays = store.read_arrays()
  store.close()
  return arrays


def same_arrays(a: dict, b: dict) -> bool:
  import jax

  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def data_files(workdir: str, step: int, item: str = "model") -> list[str]:
  return sorted(
    glob.glob(
      os.path.join(workdir, "checkpoints", str(step), item, "**", "d", "*"), recursive=True
    ),
    key=os.path.getsize,
  )


def start_when(lab: Lab, command: list[str], ready: Callable[[], bool]) -> subprocess.Popen:
  """Starts ``command`` and returns once ``ready()`` (or the process ended, or 10 min)."""
  process = subprocess.Popen(
    command, env=lab.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  deadline = time.time() + 600
  while not ready() and process.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  return process


def start_and_signal(
  lab: Lab,
  command: list[str],
  sig: int,
  ready: Callable[[], bool],
  then_wait: float = 0.0,
) -> tuple[int, str, float]:
  """Starts ``command``, sends ``sig`` once ``ready()``; returns (exit status, stderr,
  seconds from the signal to the exit)."""
  process = start_when(lab, command, ready)
  time.sleep(then_wait)
  process.send_signal(sig)
  sent = time.time()
  _, stderr = process.communicate(timeout=600)
  return process.returncode, stderr, time.time() - sent


def resumed_equal(lab: Lab, workdir: str) -> tuple[bool, str]:
  result = lab.run(lab.long_command(workdir))
  equal = result.returncode == 0 and same_arrays(final_arrays(workdir), lab.reference())
  return equal, (
    "resumed to the uninterrupted run's parameters, bit for bit"
    if equal
    else f"resume differs ({exit_and_line(result)})"
  )


# --- Damaged checkpoints (held before the issue; must still hold). ---


def _damaged_newest(lab: Lab, damage: Callable[[str, int], None], name: str) -> Outcome:
  workdir = lab.fresh(name)
  lab.run(lab.long_command(workdir, "--config.num_epochs=3"))  # stops at step 66
  newest = steps(workdir)[-1]
  damage(workdir, newest)
  ok, resumed = resumed_equal(lab, workdir)
  aside = os.path.isdir(os.path.join(workdir, "checkpoints", f"corrupt_{newest}"))
  return Outcome(
    ok and aside,
    f"step {newest} set aside as corrupt_{newest}{'' if aside else ' (NOT)'}; {resumed}",
  )


@attempt("held", "Truncate the newest checkpoint's largest array file, rerun")
def truncated(lab: Lab) -> Outcome:
  def damage(workdir, step):
    path = data_files(workdir, step)[-1]
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)

  return _damaged_newest(lab, damage, "truncated")


@attempt("held", "Overwrite the newest checkpoint's files with random bytes, rerun")
def random_bytes(lab: Lab) -> Outcome:
  def damage(workdir, step):
    rng = np.random.default_rng(0)
    for path in data_files(workdir, step) + data_files(workdir, step, "train"):
      with open(path, "wb") as f:
        f.write(rng.integers(0, 256, os.path.getsize(path) or 16, dtype=np.uint8).tobytes())

  return _damaged_newest(lab, damage, "random_bytes")


@attempt("held", "Delete half of the newest checkpoint (its model item), rerun")
def half_deleted(lab: Lab) -> Outcome:
  return _damaged_newest(
    lab, lambda w, s: shutil.rmtree(os.path.join(w, "checkpoints", str(s), "model")), "half_deleted"
  )


@attempt("3", "Flip one bit in a parameter file of the newest checkpoint, rerun")
def flipped_bit(lab: Lab) -> Outcome:
  def damage(workdir, step):
    path = data_files(workdir, step)[-1]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x08
    open(path, "wb").write(bytes(data))

  return _damaged_newest(lab, damage, "flipped_bit")


@attempt("3", "Change one digit of the newest checkpoint's recorded history (metadata), rerun")
def edited_metadata(lab: Lab) -> Outcome:
  def damage(workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step), "meta", "metadata")
    meta = json.load(open(path))
    meta["history"][0]["top1"] += 1.0
    json.dump(meta, open(path, "w"))

  return _damaged_newest(lab, damage, "edited_metadata")


@attempt("7", "Damage every checkpoint of a run, rerun, then rerun again")
def all_damaged(lab: Lab) -> Outcome:
  workdir = lab.copy(lab.teacher(), "all_damaged")
  for step in steps(workdir):
    for path in data_files(workdir, step):
      open(path, "wb").write(b"junk")
  first = lab.run(lab.command("train_teacher", "teacher", workdir, *TEACHER))
  second = lab.run(lab.command("train_teacher", "teacher", workdir, *TEACHER))
  holds = (
    one_line(first)
    and one_line(second)
    and not steps(workdir)
    and "holds only checkpoints set aside" in last_line(second)
  )
  return Outcome(holds, f"{exit_and_line(first)}; then {exit_and_line(second)}")


# --- Mistaken reruns (finding 1 and 2). ---


def _refused_untouched(lab: Lab, workdir: str, command: list[str], expect: str) -> Outcome:
  before = snapshot(workdir)
  result = lab.run(command)
  untouched = snapshot(workdir) == before
  holds = result.returncode == 2 and one_line(result) and untouched and expect in result.stderr
  return Outcome(
    holds, f"{exit_and_line(result)}; directory {'unchanged' if untouched else 'CHANGED'}"
  )


@attempt("1", "Rerun a finished teacher with --config.model=cnn_tiny")
def teacher_other_model(lab: Lab) -> Outcome:
  workdir = lab.copy(lab.teacher(), "other_model")
  return _refused_untouched(
    lab,
    workdir,
    lab.command("train_teacher", "teacher", workdir, *TEACHER, "--config.model=cnn_tiny"),
    "model: 'mlp_small' -> 'cnn_tiny'",
  )


@attempt("1", "The same with --config.allow_config_change=True")
def teacher_other_model_allowed(lab: Lab) -> Outcome:
  workdir = lab.copy(lab.teacher(), "other_model_allowed")
  return _refused_untouched(
    lab,
    workdir,
    lab.command(
      "train_teacher",
      "teacher",
      workdir,
      *TEACHER,
      "--config.model=cnn_tiny",
      "--config.allow_config_change=True",
    ),
    "holds another model or training state",
  )


def _half_student(lab: Lab, name: str) -> tuple[str, list[str]]:
  workdir = lab.fresh(name)
  command = lab.command(
    "distill", "kd", workdir, f"--config.teacher_workdir={lab.teacher()}", "--config.model=cnn_tiny"
  )
  result = lab.run([*command, "--config.num_epochs=1"])
  assert result.returncode == 0, result.stderr[-2000:]
  return workdir, command


@attempt(
  "1",
  "Rerun a half-done student as pooled backward KD (extra state), config change "
  "allowed; then the correct command",
)
def student_pooled(lab: Lab) -> Outcome:
  workdir, command = _half_student(lab, "pooled")
  refused = _refused_untouched(
    lab,
    workdir,
    [
      *command,
      "--config.num_epochs=2",
      "--config.method=backward_kd",
      "--config.backward.pool_every_epochs=1",
      "--config.allow_config_change=True",
    ],
    "aux_pool is in this run but not in the checkpoint",
  )
  result = lab.run([*command, "--config.num_epochs=2"])
  resumed = result.returncode == 0 and "from step 22" in result.stderr
  return Outcome(
    refused.holds and resumed,
    f"{refused.observed}; the correct command "
    f"{'resumed from step 22' if resumed else 'did NOT resume: ' + last_line(result)}",
  )


def _changed_key(flag: str, expect: str, name: str):
  def run(lab):
    workdir, command = _half_student(lab, name)
    return _refused_untouched(lab, workdir, [*command, flag], expect)

  return run


# (The teacher is checked as it loads, before the run's own checkpoint: another dataset is
# refused there, naming the teacher's.)
for _flag, _expect, _name in (
  ("--config.seed=1", "seed: 0 -> 1", "seed"),
  ("--config.batch_size=32", "batch_size: 64 -> 32", "batch"),
  ("--config.dataset=mnist5k", "was trained on 'digits', not on 'mnist5k'", "dataset"),
  ("--config.kd.temperature=2.0", "kd.temperature: 4.0 -> 2.0", "temperature"),
  ("--config.method=kd_mixup", "method: 'kd' -> 'kd_mixup'", "method"),
):
  attempt("held", f"Rerun a half-done student with {_flag}")(_changed_key(_flag, _expect, _name))


@attempt("held", "Rerun a half-done student with more epochs (a longer run)")
def longer(lab: Lab) -> Outcome:
  _workdir, command = _half_student(lab, "longer")
  result = lab.run([*command, "--config.num_epochs=2"])
  holds = result.returncode == 0 and "num_epochs: 1 -> 2" in result.stderr
  return Outcome(
    holds,
    "resumed from step 22 with a warning naming num_epochs: 1 -> 2"
    if holds
    else exit_and_line(result),
  )


@attempt("3", "Resume a student with its teacher moved elsewhere, then with another teacher")
def teacher_moved_and_changed(lab: Lab) -> Outcome:
  workdir, command = _half_student(lab, "teacher_moved")
  moved = lab.copy(lab.teacher(), "moved_teacher")
  replace = lambda path: [
    w if not w.startswith("--config.teacher_workdir=") else f"--config.teacher_workdir={path}"
    for w in command
  ]
  first = lab.run([*replace(moved), "--config.num_epochs=2"])
  other = lab.fresh("other_teacher")
  lab.run(lab.command("train_teacher", "teacher", other, *TEACHER, "--config.seed=7"))
  before = snapshot(workdir)
  second = lab.run([*replace(other), "--config.num_epochs=3"])
  holds = (
    first.returncode == 0
    and second.returncode == 2
    and one_line(second)
    and "was trained with another teacher" in second.stderr
    and snapshot(workdir) == before
  )
  return Outcome(
    holds, f"moved: exit {first.returncode} (resumed); another: {exit_and_line(second)}"
  )


@attempt("3", "Load a teacher whose newest checkpoint has a flipped bit")
def teacher_flipped(lab: Lab) -> Outcome:
  teacher = lab.copy(lab.teacher(), "teacher_flipped")
  path = data_files(teacher, 44)[-1]
  data = bytearray(open(path, "rb").read())
  data[len(data) // 3] ^= 0x01
  open(path, "wb").write(bytes(data))
  result = lab.run(
    lab.command(
      "distill",
      "kd",
      lab.fresh("student"),
      f"--config.teacher_workdir={teacher}",
      "--config.num_epochs=1",
    )
  )
  holds = (
    result.returncode == 0
    and "fails its integrity check" in result.stderr
    and "using the checkpoint of step 22" in result.stderr
  )
  return Outcome(
    holds,
    "detected (the damaged step and why named), warned, step 22 used"
    if holds
    else exit_and_line(result),
  )


@attempt("7", "Distil from a teacher whose every checkpoint is damaged")
def teacher_all_damaged(lab: Lab) -> Outcome:
  teacher = lab.copy(lab.teacher(), "teacher_damaged")
  for folder, _, names in os.walk(os.path.join(teacher, "checkpoints")):
    for name in names:
      open(os.path.join(folder, name), "wb").write(b"x")
  result = lab.run(
    lab.command("distill", "kd", lab.fresh("student"), f"--config.teacher_workdir={teacher}")
  )
  lines = result.stderr.strip().splitlines()
  return Outcome(
    result.returncode == 1 and one_line(result) and len(lines) <= 6,
    f"{exit_and_line(result)} ({len(lines)} lines of stderr in all)",
  )


def _config_refused(flags_: tuple[str, ...], expect: str, role: str = "kd"):
  def run(lab):
    workdir = lab.fresh("config")
    overrides = [*flags_]
    if role == "kd":
      overrides.append(f"--config.teacher_workdir={lab.teacher()}")
    result = lab.run(lab.command("distill", role, workdir, *overrides))
    holds = (
      result.returncode == 2
      and one_line(result)
      and expect in last_line(result)
      and not os.path.exists(workdir)
    )
    return Outcome(holds, f"{exit_and_line(result)}; nothing made")

  return run


for _flags, _expect, _finding in (
  (("--config.max_checkpoints_to_keep=0",), "max_checkpoints_to_keep must be ≥ 1", "2"),
  (("--config.method=kd_mixup", "--config.mixup.alpha=nan"), "mixup.alpha is nan", "3"),
  (("--config.method=kd_cutmix", "--config.cutmix.alpha=nan"), "cutmix.alpha is nan", "3"),
  (("--config.num_epochs=0",), "num_epochs must be ≥ 1", "3"),
  (("--config.num_epochs=-2",), "num_epochs must be ≥ 1", "3"),
  (
    ("--config.method=continuation_kd", "--config.continuation.psi_ramp_epochs=0"),
    "psi_ramp_epochs must be a number > 0",
    "7",
  ),
  (("--config.kd.temperature=-4",), "kd.temperature must be a number > 0", "3"),
):
  attempt(_finding, "Run with " + " ".join(_flags))(_config_refused(_flags, _expect))


@attempt("3", "Run with an empty --workdir=")
def empty_workdir(lab: Lab) -> Outcome:
  scratch = lab.fresh("cwd")
  os.makedirs(scratch)
  command = [
    w if not w.startswith("--workdir=") else "--workdir="
    for w in lab.command("train_teacher", "teacher", "x", *TEACHER)
  ]
  result = subprocess.run(
    command, env=lab.env(), capture_output=True, text=True, cwd=scratch, timeout=600
  )
  return Outcome(
    result.returncode == 2 and one_line(result) and not os.listdir(scratch),
    f"{exit_and_line(result)}; nothing written in the current directory",
  )


@attempt("5", "Rerun a finished run")
def finished_rerun(lab: Lab) -> Outcome:
  workdir = lab.copy(lab.teacher(), "finished")
  checkpoints = snapshot(os.path.join(workdir, "checkpoints"))
  result = lab.run(lab.command("train_teacher", "teacher", workdir, *TEACHER))
  holds = (
    result.returncode == 0
    and "last_top1" in result.stdout
    and snapshot(os.path.join(workdir, "checkpoints")) == checkpoints
  )
  return Outcome(
    holds,
    "exit 0, the summary reported, no step trained, checkpoints unchanged"
    if holds
    else exit_and_line(result),
  )


# --- Concurrent runs and signals (findings 4 and 5). ---


@attempt("4", "Start a second process on a workdir while a run holds it")
def second_process(lab: Lab) -> Outcome:
  workdir = lab.fresh("two_processes")
  process = start_when(
    lab, lab.long_command(workdir, "--config.num_epochs=60"), lambda: bool(steps(workdir))
  )
  start = time.time()
  second = lab.run(lab.long_command(workdir, "--config.num_epochs=60"))
  seconds = time.time() - start
  process.send_signal(signal.SIGTERM)
  process.communicate(timeout=600)
  from kd_jax.train import metrics

  rows = [(r["step"], r["split"]) for r in metrics.read_rows(workdir)]
  holds = (
    second.returncode == 1
    and "is in use by another kd_jax run" in second.stderr
    and len(rows) == len(set(rows))
  )
  return Outcome(
    holds,
    f"{exit_and_line(second)} (after {seconds:.1f} s, start-up included); no duplicate metric rows",
  )


@attempt("4", "Leave a lock file behind (kill -9), rerun")
def stale_lock(lab: Lab) -> Outcome:
  workdir = lab.fresh("stale_lock")
  returncode, _, _ = start_and_signal(
    lab, lab.long_command(workdir), signal.SIGKILL, lambda: len(steps(workdir)) >= 2
  )
  left = os.path.exists(os.path.join(workdir, "kd_jax.lock"))
  ok, resumed = resumed_equal(lab, workdir)
  return Outcome(
    returncode == -9 and ok,
    f"kill -9 left the lock file: {left}; the rerun took it over and {resumed}",
  )


def _signal_attempt(sig, ready_name: str, then_wait: float = 0.0, limit: float = 60.0):
  def run(lab):
    workdir = lab.fresh(f"{signal.Signals(sig).name}_{ready_name}")
    command = lab.long_command(workdir)
    ready = {
      "first checkpoint": lambda: bool(steps(workdir)),
      "save in flight": lambda: (
        bool(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))
        and len(steps(workdir)) >= 2
      ),
      "lock taken (before training)": lambda: os.path.exists(os.path.join(workdir, "kd_jax.lock")),
    }[ready_name]
    if ready_name == "save in flight":
      command = lab.long_command(workdir, "--config.checkpoint_every_steps=1")
    returncode, stderr, seconds = start_and_signal(lab, command, sig, ready, then_wait)
    expected = 128 + sig
    # Before the loop has started nothing is in flight: the default action (or, for Ctrl-C,
    # one line) is the right one, and nothing can be lost.
    early = returncode in (-sig, expected) and not steps(workdir)
    if ready_name == "save in flight":
      command = lab.long_command(workdir, "--config.checkpoint_every_steps=1")
      result = lab.run(command)
      ok = result.returncode == 0 and same_arrays(final_arrays(workdir), lab.reference())
      resumed = (
        "resumed to the uninterrupted run's parameters, bit for bit"
        if ok
        else f"resume differs ({exit_and_line(result)})"
      )
    else:
      ok, resumed = resumed_equal(lab, workdir)
    line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    holds = (
      (returncode == expected or early) and ok and seconds < limit and "Traceback" not in stderr
    )
    return Outcome(holds, f"exit {returncode} after {seconds:.1f} s: {line[:150]}; {resumed}")

  return run


@attempt("held", "kill -9 during training, rerun")
def kill_9(lab: Lab) -> Outcome:
  workdir = lab.fresh("kill9")
  returncode, _, _ = start_and_signal(
    lab, lab.long_command(workdir), signal.SIGKILL, lambda: len(steps(workdir)) >= 2
  )
  ok, resumed = resumed_equal(lab, workdir)
  return Outcome(returncode == -signal.SIGKILL and ok, f"exit {returncode}; {resumed}")


attempt("held", "SIGTERM during training, rerun")(
  _signal_attempt(signal.SIGTERM, "first checkpoint")
)
attempt("4", "SIGINT (Ctrl-C) during training, rerun")(
  _signal_attempt(signal.SIGINT, "first checkpoint")
)
attempt("4", "SIGINT while a checkpoint save is in flight (a save every step), rerun")(
  _signal_attempt(signal.SIGINT, "save in flight")
)
attempt("held", "SIGTERM while a checkpoint save is in flight, rerun")(
  _signal_attempt(signal.SIGTERM, "save in flight")
)
attempt("held", "SIGTERM 1 s after the run took its workdir (loading, compiling), rerun")(
  _signal_attempt(signal.SIGTERM, "lock taken (before training)", then_wait=1.0)
)


@attempt("4", "SIGTERM, then SIGTERM again 0.3 s later (an impatient scheduler), rerun")
def twice(lab: Lab) -> Outcome:
  workdir = lab.fresh("twice")
  process = start_when(
    lab,
    lab.long_command(workdir, "--config.checkpoint_every_steps=1"),
    lambda: len(steps(workdir)) >= 2,
  )
  process.send_signal(signal.SIGTERM)
  time.sleep(0.3)
  process.send_signal(signal.SIGTERM)
  start = time.time()
  _, stderr = process.communicate(timeout=600)
  result = lab.run(lab.long_command(workdir, "--config.checkpoint_every_steps=1"))
  ok = result.returncode == 0 and same_arrays(final_arrays(workdir), lab.reference())
  line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
  # The first signal's save completes (exit 143), or the second cuts it short (exit 143 at
  # once, "again"), or the second arrives as the process is already shutting down after
  # the save (killed by it: -15): each keeps the newest complete checkpoint.
  saved = "saved a checkpoint" in stderr or "again: exiting now" in stderr
  return Outcome(
    process.returncode in (143, -signal.SIGTERM) and saved and ok and "Traceback" not in stderr,
    f"exit {process.returncode} {time.time() - start:.1f} s after the second "
    f"signal: {line[:150]}; the rerun resumed to the uninterrupted parameters"
    if ok
    else f"resume differs ({exit_and_line(result)})",
  )


ROLEWISE = (
  "--config.search.population=4",
  "--config.search.epochs=2",
  "--config.search.exploit_every=1",
  "--config.search.train_examples=128",
  "--config.search.batch_size=32",
  "--config.num_epochs=2",
  "--config.teacher_model=cnn_tiny",
  "--config.eval_batch_size=256",
  "--config.seeds=(0,)",
)


def _rolewise(workdir: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "kd_jax.experiments.rolewise",
    f"--config={os.path.dirname(CONFIG)}/rolewise.py:digits",
    f"--workdir={workdir}",
    "--stage=teacher",
    *ROLEWISE,
  ]


@attempt(
  "5",
  "SIGTERM when the PBA search's last checkpoint appears (its last epoch), "
  "rerun; then rerun the finished stage",
)
def rolewise_signal(lab: Lab) -> Outcome:
  straight = lab.fresh("rolewise_straight")
  lab.run(_rolewise(straight))
  workdir = lab.fresh("rolewise")
  population = os.path.join(workdir, "teacher_search_population")
  returncode, stderr, _ = start_and_signal(
    lab, _rolewise(workdir), signal.SIGTERM, lambda: 4 in steps(population)
  )  # epoch 1 of 2 saved: the search's last epoch
  first = lab.run(_rolewise(workdir))
  again = lab.run(_rolewise(workdir))
  same = json.load(open(os.path.join(workdir, "teacher_search.json"))) == json.load(
    open(os.path.join(straight, "teacher_search.json"))
  ) and same_arrays(
    final_arrays(os.path.join(workdir, "teacher")), final_arrays(os.path.join(straight, "teacher"))
  )
  holds = (
    returncode in (143, -15)
    and first.returncode == 0
    and again.returncode == 0
    and "teacher: already saved" in again.stderr
    and same
  )
  line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
  return Outcome(
    holds,
    f"exit {returncode}: {line[:120]}; the rerun finished the stage "
    f"{'with the uninterrupted result' if same else 'DIFFERENTLY'}; the "
    f"finished stage rerun: exit {again.returncode}, reported",
  )


# --- metrics.jsonl (finding 6). ---


@attempt("6", "Tear the last line of metrics.jsonl (a kill mid-write), rerun a longer run")
def torn_metrics(lab: Lab) -> Outcome:
  workdir = lab.copy(lab.teacher(), "torn_metrics")
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, "ab") as f:
    f.write(b'{"step": 50, "spl')
  intact = open(path, "rb").read().rsplit(b"\n", 1)[0] + b"\n"
  result = lab.run(
    lab.command("train_teacher", "teacher", workdir, *TEACHER, "--config.num_epochs=3")
  )
  kept = open(path, "rb").read().startswith(intact)
  holds = (
    result.returncode == 0
    and "its last line was cut off" in result.stderr
    and path in result.stderr
    and kept
  )
  return Outcome(
    holds,
    "repaired with a warning naming the file; resumed; the earlier rows kept byte for byte"
    if holds
    else exit_and_line(result),
  )


# --- One line (finding 7). ---


def _private_tmpfs(options: str, folder: str, command: list[str]) -> list[str] | None:
  """``command`` in a mount namespace of its own with a fresh tmpfs on ``folder`` (a real
  full or read-only disk that vanishes with the process); None where none can be made."""
  if shutil.which("unshare") is None:
    return None
  prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-m", "--map-root-user"]
  if subprocess.run([*prefix, "true"], capture_output=True).returncode:
    return None
  script = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(folder)} && exec " + " ".join(
    map(shlex.quote, command)
  )
  return [*prefix, "sh", "-c", script]


NO_NAMESPACE = Outcome(None, "skipped: no mount namespace can be made on this machine")


@attempt("7", "Train with a diverging learning rate (1e30)")
def diverging(lab: Lab) -> Outcome:
  result = lab.run(
    lab.command(
      "train_teacher",
      "teacher",
      lab.fresh("diverging"),
      *TEACHER,
      "--config.optimizer.learning_rate=1e30",
    )
  )
  return Outcome(result.returncode == 1 and one_line(result), exit_and_line(result))


def _on_private_disk(mount_options: str, name: str, *overrides: str):
  """An attempt: train a teacher in a run directory on a fresh tmpfs mounted with
  ``mount_options``; it must end with one ``error:`` line and exit 1."""

  def run(lab):
    folder = lab.fresh(name)
    os.makedirs(folder)
    command = _private_tmpfs(
      mount_options, folder, lab.command("train_teacher", "teacher", f"{folder}/run", *overrides)
    )
    if command is None:
      return NO_NAMESPACE
    result = lab.run(command)
    return Outcome(result.returncode == 1 and one_line(result), exit_and_line(result))

  return run


attempt("7", "Train on a disk too small for a checkpoint (1 MiB tmpfs)")(
  _on_private_disk("size=1m", "disk", "--config.num_epochs=1")
)
attempt("7", "Train in a read-only filesystem")(_on_private_disk("ro", "readonly", *TEACHER))


for _flag in (
  "--confg.seed=3",
  "--config.num_epochs=two",
  "--config.kd.temprature=3",
  "--config.kd.temp=3",
  "--stage=teacher",
):
  attempt("7", f"Mistype a flag: {_flag}")(
    lambda lab, flag=_flag: (
      lambda r: Outcome(r.returncode == 2 and one_line(r), exit_and_line(r))
    )(lab.run(lab.command("distill", "kd", lab.fresh("flag"), flag)))
  )


@attempt("7", "Leave out --workdir")
def no_workdir(lab: Lab) -> Outcome:
  command = [w for w in lab.command("distill", "kd", "x") if not w.startswith("--workdir")]
  result = lab.run(command)
  return Outcome(result.returncode == 2 and one_line(result), exit_and_line(result))


# --- The library (finding 8). ---


def _raises(call: Callable[[], object], expect: str) -> Outcome:
  try:
    value = call()
  except Exception as error:
    text = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return Outcome(expect in text, text[:220])
  return Outcome(False, f"no error; returned {value!r}"[:220])


def _library():
  import jax
  import jax.numpy as jnp

  from kd_jax import augment, losses, methods, policies

  return jax, jnp, augment, losses, methods, policies


@attempt("8", "A traced temperature of -1 under jit, with checkify")
def traced_temperature(lab: Lab) -> Outcome:
  jax, jnp, _, losses, _, _ = _library()
  from jax.experimental import checkify

  logits = jnp.array([[1.0, 2.0, 0.0]])
  checked = checkify.checkify(jax.jit(losses.kd_kl), errors=checkify.user_checks)
  return _raises(
    lambda: checked(logits, logits, jnp.float32(-1.0))[0].throw(), "temperature must be > 0"
  )


for _description, _alpha in (
  ("mixup with alpha np.float32(0)", lambda jnp: np.float32(0)),
  ("mixup with alpha jnp.array(0.)", lambda jnp: jnp.array(0.0)),
  ("mixup with alpha NaN", lambda jnp: float("nan")),
):

  def _alpha_attempt(lab, alpha=_alpha):
    jax, jnp, augment, *_ = _library()
    return _raises(
      lambda: augment.mixup(jax.random.PRNGKey(0), jnp.ones((4, 8, 8, 1)), alpha(jnp)),
      "alpha must be > 0",
    )

  attempt("8", _description)(_alpha_attempt)


@attempt("8", 'kd_kl with the temperature "-4" (a string)')
def string_temperature(lab: Lab) -> Outcome:
  _, jnp, _, losses, _, _ = _library()
  return _raises(
    lambda: losses.kd_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), "-4"), "must be a number"
  )


@attempt("8", "cross_entropy and a view with labels as a Python list")
def list_labels(lab: Lab) -> Outcome:
  jax, jnp, _, losses, methods, _ = _library()
  head = lambda x: x.reshape(x.shape[0], -1)[:, :3]
  loss = losses.cross_entropy(jnp.zeros((2, 3)), [0, 1])
  view = methods.make_view("mixup")(
    jax.random.PRNGKey(0), jnp.ones((4, 8, 8, 1)), [0, 1, 2, 0], head, head, {}
  )
  return Outcome(
    loss.shape == (2,) and view.labels.shape == (4,),
    f"accepted: losses of shape {loss.shape}, view labels {view.labels.shape}",
  )


@attempt("8", "A mixup view whose teacher returns a tuple")
def tuple_teacher(lab: Lab) -> Outcome:
  jax, jnp, _, _, methods, _ = _library()
  head = lambda x: x.reshape(x.shape[0], -1)[:, :3]
  return _raises(
    lambda: methods.make_view("mixup")(
      jax.random.PRNGKey(0), jnp.ones((4, 8, 8, 1)), [0, 1, 2, 0], lambda x: (head(x), x), head, {}
    ),
    "teacher_fn must return the logits array",
  )


@attempt("8", "apply_operation on a float image in [0, 1]")
def float_policy_image(lab: Lab) -> Outcome:
  *_, policies = _library()
  return _raises(
    lambda: policies.apply_operation("Invert", np.full((8, 8, 3), 0.5, np.float32), 5),
    "must be uint8 pixel levels",
  )


@attempt("8", "augment_batch with a policy of shape [15, 2]")
def policy_shape(lab: Lab) -> Outcome:
  jax, jnp, *_, policies = _library()
  return _raises(
    lambda: policies.augment_batch(
      jax.random.PRNGKey(0), np.zeros((2, 8, 8, 1), np.uint8), jnp.zeros((15, 2), jnp.int32), fill=0
    ),
    "a policy has shape [30, 2]",
  )


def run_campaign(
  root: str, only: Sequence[str] = (), display_root: str = ""
) -> list[tuple[Attempt, Outcome, float]]:
  if os.path.exists(root):
    shutil.rmtree(root)
  os.makedirs(root)
  lab = Lab(root)
  results = []
  for item in ATTEMPTS:
    if only and str(item.number) not in only:
      continue
    start = time.time()
    try:
      outcome = item.run(lab)
    except Exception as error:
      outcome = Outcome(False, f"the attempt itself failed: {type(error).__name__}: {error}"[:220])
    seconds = time.time() - start
    # The report names the scratch directory as given, not this machine's absolute path.
    outcome.observed = outcome.observed.replace(root, display_root or root).replace(
      REPO_ROOT + os.sep, ""
    )
    verdict = {True: "holds", False: "FAILS", None: "skipped"}[outcome.holds]
    print(f"{item.number:3d} [{verdict}] {item.description}: {outcome.observed}", flush=True)
    results.append((item, outcome, seconds))
  return results


def report(results: Sequence[tuple[Attempt, Outcome, float]]) -> list[str]:
  held = sum(outcome.holds is True for _, outcome, _ in results)
  skipped = sum(outcome.holds is None for _, outcome, _ in results)
  lines = [
    "The run directory under an operator's mistakes, damage, concurrent runs and signals "
    "(issue 25): each attempt run against the command-line scripts on the embedded "
    "digits (and, for finding 8, the library), with what it does now. Finding: the issue's "
    'numbered finding the attempt reproduces, or "held" for what already held then. '
    f"{held} of {len(results)} attempts hold"
    f"{f', {skipped} could not be tried here' if skipped else ''}.",
    "",
    f"Machine: {shared.machine_description()}. Campaign time: "
    f"{sum(s for _, _, s in results):.0f} s.",
    "",
    "| # | finding | attempt | what happens now | holds |",
    "|---|---|---|---|---|",
  ]
  for item, outcome, _ in results:
    observed = outcome.observed.replace("|", "\\|").replace("\n", " ")
    verdict = {True: "yes", False: "**no**", None: "skipped"}[outcome.holds]
    lines.append(
      f"| {item.number} | {item.finding} | {item.description} | {observed} | {verdict} |"
    )
  return lines


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  results = run_campaign(os.path.abspath(_WORKDIR.value), _ONLY.value or (), _WORKDIR.value)
  reporting.finish_report(report(results), "reliability", _OUT.value)
  if any(outcome.holds is False for _, outcome, _ in results):
    raise SystemExit(1)


if __name__ == "__main__":
  launch.run_app(main)
