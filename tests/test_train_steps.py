"""The optimiser and the compiled steps: schedule, weight decay, one compile, teacher mode."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from kd_jax import losses, models
from kd_jax.data import load_dataset
from kd_jax.train import objectives, optim, sharding, state as state_lib, steps


def _sgd_config(**overrides):
  config = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.9,
                                          nesterov=False, weight_decay=0.01,
                                          lr_milestones=(2, 3), lr_decay=0.1))
  config.update(overrides)
  return config


def test_multistep_schedule_changes_at_milestone_epochs():
  schedule = optim.multistep_schedule(0.05, (150, 180, 210), 0.1, steps_per_epoch=10)
  assert float(schedule(1499)) == pytest.approx(0.05)
  assert float(schedule(1500)) == pytest.approx(0.005)
  assert float(schedule(1800)) == pytest.approx(0.0005)
  assert float(schedule(2399)) == pytest.approx(0.00005)


def test_sgd_matches_pytorch_update_rule_by_hand():
  # torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01): d = g + wd·w; buf = 0.9·buf + d;
  # w -= lr·buf. Two steps from w = 1 with g = 0.5 each time.
  optimizer, _ = optim.make_optimizer(_sgd_config(lr_milestones=()), steps_per_epoch=1)
  params = {"w": jnp.array(1.0)}
  opt_state = optimizer.init(params)
  w, buf = 1.0, 0.0
  for _ in range(2):
    updates, opt_state = optimizer.update({"w": jnp.array(0.5)}, opt_state, params)
    params = optax.apply_updates(params, updates)
    buf = 0.9 * buf + (0.5 + 0.01 * w)
    w -= 0.1 * buf
  assert float(params["w"]) == pytest.approx(w, rel=1e-6)


def test_unknown_optimizer_and_method():
  with pytest.raises(ValueError, match="unknown optimizer 'adam'.*sgd"):
    optim.make_optimizer(_sgd_config(name="adam"), 1)
  with pytest.raises(ValueError, match="unknown method .kdd.*annealing_kd, backward_kd, ce"):
    objectives.get_method("kdd")


@pytest.fixture(scope="module")
def setup():
  data = load_dataset("digits", "train")
  mesh = sharding.make_data_mesh()
  student = models.create_model("cnn_tiny", 10)
  teacher = models.create_model("cnn_small", 10)
  teacher_variables = sharding.replicate(
      models.init_variables(teacher, jax.random.PRNGKey(1), (8, 8, 1)), mesh)
  # Give the teacher's running statistics values that differ from the batch statistics,
  # so inference and training mode give different logits.
  teacher_variables["batch_stats"] = jax.tree.map(lambda v: v * 0.5 + 0.1,
                                                  teacher_variables["batch_stats"])
  preprocess = steps.make_preprocess(data.mean, data.std, crop_pad=0, flip=False,
                                     compute_dtype=jnp.float32)
  batch = sharding.global_batch({"image": data.images[:32], "label": data.labels[:32]}, mesh)
  return data, mesh, student, teacher, teacher_variables, preprocess, batch


def _hparams(mesh, temperature=4.0, ce_weight=0.1, kd_weight=0.9):
  return sharding.replicate({"temperature": jnp.float32(temperature),
                             "ce_weight": jnp.float32(ce_weight),
                             "kd_weight": jnp.float32(kd_weight)}, mesh)


def test_kd_step_uses_teacher_in_inference_mode_and_compiles_once(setup):
  data, mesh, student, teacher, teacher_variables, preprocess, batch = setup
  optimizer, _ = optim.make_optimizer(_sgd_config(lr_milestones=(1,)), steps_per_epoch=1)
  state = sharding.replicate(state_lib.create_train_state(student, optimizer, (8, 8, 1), 0), mesh)
  initial_params = jax.tree.map(np.asarray, state["params"])
  initial_stats = jax.tree.map(np.asarray, state["batch_stats"])
  train_step = steps.make_train_step(student, optimizer, objectives.get_method("kd"), mesh,
                                     preprocess, teacher)

  # Expected loss of the first step, computed outside the step: student in training mode,
  # teacher in inference mode (running statistics), pure KD term.
  x = preprocess(None, batch["image"], train=False)
  student_logits, _ = student.apply({"params": initial_params, "batch_stats": initial_stats},
                                    x, train=True, mutable=["batch_stats"])
  teacher_eval = teacher.apply(teacher_variables, x, train=False)
  teacher_train, _ = teacher.apply(teacher_variables, x, train=True, mutable=["batch_stats"])
  expected = float(jnp.mean(losses.kd_kl(student_logits, teacher_eval, 2.0)))
  wrong = float(jnp.mean(losses.kd_kl(student_logits, teacher_train, 2.0)))
  assert abs(expected - wrong) > 1e-3

  state, metrics = train_step(state, batch, teacher_variables, _hparams(mesh, 2.0, 0.0, 1.0))
  assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
  # The student's BatchNorm statistics moved; its parameters were updated.
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state["batch_stats"]),
                                                    jax.tree.leaves(initial_stats)))
  assert int(state["step"]) == 1
  # More steps with other schedule values (and past the lr milestone): still one compile.
  for temperature in (3.0, 1.0):
    state, metrics = train_step(state, batch, teacher_variables, _hparams(mesh, temperature))
  assert np.isfinite(float(metrics["loss"]))
  assert train_step._cache_size() == 1


def test_ce_step_needs_no_teacher_and_kd_requires_one(setup):
  data, mesh, student, teacher, teacher_variables, preprocess, batch = setup
  optimizer, _ = optim.make_optimizer(_sgd_config(), steps_per_epoch=10)
  with pytest.raises(ValueError, match="needs a teacher"):
    steps.make_train_step(student, optimizer, objectives.get_method("kd"), mesh, preprocess)
  train_step = steps.make_train_step(student, optimizer, objectives.get_method("ce"), mesh,
                                     preprocess)
  state = sharding.replicate(state_lib.create_train_state(student, optimizer, (8, 8, 1), 0), mesh)
  state, metrics = train_step(state, batch, {}, _hparams(mesh))
  assert np.isfinite(float(metrics["loss"]))


def test_eval_step_counts(setup):
  data, mesh, student, teacher, teacher_variables, preprocess, batch = setup
  eval_step = steps.make_eval_step(teacher, mesh, preprocess, teacher)
  masked = dict(batch, mask=sharding.global_batch(
      {"m": np.r_[np.ones(30), np.zeros(2)].astype(np.float32)}, mesh)["m"])
  sums = jax.device_get(eval_step(teacher_variables, masked, teacher_variables))
  assert sums["count"] == 30
  assert sums["agree"] == 30  # a model always agrees with itself
  assert sums["kl"] == pytest.approx(0.0, abs=1e-4)
  assert sums["correct"] == sums["teacher_correct"]
