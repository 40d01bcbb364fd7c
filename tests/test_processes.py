"""Whole runs as separate processes: the command line, SIGKILL/SIGTERM and resume, 8 devices.

Each run is a fresh `python -m kd_jax.experiments...` process, as a user would start it. The
8-device runs set XLA_FLAGS before JAX starts in their own process, so the rest of the
suite keeps its single fast CPU device.
"""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from kd_jax.train import metrics
from tests.conftest import ROOT
from tests.test_loop import _final_variables

DIGITS_CONFIG = os.path.join(ROOT, "kd_jax", "experiments", "configs", "digits.py")


def _command(entry, role, workdir, *overrides):
  return [sys.executable, "-m", f"kd_jax.experiments.{entry}", f"--config={DIGITS_CONFIG}:{role}",
          f"--workdir={workdir}", "--config.progress_bar=False", *overrides]


def _env(devices=1):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _run(command, devices=1):
  result = subprocess.run(command, cwd=ROOT, env=_env(devices), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _checkpoint_steps(workdir, name="checkpoints"):
  folder = os.path.join(workdir, name)
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def _start_and_signal(command, workdir, sig, min_checkpoints, checkpoints=None,
                      beyond_step=None):
  """Starts ``command``, sends ``sig`` once ``min_checkpoints`` checkpoints exist in
  ``checkpoints`` (default ``<workdir>/checkpoints``), or, with ``beyond_step``, once a
  checkpoint newer than that step exists (older ones are deleted as new ones land, so a
  resumed run's count may never grow); returns (exit code, stderr)."""
  checkpoints = checkpoints or os.path.join(workdir, "checkpoints")
  process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300

  def waiting():
    steps = _checkpoint_steps(os.path.dirname(checkpoints), os.path.basename(checkpoints))
    if beyond_step is not None:
      return not steps or steps[-1] <= beyond_step
    return len(steps) < min_checkpoints

  while waiting():
    assert process.poll() is None, ("the run ended before it could be interrupted: "
                                     + process.communicate()[1][-2000:])
    assert time.time() < deadline
    time.sleep(0.02)
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=300)
  return process.returncode, stderr


def _run_two_processes(command_for_rank):
  """``command_for_rank(rank, port)`` for ranks 0 and 1 at once (jax.distributed over a local
  port); both must succeed. Returns process 1's stderr."""
  port = _free_port()
  processes = [subprocess.Popen(command_for_rank(rank, port), cwd=ROOT, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for rank in range(2)]
  for process in processes:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
  assert "process 1 of 2" in stderr
  return stderr


def multihost_flags(rank, port):
  return ("--config.multihost=True", f"--config.coordinator_address=127.0.0.1:{port}",
          "--config.num_processes=2", f"--config.process_id={rank}")


LONG_RUN = ("--config.num_epochs=12", "--config.checkpoint_every_steps=20")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  result = _run(_command("distill", "scratch", workdir, *LONG_RUN))
  assert "last_top1" in result.stdout  # the summary table
  return _final_variables(workdir)


def test_sigkill_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  command = _command("distill", "scratch", workdir, *LONG_RUN)
  returncode, _ = _start_and_signal(command, workdir, signal.SIGKILL, min_checkpoints=2)
  assert returncode == -signal.SIGKILL
  assert _checkpoint_steps(workdir)[-1] < 264  # killed part way
  _run(command)  # the same command resumes
  resumed, step = _final_variables(workdir)
  expected, expected_step = uninterrupted
  assert step == expected_step == 264
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)


def test_ctrl_c_saves_then_resume_equals_uninterrupted_and_one_run_per_workdir(
    uninterrupted, tmp_path):
  """SIGINT (Ctrl-C) behaves as SIGTERM does (the multi-host and population tests send
  SIGTERM): the loop saves and exits with 130 instead of dying mid-save. While another
  process holds the workdir (here this test, through the same lock), the command stops at
  once, naming the holder, and writes nothing (issue 25, findings 4 and 6: a second run
  used to crash, hang 300 s and duplicate metric rows)."""
  from kd_jax.train import run_lock
  workdir = str(tmp_path)
  command = _command("distill", "scratch", workdir, *LONG_RUN)
  returncode, stderr = _start_and_signal(command, workdir, signal.SIGINT, min_checkpoints=1)
  assert returncode == 130, stderr[-2000:]
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
  assert "SIGINT: saved a checkpoint at step" in stderr.strip().splitlines()[-1]
  saved = _checkpoint_steps(workdir)[-1]
  assert 0 < saved < 264
  with open(os.path.join(workdir, "checkpoints", str(saved), "meta", "metadata")) as f:
    meta = json.load(f)
  assert meta["step"] == saved and meta["finished"] is False
  assert meta["sampler"] == {"epoch": saved // 22, "batch_in_epoch": saved % 22}
  assert not os.path.exists(os.path.join(workdir, "kd_jax.lock"))  # released on the way out
  before = _files(workdir)
  with run_lock.hold(workdir):
    _refused(command, returncode=1, pattern=(
        rf"^error: {re.escape(workdir)} is in use by another kd_jax run \(pid {os.getpid()} "
        r"on [^,]+, since .*\); two runs in one directory would overwrite each other's "
        r"checkpoints\. Wait for it to end, stop it, or use another --workdir\.$"))
  assert _files(workdir) == before
  _run(command)
  resumed, _ = _final_variables(workdir)
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted[0])
  steps = [(row["step"], row["split"]) for row in metrics.read_rows(workdir)]
  assert len(steps) == len(set(steps)) and steps[-1] == (264, "test")


