"""The training loop end to end on the embedded digits: outputs, resume, corruption, NaN."""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from kd_jax import methods
from kd_jax.train import checkpoint, loop, metrics
from tests.conftest import tiny_config


def _final_variables(workdir):
  """The newest checkpoint's model variables and step, read back without a template."""
  checkpoints = checkpoint.RunCheckpoints(workdir, read_only=True)
  step = checkpoints.all_steps()[-1]
  arrays = checkpoints.read_arrays(step)
  checkpoints.close()
  return arrays, step


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("teacher"))
  summary = loop.train_and_evaluate(tiny_config("teacher", num_epochs=3), workdir)
  return workdir, summary


def test_teacher_run_writes_summary_logs_and_plot(teacher_run):
  workdir, summary = teacher_run
  assert summary["epochs"] == 3 and summary["steps"] == 66
  assert summary["train_step_compilations"] == 1  # across epochs, evals and checkpoints
  assert summary["best_top1"] >= summary["last_top1"] > 50.0  # learns the digits
  for name in ("summary.json", "summary.md", "curves.png", "metrics.jsonl"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  rows = metrics.read_rows(workdir)
  assert [r["epoch"] for r in rows if r["split"] == "test"] == [1, 2, 3]
  assert {"epoch", "loss", "top1", "lr"} <= set(next(r for r in rows if r["split"] == "train"))


@pytest.mark.parametrize("method", ["kd", "kd_cutmix_pick", "backward_kd", "continuation_kd",
                                    "dkd", "mlkd+standardize"])
def test_kd_run_reports_agreement_and_kl(teacher_run, tmp_path, method):
  teacher_dir, teacher_summary = teacher_run
  method, _, standardize = method.partition("+")
  config = tiny_config("kd", teacher_workdir=teacher_dir, num_epochs=1, method=method,
                       **{"kd.standardize": bool(standardize)})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["train_step_compilations"] == 1
  assert summary["last_teacher_top1"] == pytest.approx(teacher_summary["last_top1"])
  # Recompute the reported numbers from the two checkpoints with plain NumPy: agreement of
  # the top-1 predictions and KL(p_T ‖ p_S) at τ = 1 (teacher to student) over the test set.
  from kd_jax import models
  from kd_jax.data import load_dataset
  test = load_dataset("digits", "test")
  x = ((test.images / 255.0 - np.asarray(test.mean)) / np.asarray(test.std)).astype(np.float32)

  def logits(workdir, model_name):
    variables = _final_variables(workdir)[0]["model"]
    return np.asarray(models.create_model(model_name, 10).apply(variables, x, train=False),
                      np.float64)

  def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  student = logits(str(tmp_path), config.model)
  teacher = logits(teacher_dir, tiny_config("teacher").model)
  log_s, log_t = log_softmax(student), log_softmax(teacher)
  agreement = 100 * np.mean(student.argmax(-1) == teacher.argmax(-1))
  kl = np.mean(np.sum(np.exp(log_t) * (log_t - log_s), -1))
  reverse = np.mean(np.sum(np.exp(log_s) * (log_s - log_t), -1))
  assert abs(kl - reverse) > 1e-3
  assert summary["last_agreement"] == pytest.approx(agreement, abs=1e-9)
  assert summary["last_kl_teacher_student"] == pytest.approx(kl, rel=1e-4)
  assert summary["last_top1"] == pytest.approx(100 * np.mean(student.argmax(-1) == test.labels))


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.train_and_evaluate(tiny_config(num_epochs=2), straight)
  loop.train_and_evaluate(tiny_config(num_epochs=1), resumed)
  summary = loop.train_and_evaluate(tiny_config(num_epochs=2), resumed)  # resumes at step 22
  assert summary["epochs"] == 2
  a, _ = _final_variables(straight)
  b, _ = _final_variables(resumed)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  rows = metrics.read_rows(resumed)
  assert [r["epoch"] for r in rows if r["split"] == "test"] == [1, 2]
  straight_rows = metrics.read_rows(straight)
  assert rows == straight_rows  # the same logs, too


def test_continuation_schedule_changes_per_epoch_without_recompiling(teacher_run, tmp_path):
  config = tiny_config("kd", teacher_workdir=teacher_run[0], num_epochs=3,
                       method="annealing_kd", **{"continuation.t_max": 3})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["train_step_compilations"] == 1
  rows = metrics.read_rows(str(tmp_path))
  train = [r for r in rows if r["split"] == "train"]
  # T_max 3 over 3 epochs: T = 2, 1, 1 -> phi = 2/3, 1, 1; Annealing-KD's psi switches to
  # labels after the epoch where T reaches 1 (epoch 2).
  assert [r["continuation_temperature"] for r in train] == [2.0, 1.0, 1.0]
  assert [r["phi"] for r in train] == pytest.approx([2 / 3, 1.0, 1.0])
  assert [r["psi"] for r in train] == [0.0, 0.0, 1.0]


def test_epoch_factor_stretches_epochs_and_milestones(tmp_path):
  config = tiny_config(num_epochs=1, epoch_factor=2, **{"optimizer.lr_milestones": (1,)})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["epochs"] == 2 and summary["steps"] == 44
  rows = metrics.read_rows(str(tmp_path))
  lrs = [r["lr"] for r in rows if r["split"] == "train"]
  assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.05)  # milestone at 2


