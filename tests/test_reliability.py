"""The run directory under operator mistakes, damage and signals, in-process (issue 25;
the command-line versions are in tests/test_processes.py): integrity checksums, set-aside
checkpoints, the teacher's identity, the workdir lock, append-only metrics, a signal in
the last epoch of a PBA search, and the config's numbers."""

import errno
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from kd_jax.train import checkpoint, integrity, loop, metrics, run_lock, setup, sharding
from tests.conftest import tiny_config


def _final_variables(workdir):
  store = checkpoint.RunCheckpoints(workdir, read_only=True)
  arrays = store.read_arrays()
  store.close()
  return arrays


def flip_one_bit(workdir, step, item="model"):
  """Flips one bit in the middle of the largest data file of ``item`` at ``step``: what a
  bad disk or a damaged copy does, invisible to any file-level check."""
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), item, "**", "d", "*"),
                    recursive=True)
  largest = max(files, key=os.path.getsize)
  data = bytearray(open(largest, "rb").read())
  data[len(data) // 2] ^= 0x04
  with open(largest, "wb") as f:
    f.write(bytes(data))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
  """A finished 2-epoch teacher (checkpoints at steps 22 and 44), copied by the tests that
  damage it."""
  workdir = str(tmp_path_factory.mktemp("two_epochs"))
  loop.train_and_evaluate(tiny_config("teacher", num_epochs=2), workdir)
  return workdir


def _copy(source, target):
  shutil.copytree(source, target)
  return str(target)


def test_fingerprints_catch_every_single_bit_and_agree_on_host_and_device():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 33)).astype(np.float32)
  base = integrity.host_fingerprint(x)
  words = x.view(np.uint32)
  for position in (0, 77, 131):
    for bit in range(32):
      flipped = words.copy()
      flipped.reshape(-1)[position] ^= np.uint32(1 << bit)
      assert (integrity.host_fingerprint(flipped.view(np.float32)) != base).any()
  # Hand-computed: words 1, 2, 3 give h1 = 1·1 + 2·3 + 3·5 = 22.
  assert integrity.host_fingerprint(np.array([1, 2, 3], np.uint32))[0] == 22
  for array in (x, np.arange(7, dtype=np.int32), np.array([True, False]), np.float32(2.5),
                jax.numpy.asarray(x, jax.numpy.bfloat16), np.zeros((0, 3), np.float32),
                rng.integers(0, 255, (2, 3, 1)).astype(np.uint8)):
    np.testing.assert_array_equal(integrity.host_fingerprint(array),
                                  np.asarray(integrity._device_fingerprint(array)))
  # The same arrays in another tree layout (a path) or with one value changed differ.
  tree = {"a": x, "b": {"c": np.ones(3, np.float32)}}
  assert integrity.fingerprints(tree) == integrity.fingerprints(
      {"a": x.copy(), "b": {"c": np.ones(3, np.float32)}})
  assert integrity.mismatched(integrity.fingerprints(tree), integrity.fingerprints(
      {"a": x, "b": {"c": np.array([1, 1, 2], np.float32)}})) == ["b/c"]


def test_a_flipped_bit_is_set_aside_loudly_and_the_run_resumes_to_the_same_result(
    two_epochs, tmp_path, caplog):
  expected = _final_variables(two_epochs)
  workdir = _copy(two_epochs, tmp_path / "run")
  flip_one_bit(workdir, 44)
  with pytest.raises(checkpoint.CheckpointError, match=r"step 44 .* integrity check: the "
                     r"checksums of model/params/.* do not match"):
    checkpoint.RunCheckpoints(workdir, read_only=True).read_arrays()
  with caplog.at_level(logging.WARNING, logger="kd_jax"):
    summary = loop.train_and_evaluate(tiny_config("teacher", num_epochs=2), workdir)
  assert ("the checkpoint of step 44 in" in caplog.text and "checksums of model/params/"
          in caplog.text and "moved it to corrupt_44" in caplog.text)
  with open(os.path.join(workdir, "checkpoints", "corrupt_44", "SET_ASIDE.json")) as f:
    assert "do not match" in json.load(f)["reason"]
  assert summary["steps"] == 44  # redid epoch 2 from step 22: the same parameters
  jax.tree.map(np.testing.assert_array_equal, _final_variables(workdir), expected)
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="kd_jax"):  # every later run says so
    loop.train_and_evaluate(tiny_config("teacher", num_epochs=2), workdir)
  assert "holds 1 checkpoint(s) set aside as damaged" in caplog.text
  assert "corrupt_44 (the checksums of model/params/" in caplog.text
  # With every intact checkpoint gone, a rerun refuses to start over silently.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "44"))
  shutil.rmtree(os.path.join(workdir, "checkpoints", "22"))
  with pytest.raises(checkpoint.CheckpointError, match="holds only checkpoints set aside"):
    loop.train_and_evaluate(tiny_config("teacher", num_epochs=2), workdir)