def _files(workdir):
  """Every file under ``workdir`` with its bytes, but the lock file (a run killed with -9
  leaves it, and the next process to hold the directory removes it on the way out)."""
  found = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      if name == "kd_jax.lock":
        continue
      with open(os.path.join(folder, name), "rb") as f:
        found[os.path.relpath(os.path.join(folder, name), workdir)] = f.read()
  return found


def _refused(command, pattern, returncode=2):
  """Runs ``command``, which must fail with ``returncode`` and a last stderr line matching
  ``pattern``, without a traceback; returns that line."""
  result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
  line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
  assert result.returncode == returncode and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert re.search(pattern, line), line
  return result


TEACHER_OVERRIDES = ("--config.num_epochs=2", "--config.model=mlp_small")


@pytest.fixture(scope="module")
def mlp_teacher(tmp_path_factory):
  """A finished 2-epoch teacher (digits' config checkpoints every 110 steps, so its one
  checkpoint is the final step 44), trained from the command line; tests copy it before
  changing anything."""
  teacher = str(tmp_path_factory.mktemp("mlp_teacher") / "teacher")
  _run(_command("train_teacher", "teacher", teacher, *TEACHER_OVERRIDES))
  return teacher


def test_mistaken_reruns_are_refused_and_lose_nothing(mlp_teacher, tmp_path):
  """Issue 25, findings 1 and 2. A finished teacher rerun by mistake with another model, or
  with a config change allowed, and a half-done student rerun with a method that keeps
  extra state, used to be restored before being compared: the restore failed on the shapes,
  every valid checkpoint was moved to corrupt_<step>, and the next correct rerun started
  again from step 0. max_checkpoints_to_keep=0 deleted every checkpoint. Now each is refused
  before anything is restored, with the key or the arrays named, and not a byte changes."""
  teacher = str(shutil.copytree(mlp_teacher, tmp_path / "teacher"))
  teacher_command = _command("train_teacher", "teacher", teacher, *TEACHER_OVERRIDES)
  before = _files(teacher)
  _refused([*teacher_command, "--config.model=cnn_tiny"],
           r"^error: .*/teacher holds a run with another config; resuming it would change its "
           r"result: model: 'mlp_small' -> 'cnn_tiny'\.")
  _refused([*teacher_command, "--config.model=cnn_tiny", "--config.allow_config_change=True"],
           r"^error: the checkpoint of step 44 in .* holds another model or training state "
           r"than this run builds \(.*\); nothing was changed\.")
  _refused([*teacher_command, "--config.max_checkpoints_to_keep=0"],
           r"^error: config\.max_checkpoints_to_keep must be ≥ 1; got 0\.$")
  assert _files(teacher) == before
  student = str(tmp_path / "student")
  student_command = _command("distill", "kd", student, f"--config.teacher_workdir={teacher}",
                             "--config.model=cnn_tiny")
  _run([*student_command, "--config.num_epochs=1"])  # half of a 2-epoch run
  before = _files(student)
  _refused([*student_command, "--config.num_epochs=2", "--config.method=backward_kd",
            "--config.backward.pool_every_epochs=1", "--config.allow_config_change=True"],
           r"^error: the checkpoint of step 22 .* \(.*aux_pool is in this run but not in the "
           r"checkpoint.*\); nothing was changed\.")
  assert _files(student) == before
  result = _run([*student_command, "--config.num_epochs=2"])  # the correct command resumes
  assert "resumed" in result.stderr and "from step 22" in result.stderr
  assert [row["epoch"] for row in metrics.read_rows(student) if row["split"] == "test"] == [1, 2]
  assert open(os.path.join(student, "metrics.jsonl"), "rb").read().startswith(
      before["metrics.jsonl"])  # the first epoch's rows were appended to, not rewritten