def test_pooled_backward_kd_resumes_exactly(teacher_run, tmp_path):
  """The pool of generated samples (refreshed every 2 epochs) is restored with the state:
  resuming at epoch 2, inside a pool period, continues with the pool of epoch 1."""
  overrides = {"method": "backward_kd", "teacher_workdir": teacher_run[0],
               "backward.pool_every_epochs": 2}
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  summary = loop.train_and_evaluate(tiny_config("kd", num_epochs=3, **overrides), straight)
  assert summary["train_step_compilations"] == 1
  loop.train_and_evaluate(tiny_config("kd", num_epochs=1, **overrides), resumed)
  loop.train_and_evaluate(tiny_config("kd", num_epochs=3, **overrides), resumed)
  a, _ = _final_variables(straight)
  b, _ = _final_variables(resumed)
  assert a["train"]["aux_pool"].shape == (1438, 8, 8, 1)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  workdir = str(tmp_path)
  loop.train_and_evaluate(tiny_config(num_epochs=2), workdir)
  latest = os.path.join(workdir, "checkpoints", "44")
  for folder, _, files in os.walk(os.path.join(latest, "model")):
    for name in files:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(b"not a checkpoint")
  with caplog.at_level(logging.WARNING, logger="kd_jax"):
    summary = loop.train_and_evaluate(tiny_config(num_epochs=2), workdir)
  assert "cannot be read" in caplog.text and "step 44" in caplog.text
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "corrupt_44"))
  assert summary["steps"] == 44  # redid epoch 2 from the step-22 checkpoint
  assert checkpoint.RunCheckpoints(workdir, read_only=True).all_steps()[-1] == 44


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  # From epoch 2 on the learning rate is 5e28: the parameters overflow within a step or two.
  config = tiny_config(num_epochs=3, **{"optimizer.lr_milestones": (1,),
                                        "optimizer.lr_decay": 1e30})
  with pytest.raises(FloatingPointError, match=r"became (nan|inf|-inf) at step (2[3-9]|3\d|4[0-4])"
                     r" \(epoch 2\); the last good checkpoint \(step 22\) is kept"):
    loop.train_and_evaluate(config, workdir)
  variables, step = _final_variables(workdir)
  assert step == 22
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(variables))


def test_missing_teacher_and_bad_names(tmp_path):
  with pytest.raises(ValueError, match="needs a teacher"):
    loop.train_and_evaluate(tiny_config("kd", teacher_workdir=""), str(tmp_path / "a"))
  with pytest.raises(checkpoint.CheckpointError, match="train the teacher first"):
    loop.train_and_evaluate(tiny_config("kd", teacher_workdir=str(tmp_path / "none")),
                            str(tmp_path / "b"))
  with pytest.raises(ValueError, match="unknown method 'kd_bogus'"):
    loop.train_and_evaluate(tiny_config(method="kd_bogus"), str(tmp_path / "c"))
  with pytest.raises(ValueError, match="unknown model 'resnet7'"):
    loop.train_and_evaluate(tiny_config(model="resnet7"), str(tmp_path / "d"))
  with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
    loop.train_and_evaluate(tiny_config(dataset="cifar1000"), str(tmp_path / "e"))
  with pytest.raises(ValueError, match="unknown dtype 'float8'"):
    loop.train_and_evaluate(tiny_config(dtype="float8"), str(tmp_path / "f"))


