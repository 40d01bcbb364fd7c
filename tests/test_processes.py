"""Whole runs as separate processes: the command line, SIGKILL/SIGTERM and resume, 8 devices.

Each run is a fresh `python -m kd_jax.experiments...` process, as a user would start it. The
8-device runs set XLA_FLAGS before JAX starts in their own process, so the rest of the
suite keeps its single fast CPU device.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

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


def test_sigterm_saves_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  command = _command("distill", "scratch", workdir, *LONG_RUN)
  returncode, stderr = _start_and_signal(command, workdir, signal.SIGTERM, min_checkpoints=1)
  assert returncode == 143, stderr[-2000:]
  assert "SIGTERM: saved a checkpoint at step" in stderr
  saved = _checkpoint_steps(workdir)[-1]
  assert 0 < saved < 264
  with open(os.path.join(workdir, "checkpoints", str(saved), "meta", "metadata")) as f:
    meta = json.load(f)
  assert meta["step"] == saved and meta["finished"] is False
  assert meta["sampler"] == {"epoch": saved // 22, "batch_in_epoch": saved % 22}
  _run(command)
  resumed, _ = _final_variables(workdir)
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted[0])


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
      "continuation_kd, kd, kd_cutmix, kd_cutmix_pick, kd_mixup.")
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