def _in_private_mount(mount_options, folder, command):
  """``command`` in a mount namespace of its own with a fresh tmpfs (``mount_options``)
  on ``folder``, so a full or read-only disk is real and vanishes with the process."""
  if shutil.which("unshare") is None:
    pytest.skip("no unshare(1) to make a private tmpfs")
  probe = subprocess.run(["unshare", "-m", "--map-root-user", "true"], capture_output=True)
  prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-m", "--map-root-user"]
  if os.geteuid() != 0 and probe.returncode:
    pytest.skip("cannot make a mount namespace here (no root, no user namespaces)")
  script = f"mount -t tmpfs -o {mount_options} tmpfs {shlex.quote(folder)} && exec " + \
      " ".join(map(shlex.quote, command))
  return [*prefix, "sh", "-c", script]


def test_errors_a_user_or_the_machine_causes_are_one_line(mlp_teacher, tmp_path):
  """Issue 25, finding 7: a diverging loss, a damaged teacher, a run whose checkpoints are
  all damaged, a full disk, a read-only disk and absl flag mistakes each end with one
  ``error:`` line (no traceback, no TensorStore dump); ``--verbose`` keeps the traceback."""
  def one_line(result, pattern, returncode=1, max_lines=8):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == returncode, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and re.search(pattern, lines[-1]), lines[-1]
    assert len(lines) <= max_lines, result.stderr[-3000:]  # log lines, warnings, the error

  def run(command):
    return subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)

  one_line(run(_command("train_teacher", "teacher", str(tmp_path / "diverges"),
                        *TEACHER_OVERRIDES, "--config.optimizer.learning_rate=1e30")),
           r"^error: the training loss became (nan|inf) at step \d+ \(epoch 1\); no "
           r"checkpoint had been written yet\. Lower the learning rate")
  damaged = str(shutil.copytree(mlp_teacher, tmp_path / "damaged"))
  for folder, _, names in os.walk(os.path.join(damaged, "checkpoints")):
    for name in names:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(b"garbage")
  one_line(run(_command("distill", "kd", str(tmp_path / "student"),
                        f"--config.teacher_workdir={damaged}")),
           rf"^error: no intact checkpoint metadata in {re.escape(damaged)}/checkpoints "
           r"\(step 44: its metadata cannot be read .*\)")
  assert not os.path.exists(tmp_path / "student")
  # The run's own checkpoints with only their array files damaged: TensorStore fails to
  # decode them (and its late callbacks used to print tracebacks of a closed event loop).
  arrays_damaged = str(shutil.copytree(mlp_teacher, tmp_path / "arrays_damaged"))
  for path in glob.glob(os.path.join(arrays_damaged, "checkpoints", "*", "*", "**", "d", "*"),
                        recursive=True):
    with open(path, "wb") as f:
      f.write(b"garbage")
  one_line(run(_command("train_teacher", "teacher", arrays_damaged, *TEACHER_OVERRIDES)),
           r"^error: no intact checkpoint in .*: every step failed its integrity check and "
           r"was set aside as corrupt_<step>")
  assert os.listdir(os.path.join(arrays_damaged, "checkpoints")) == ["corrupt_44"]
  disk = str(tmp_path / "disk")
  os.makedirs(disk)
  one_line(run(_in_private_mount("size=1m", disk, _command(
      "train_teacher", "teacher", f"{disk}/run", "--config.num_epochs=1"))),
           r"^error: no room for the checkpoint of step 22 in .*: it needs about [\d.]+ MiB, "
           r"[\d.]+ MiB are free; no checkpoint has been written yet\. Free some space")
  one_line(run(_in_private_mount("ro", disk, _command(
      "train_teacher", "teacher", f"{disk}/run", *TEACHER_OVERRIDES))),
           rf"^error: cannot create the run directory {re.escape(disk)}/run \(Read-only file "
           r"system\); choose a writable --workdir\.$")
  flag_errors = {("--confg.seed=3",): r"^error: Unknown command line flag 'confg\.seed'",
                 ("--config.num_epochs=two",): r"^error: flag --config\.num_epochs=two: "
                                               r"invalid literal for int\(\)",
                 ("--workdir=",): r"^error: --workdir is empty: name the run directory",
                 ("--config.kd.temprature=3",): r"^error: --config\.kd\.temprature: the config "
                                                r"has no key 'temprature'; did you mean "
                                                r"'temperature'\?"}
  for extra, pattern in flag_errors.items():
    one_line(run(_command("distill", "kd", str(tmp_path / "flags"), *extra)), pattern,
             returncode=2)
  assert not os.path.exists(tmp_path / "flags")
  verbose = run(_command("train_teacher", "teacher", arrays_damaged, *TEACHER_OVERRIDES,
                         "--verbose"))
  assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_one_device_and_eight_devices_give_the_same_parameters(tmp_path):
  runs = {}
  for devices in (1, 8):
    teacher = str(tmp_path / f"teacher{devices}")
    result = _run(_command("train_teacher", "teacher", teacher, "--config.num_epochs=2",
                           "--config.model=cnn_tiny"), devices)
    assert f"id={devices - 1}" in result.stderr and f"id={devices}" not in result.stderr
    # Both KD runs read the teacher trained on one device: checkpoints restore across meshes.
    # CutMix-pick with KL scores: the KD objective on x plus a view made with random draws,
    # teacher and student passes, and a top-k over the pool, all on sharded arrays.
    student = str(tmp_path / f"kd{devices}")
    _run(_command("distill", "kd", student, "--config.num_epochs=2",
                  "--config.method=kd_cutmix_pick", "--config.cutmix_pick.score=kl",
                  f"--config.teacher_workdir={tmp_path / 'teacher1'}"), devices)
    # Continuation-KD (phi, psi per epoch) with backward-pass samples (input gradients
    # through both networks) as the extra view.
    continued = str(tmp_path / f"continuation{devices}")
    _run(_command("distill", "kd", continued, "--config.num_epochs=2",
                  "--config.method=continuation_kd", "--config.view.name=backward",
                  f"--config.teacher_workdir={tmp_path / 'teacher1'}"), devices)
    runs[devices] = (_final_variables(teacher)[0], _final_variables(student)[0],
                     _final_variables(continued)[0])
  for one, eight in zip(runs[1], runs[8]):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), one, eight)