def test_view_joint_pass_reaches_the_step(teacher_run, tmp_path, monkeypatch):
  """config.view.joint_pass=False gives the official two student passes
  (tests/test_train_steps.py checks both losses); None keeps the model's default."""
  from kd_jax.train import step as step_lib
  seen = []
  make = step_lib.make_train_step

  def spy(*args, **kwargs):
    seen.append(kwargs.get("joint_views"))
    return make(*args, **kwargs)

  monkeypatch.setattr(step_lib, "make_train_step", spy)
  config = tiny_config("kd", num_epochs=1, method="kd_mixup", teacher_workdir=teacher_run[0],
                       **{"view.joint_pass": False})
  loop.train_and_evaluate(config, str(tmp_path))
  assert seen == [False]


def test_resume_refuses_a_result_changing_config_and_names_the_keys(tmp_path, caplog):
  workdir = str(tmp_path)
  loop.train_and_evaluate(tiny_config(num_epochs=1), workdir)
  with caplog.at_level(logging.WARNING):  # the identical command: no warning (tuples too)
    loop.train_and_evaluate(tiny_config(num_epochs=1), workdir)
  assert "differs" not in caplog.text
  changed = tiny_config(num_epochs=1, seed=3, **{"optimizer.learning_rate": 0.1})
  with pytest.raises(loop.ConfigChangedError,
                     match=r"optimizer\.learning_rate: 0\.05 -> 0\.1; seed: 0 -> 3\. Use a new "
                           r"--workdir, or set --config\.allow_config_change=True"):
    loop.train_and_evaluate(changed, workdir)
  changed.allow_config_change = True
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(changed, workdir)
  assert "differs from its checkpoint in: optimizer.learning_rate: 0.05 -> 0.1" in caplog.text
  # A block the method does not read may change (plain KD ignores the continuation block).
  assert "continuation" in loop.unread_blocks(methods.get_method("kd"))
  assert "continuation" not in loop.unread_blocks(methods.get_method("annealing_kd"))
  assert "backward" not in loop.unread_blocks(methods.get_method("kd", "backward"))
  # The dual view reads its strong view's block too: changing it is a change of the run.
  config = tiny_config("kd", method="mlkd")
  assert "randaugment" in loop.unread_blocks(methods.get_method("mlkd"))
  assert "randaugment" not in loop.unread_blocks(methods.get_method("mlkd"), config)
  other_margin = tiny_config(num_epochs=1, **{"continuation.margin": 9.0})
  loop.train_and_evaluate(other_margin, workdir)  # the scratch run reads no margin
  # A key the checkpoint predates (the schema grew) only warns.
  saved = {"seed": 0, "kd": {"temperature": 4.0}}
  loop.check_resume_config(saved, {"seed": 0, "kd": {"temperature": 4.0, "new": 1}}, "w")
  with pytest.raises(loop.ConfigChangedError, match=r"kd\.temperature: 4\.0 -> 2\.0\."):
    loop.check_resume_config(saved, {"seed": 0, "kd": {"temperature": 2.0, "new": 1}}, "w")
  # ... unless it was added with the value of the code of before (ADDED_KEY_DEFAULTS): a run
  # saved before label smoothing existed trained without it.
  loop.check_resume_config(saved, {"seed": 0, "kd": {"temperature": 4.0},
                                   "label_smoothing": 0.0}, "w")
  with pytest.raises(loop.ConfigChangedError, match=r"label_smoothing: 0\.0 -> 0\.1"):
    loop.check_resume_config(saved, {"seed": 0, "kd": {"temperature": 4.0},
                                     "label_smoothing": 0.1}, "w")
  # The teacher's name may change with its path: the teacher is compared by its checksum.
  loop.check_resume_config({**saved, "teacher_model": ""},
                           {**saved, "teacher_model": "imagenet_resnet34"}, "w")