def test_a_changed_model_or_state_is_refused_before_restoring_and_touches_nothing(
    two_epochs, tmp_path):
  workdir = _copy(two_epochs, tmp_path / "run")
  before = {path: open(path, "rb").read() for path in glob.glob(
      os.path.join(workdir, "**", "*"), recursive=True) if os.path.isfile(path)}
  with pytest.raises(loop.ConfigChangedError, match=r"model: 'mlp_small' -> 'cnn_tiny'"):
    loop.train_and_evaluate(tiny_config("teacher", num_epochs=2, model="cnn_tiny"), workdir)
  allowed = tiny_config("teacher", num_epochs=2, model="cnn_tiny", allow_config_change=True)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"holds another model or training state than this run builds "
                           r"\(batch_stats/bn0/mean is in this run but not in the "
                           r"checkpoint; .*; and \d+ more\); nothing was changed"):
    loop.train_and_evaluate(allowed, workdir)
  after = {path: open(path, "rb").read() for path in glob.glob(
      os.path.join(workdir, "**", "*"), recursive=True) if os.path.isfile(path)}
  assert after == before  # not a byte moved, written or removed (the lock came and went)


def test_teacher_is_verified_and_identified_by_its_parameters(two_epochs, tmp_path, caplog):
  student = str(tmp_path / "student")
  config = tiny_config("kd", num_epochs=1, teacher_workdir=two_epochs)
  loop.train_and_evaluate(config, student)
  # The same teacher at another path: resumes (the longer run only warns about num_epochs).
  moved = _copy(two_epochs, tmp_path / "moved")
  loop.train_and_evaluate(tiny_config("kd", num_epochs=2, teacher_workdir=moved), student)
  # A flipped bit in the teacher's newest checkpoint: detected, the previous step is used,
  # and that is another teacher for the student that was trained with step 44.
  damaged = _copy(two_epochs, tmp_path / "damaged")
  flip_one_bit(damaged, 44)
  with caplog.at_level(logging.WARNING, logger="kd_jax"):
    _, _, meta = setup.load_teacher(damaged, "digits", sharding.make_data_mesh(),
                                    num_classes=10, image_shape=(8, 8, 1))
  assert meta["step"] == 22 and "using the checkpoint of step 22" in caplog.text
  assert "checksums of model/params/" in caplog.text
  assert not os.path.exists(os.path.join(damaged, "checkpoints", "corrupt_44"))  # read-only
  with pytest.raises(loop.ConfigChangedError, match=r"was trained with another teacher "
                     r"\(teacher: checksum [0-9a-f]{16} -> [0-9a-f]{16}\)"):
    loop.train_and_evaluate(tiny_config("kd", num_epochs=3, teacher_workdir=damaged), student)


def test_the_workdir_lock_names_its_holder_and_takes_over_a_dead_one(tmp_path, caplog,
                                                                    monkeypatch):
  workdir = str(tmp_path / "run")
  with run_lock.hold(workdir):
    with run_lock.hold(workdir):  # re-entrant within a process (loop inside a run)
      pass
    with open(os.path.join(workdir, run_lock.LOCK_NAME)) as f:
      holder = json.load(f)
    assert holder["pid"] == os.getpid()
    with pytest.raises(run_lock.WorkdirLockedError,  # another open file: another holder
                       match=rf"is in use by another kd_jax run \(pid {os.getpid()} on "):
      run_lock._acquire(workdir)
  assert not os.path.exists(workdir)  # made by the lock, still empty: removed again
  os.makedirs(workdir)
  lock_file = os.path.join(workdir, run_lock.LOCK_NAME)
  with open(lock_file, "w") as f:  # left by a kill -9
    json.dump({"pid": 999999, "host": "gone", "started": "then", "command": "x"}, f)
  with caplog.at_level(logging.INFO, logger="kd_jax"):
    with run_lock.hold(workdir):
      pass
  assert ("taking over the lock left by a run that ended without releasing it (pid 999999 "
          "on gone") in caplog.text
  assert os.listdir(workdir) == []  # released: the file goes, the directory stays
  # A filesystem without flock: the holder's pid decides, when it ran on this host.
  def no_flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
  alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    with open(lock_file, "w") as f:
      json.dump({"pid": alive.pid, "host": socket.gethostname(), "started": "now",
                 "command": "python -m kd_jax.experiments.distill"}, f)
    with pytest.raises(run_lock.WorkdirLockedError, match=rf"\(pid {alive.pid} on "):
      run_lock._acquire(workdir)
  finally:
    alive.kill()
    alive.wait()
  with run_lock.hold(workdir):  # its process is gone: taken over
    pass