def test_cli_errors_are_one_line_and_help_lists_methods_and_configs(tmp_path):
  def run(*extra):
    return subprocess.run(_command("distill", "scratch", str(tmp_path / "run"), *extra),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  result = run("--config.method=kd_x")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: unknown method 'kd_x'; valid names: annealing_kd, backward_kd, ce, "
      "continuation_kd, dkd, kd, kd_cutmix, kd_cutmix_pick, kd_mixup, mlkd.")
  assert not (tmp_path / "run").exists()  # checked before anything was made
  verbose = run("--config.method=kd_x", "--verbose")
  assert verbose.returncode == 1 and "Traceback" in verbose.stderr
  result = run("--config.kd.temp=3")  # a nested-key typo
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --config.kd.temp: the config has no key 'temp' (--help lists the common keys; "
      "kd_jax/experiments/configs/common.py documents them all).")
  help_text = run("--help").stdout
  assert "Methods (--config.method): ce, kd, kd_mixup" in help_text
  assert "kd_jax/experiments/configs/rotten_tomatoes.py" in help_text
  assert "--config.teacher_workdir=''" in help_text


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_host_processes_match_one_process(tmp_path):
  """The multi-host path: jax.distributed on two local processes, each loading its half."""
  overrides = ("--config.num_epochs=2", "--config.model=cnn_tiny")
  single = str(tmp_path / "single")
  _run(_command("train_teacher", "teacher", single, *overrides))
  multi = str(tmp_path / "multi")
  _run_two_processes(lambda rank, port: _command("train_teacher", "teacher", multi, *overrides,
                                                 *multihost_flags(rank, port)))
  expected, step = _final_variables(single)
  actual, multi_step = _final_variables(multi)
  assert step == multi_step == 44
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), actual,
               expected)


def test_sigterm_to_one_host_process_stops_both_at_the_same_step(tmp_path):
  """A preemption notice reaching one process of a multi-host job: both processes save the
  same step (agreed every log_every_steps steps) and exit 143; rerunning both resumes to
  the uninterrupted two-process result, bit for bit."""
  workdir, straight = str(tmp_path / "resumed"), str(tmp_path / "straight")

  def command(rank, port, workdir=workdir):
    return _command("distill", "scratch", workdir, *LONG_RUN, "--config.log_every_steps=5",
                    *multihost_flags(rank, port))

  port = _free_port()
  processes = [subprocess.Popen(command(rank, port), cwd=ROOT, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for rank in range(2)]
  deadline = time.time() + 300
  while not _checkpoint_steps(workdir):
    assert all(p.poll() is None for p in processes) and time.time() < deadline
    time.sleep(0.02)
  processes[1].send_signal(signal.SIGTERM)
  saved = []
  for process in processes:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    line = next(l for l in stderr.splitlines() if "SIGTERM: saved a checkpoint at step" in l)
    saved.append(int(line.split("at step ")[1].split()[0]))
  assert saved[0] == saved[1] and saved[0] % 5 == 0 and saved[0] < 264
  assert _checkpoint_steps(workdir)[-1] == saved[0]
  _run_two_processes(command)
  _run_two_processes(lambda rank, port: command(rank, port, straight))
  actual, step = _final_variables(workdir)
  expected, expected_step = _final_variables(straight)
  assert step == expected_step == 264
  jax.tree.map(np.testing.assert_array_equal, actual, expected)