@pytest.mark.parametrize("overrides, message", [
    ({"method": "kd_cutmix_pick", "cutmix_pick.score": "bogus"},
     r"^config\.cutmix_pick: unknown pick score 'bogus'; valid names: teacher_entropy"),
    ({"method": "backward_kd", "backward.normalize": "l3"},
     r"^config\.backward: unknown backward normalize 'l3'"),
    ({"method": "continuation_kd", "continuation.psi_schedule": "cosine"},
     r"^config\.continuation: unknown psi schedule 'cosine'"),
    ({"method": "continuation_kd", "continuation.reduction": "l2"},
     r"^config\.continuation\.reduction: unknown reduction 'l2'; valid: mean, sum\.$"),
    ({"optimizer.name": "adagrad"}, r"^config\.optimizer\.name: unknown optimizer 'adagrad'"),
    ({"optimizer.schedule": "cos"}, r"^config\.optimizer: unknown lr schedule 'cos'; valid: "
     r"step, cosine, linear"),
    ({"optimizer.name": "adamw", "optimizer.warmup_epochs": 1.0},
     r"^config\.optimizer: warmup_epochs is for the step and cosine schedules"),
    ({"label_smoothing": 1.0}, r"^config\.label_smoothing must be in \[0, 1\)"),
    ({"dataset": "mnist1"}, r"^config\.dataset: unknown dataset 'mnist1'; valid names: digits"),
    ({"augment.autoaugment": "cifar"},
     r"^config\.augment: unknown AutoAugment policy 'cifar'; valid names: cifar10, imagenet"),
    ({"augment.cutout_size": 1}, r"^config\.augment: cutout_size must be 0 \(no Cutout\) or ≥ 2"),
    ({"view.name": "cutout", "cutout.size": 1}, r"^config\.cutout: cutout size must be ≥ 2"),
])
def test_config_is_checked_before_anything_loads(tmp_path, monkeypatch, overrides, message):
  """A bad option fails at once, naming its key, before the data or a teacher loads and
  before the run directory is made."""
  from kd_jax.train import setup
  monkeypatch.setattr(setup, "build_run", lambda *a: pytest.fail("data loaded"))
  config = tiny_config("kd", teacher_workdir=str(tmp_path), **overrides)
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_annealing_two_phases_restart_the_optimiser_and_resume_exactly(teacher_run, tmp_path):
  """Annealing-KD's official protocol: phase 1 (ψ = 0, T stepping down to 1 over its 2
  epochs), then phase 2 (labels only) from phase 1's best epoch with a fresh optimiser, whose
  lr schedule starts again (the metrics show the restart); a run stopped at the boundary
  resumes to the same parameters."""
  overrides = {"method": "annealing_kd", "teacher_workdir": teacher_run[0],
               "continuation.t_max": 3, "continuation.annealing_phase2_epochs": 1,
               "continuation.annealing_phase2_init": "best",
               "optimizer.lr_milestones": (1,), "log_every_steps": 0}
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.train_and_evaluate(tiny_config("kd", num_epochs=3, **overrides), straight)
  rows = metrics.read_rows(straight)
  train = [r for r in rows if r["split"] == "train"]
  assert [r["psi"] for r in train] == [0.0, 0.0, 1.0]
  assert [r["continuation_temperature"] for r in train] == [2.0, 1.0, 1.0]
  # lr 0.05, ×0.1 at epoch 1 of phase 1; phase 2 starts again at 0.05.
  assert [r["lr"] for r in train] == pytest.approx([0.05, 0.005, 0.05])
  arrays, _ = _final_variables(straight)
  tests_ = [r for r in rows if r["split"] == "test"]
  best = max(tests_[:2], key=lambda r: r["top1"])["top1"]
  assert float(arrays["train"]["annealing_best_score"]) == pytest.approx(best)
  # Stopped at the phase boundary (the checkpoint of epoch 2 is the newest), resumed: the
  # fresh optimiser is made again and the run ends on the same parameters.
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "66"))
  loop.train_and_evaluate(tiny_config("kd", num_epochs=3, **overrides), resumed)
  b, _ = _final_variables(resumed)
  jax.tree.map(np.testing.assert_array_equal, arrays, b)