def test_metrics_are_appended_never_rewritten_and_a_torn_line_is_repaired(two_epochs,
                                                                          tmp_path, caplog):
  workdir = _copy(two_epochs, tmp_path / "run")
  shutil.rmtree(os.path.join(workdir, "checkpoints", "44"))  # as if killed after epoch 1...
  with open(os.path.join(workdir, "metrics.jsonl"), "ab") as f:
    f.write(b'{"step": 50, "split": "tr')  # ...mid-write, with a torn row
  before = open(os.path.join(workdir, "metrics.jsonl"), "rb").read()
  intact = before[:before.rindex(b"\n") + 1]
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(tiny_config("teacher", num_epochs=2), workdir)
  assert f"{workdir}/metrics.jsonl: its last line was cut off (25 bytes" in caplog.text
  after = open(os.path.join(workdir, "metrics.jsonl"), "rb").read()
  assert after.startswith(intact)  # appended to, never rewritten
  assert json.loads(after[len(intact):].splitlines()[0]) == {"step": 22, "split": "resumed"}
  # The reader drops the interrupted run's rows past step 22: the uninterrupted run's rows.
  assert metrics.read_rows(workdir) == metrics.read_rows(two_epochs)


def test_a_signal_in_the_last_epoch_of_a_pba_search_stops_it_and_a_rerun_reports(
    tmp_path, monkeypatch):
  from kd_jax import pba
  from tests.test_pba import _search
  accuracy = pba._PopulationRun.accuracy
  calls = []

  def signalled_at_the_last_evaluation(self, *args):
    calls.append(1)
    if len(calls) == 2:  # epochs 2 and 4 are evaluated; 4 is the last
      os.kill(os.getpid(), signal.SIGTERM)
    return accuracy(self, *args)

  monkeypatch.setattr(pba._PopulationRun, "accuracy", signalled_at_the_last_evaluation)
  workdir = str(tmp_path / "search")
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(loop.PreemptedError, match=r"SIGTERM: saved the final checkpoint at "
                                                r"step 8 .*rerun the same command to report"):
    _search(workdir)
  assert signal.getsignal(signal.SIGTERM) is handler  # the loop's handler is gone again
  monkeypatch.setattr(pba._PopulationRun, "accuracy", accuracy)
  assert _search(workdir).to_json() == _search().to_json()  # finished: read back as it was


@pytest.mark.parametrize("overrides, message", [
    ({"mixup.alpha": float("nan"), "method": "kd_mixup"}, r"config\.mixup\.alpha is nan"),
    ({"cutmix.alpha": float("nan"), "method": "kd_cutmix"}, r"config\.cutmix\.alpha is nan"),
    ({"num_epochs": 0}, r"config\.num_epochs must be ≥ 1; got 0"),
    ({"num_epochs": -3}, r"config\.num_epochs must be ≥ 1; got -3"),
    ({"max_checkpoints_to_keep": 0}, r"config\.max_checkpoints_to_keep must be ≥ 1; got 0"),
    ({"method": "continuation_kd", "continuation.psi_ramp_epochs": 0},
     r"config\.continuation\.psi_ramp_epochs must be a number > 0; got 0"),
    ({"kd.temperature": -1.0}, r"config\.kd\.temperature must be a number > 0; got -1\.0"),
    ({"optimizer.learning_rate": float("inf")}, r"config\.optimizer\.learning_rate is inf"),
])
def test_numbers_of_the_config_are_checked_before_anything_is_made(tmp_path, monkeypatch,
                                                                   overrides, message):
  monkeypatch.setattr(setup, "build_run", lambda *a: pytest.fail("data loaded"))
  config = tiny_config("kd", teacher_workdir=str(tmp_path), **overrides)
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
  with pytest.raises(ValueError, match="workdir is empty"):
    loop.train_and_evaluate(tiny_config(), "")
  with pytest.raises(ValueError, match="max_checkpoints_to_keep must be an integer ≥ 1"):
    checkpoint.RunCheckpoints(str(tmp_path / "other"), max_to_keep=0)


@pytest.mark.parametrize("error, message", [
    (ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8 GiB"),
     r"could not read its arrays of step 44 .*RESOURCE_EXHAUSTED.*this says nothing about "
     r"the checkpoint itself, so it was left in place"),
    (RuntimeError("an unexpected failure of the restore"),
     r"the checkpoint of step 44 in .* is intact but could not be restored into this run: "
     r"RuntimeError: an unexpected failure"),
])
def test_a_restore_that_fails_for_another_reason_sets_nothing_aside(two_epochs, tmp_path,
                                                                    monkeypatch, error,
                                                                    message):
  """Out of memory, a permission, a flaky filesystem, or any failure of an intact
  checkpoint (read back on the host with its own shapes and verified): an error, and the
  checkpoint stays where it is (the review of issue 25: such errors used to count as
  damage)."""
  import orbax.checkpoint as ocp
  workdir = _copy(two_epochs, tmp_path / "run")
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  original = ocp.CheckpointManager.restore
  calls = []

  def failing_once(self, step, *args, **kwargs):
    composite = kwargs.get("args", args[0] if args else None)
    if composite is not None and "train" in composite and not calls:
      calls.append(step)  # the restore into the run's template; the host read succeeds
      raise error
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", failing_once)
  with pytest.raises(checkpoint.CheckpointError, match=message):
    loop.train_and_evaluate(tiny_config("teacher", num_epochs=2), workdir)
  assert calls == [44]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
