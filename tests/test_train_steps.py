"""The optimiser and the one step builder: schedule, weight decay, one compile, teacher mode,
model adapters, one- and two-pass views, regression objectives and the evaluation sums."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import augment, losses, methods, models
from kd_jax.data import load_dataset
from kd_jax.models import adapters
from kd_jax.train import optim, preprocess as preprocess_lib, sharding, state as state_lib
from kd_jax.train import step as step_lib
from tests.conftest import image_step, sgd


def test_multistep_schedule_changes_at_milestone_epochs():
  schedule = optim.multistep_schedule(0.05, (150, 180, 210), 0.1, steps_per_epoch=10)
  assert float(schedule(1499)) == pytest.approx(0.05)
  assert float(schedule(1500)) == pytest.approx(0.005)
  assert float(schedule(1800)) == pytest.approx(0.0005)
  assert float(schedule(2399)) == pytest.approx(0.00005)


def test_sgd_matches_pytorch_update_rule_by_hand():
  # torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01): d = g + wd·w; buf = 0.9·buf + d;
  # w -= lr·buf. Two steps from w = 1 with g = 0.5 each time.
  optimizer = sgd(weight_decay=0.01, steps_per_epoch=1)
  params = {"w": jnp.array(1.0)}
  opt_state = optimizer.init(params)
  w, buf = 1.0, 0.0
  for _ in range(2):
    updates, opt_state = optimizer.update({"w": jnp.array(0.5)}, opt_state, params)
    params = optax.apply_updates(params, updates)
    buf = 0.9 * buf + (0.5 + 0.01 * w)
    w -= 0.1 * buf
  assert float(params["w"]) == pytest.approx(w, rel=1e-6)


def test_adamw_warms_up_then_decays_linearly_and_spares_vectors():
  optimizer, schedule = optim.make_optimizer(name="adamw", learning_rate=1.0, weight_decay=0.5,
                                             warmup_fraction=0.25, steps_per_epoch=4,
                                             num_epochs=2)
  # 8 steps, 2 of warm-up: 0, 0.5, then 1 → 0 over the remaining 6.
  np.testing.assert_allclose([float(schedule(s)) for s in range(9)],
                             [0, 0.5, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0], atol=1e-6)
  params = {"bias": jnp.ones(3), "kernel": jnp.ones((2, 2))}
  state = optimizer.init(params)
  zero = jax.tree.map(jnp.zeros_like, params)
  for _ in range(2):  # zero gradients: only the decoupled decay moves a weight
    updates, state = optimizer.update(zero, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["bias"], 1.0)  # vectors are not decayed
  np.testing.assert_allclose(params["kernel"], 1.0 - 0.5 * 0.5, rtol=1e-6)  # lr 0, then 0.5


def test_unknown_optimizer_and_method():
  with pytest.raises(ValueError, match="unknown optimizer 'adagrad'.*sgd, adamw, adam"):
    optim.make_optimizer(name="adagrad", learning_rate=0.1, steps_per_epoch=1)
  with pytest.raises(ValueError, match="unknown method .kdd.*annealing_kd, backward_kd, ce"):
    methods.get_method("kdd")
  with pytest.raises(ValueError, match="unknown view 'cutmixup'"):
    methods.get_method("kd", "cutmixup")
  with pytest.raises(ValueError, match="unknown text view 'mixup'; valid names: backward"):
    methods.make_view("mixup", "text")


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
  preprocess = preprocess_lib.image_preprocess(data.mean, data.std)
  batch = sharding.global_batch({"image": data.images[:32], "label": data.labels[:32]}, mesh)
  return data, mesh, student, teacher, teacher_variables, preprocess, batch


def _hparams(mesh, temperature=4.0, ce_weight=0.1, kd_weight=0.9):
  return sharding.replicate({"temperature": jnp.float32(temperature),
                             "ce_weight": jnp.float32(ce_weight),
                             "kd_weight": jnp.float32(kd_weight),
                             "view_weight": jnp.float32(1.0)}, mesh)


def _state(student, optimizer, mesh, seed=0):
  return sharding.replicate(state_lib.create_train_state(student, optimizer, (8, 8, 1), seed),
                            mesh)


def test_kd_step_uses_teacher_in_inference_mode_and_compiles_once(setup):
  data, mesh, student, teacher, teacher_variables, preprocess, batch = setup
  optimizer = sgd(lr_milestones=(1,), steps_per_epoch=1, weight_decay=0.01)
  state = _state(student, optimizer, mesh)
  initial_params = jax.tree.map(np.asarray, state["params"])
  initial_stats = jax.tree.map(np.asarray, state["batch_stats"])
  train_step = image_step(student, optimizer, methods.get_method("kd"), preprocess, teacher)

  # Expected loss of the first step, computed outside the step: student in training mode,
  # teacher in inference mode (running statistics), pure KD term.
  x = preprocess(None, batch, None, train=False)
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
  assert train_step.compiled._cache_size() == 1


def test_ce_step_needs_no_teacher_and_kd_requires_one(setup):
  data, mesh, student, teacher, teacher_variables, preprocess, batch = setup
  optimizer = sgd()
  with pytest.raises(ValueError, match="needs a teacher"):
    image_step(student, optimizer, methods.get_method("kd"), preprocess)
  train_step = image_step(student, optimizer, methods.get_method("ce"), preprocess)
  state, metrics = train_step(_state(student, optimizer, mesh), batch, {}, _hparams(mesh))
  x = preprocess(None, batch, None, train=False)
  variables = {"params": _state(student, optimizer, mesh)["params"],
               "batch_stats": _state(student, optimizer, mesh)["batch_stats"]}
  logits, _ = student.apply(variables, x, train=True, mutable=["batch_stats"])
  assert float(metrics["loss"]) == pytest.approx(
      float(jnp.mean(losses.cross_entropy(logits, batch["label"]))), rel=1e-5)
  assert int(metrics["label_errors"]) == 0
  # Labels outside [0, 10) inside jit: counted (the loop stops on them), whatever the loss.
  bad = {**batch, "label": np.asarray(batch["label"]).copy()}
  bad["label"][:3] = [10, -1, 12]
  _, metrics = train_step(_state(student, optimizer, mesh), bad, {}, _hparams(mesh))
  assert int(metrics["label_errors"]) == 3
  # One-hot labels: the same loss and accuracy as the class ids, and nothing to count.
  one_hot = {**batch, "label": np.eye(10, dtype=np.float32)[np.asarray(batch["label"])]}
  state_1h, metrics_1h = train_step(_state(student, optimizer, mesh), one_hot, {},
                                    _hparams(mesh))
  assert float(metrics_1h["loss"]) == pytest.approx(
      float(jnp.mean(losses.cross_entropy(logits, batch["label"]))), rel=1e-5)
  assert "label_errors" not in metrics_1h
  np.testing.assert_allclose(jax.tree.leaves(state_1h["params"])[0],
                             jax.tree.leaves(state["params"])[0], rtol=1e-5, atol=1e-7)


def test_the_loop_stops_on_labels_outside_the_classes(tmp_path):
  from kd_jax.train import loop

  def train_step(state, batch, teacher_variables, hparams, teacher_constants):
    return state, {"loss": jnp.float32(1.0), "label_errors": jnp.int32(batch)}

  spec = loop.Loop(train_step, lambda start, stop: iter([0, 2, 0]), lambda epoch: ({}, {}),
                   lambda state, epoch: None, steps_per_epoch=3, total_steps=3, config={},
                   progress_bar=False, log_every_steps=1)
  with pytest.raises(ValueError, match=r"the batch of step 2 has 2 label\(s\) outside"):
    loop.run_loop(spec, {"step": jnp.int32(0)}, str(tmp_path / "run"))


def test_check_teacher_warns_when_the_teacher_cannot_teach():
  from kd_jax.train import loop
  fine = {"count": 100.0, "teacher_correct": 90.0, "teacher_spread": 50.0,
          "teacher_chance": 10.0}
  assert loop.check_teacher(fine) is None
  constant = {**fine, "teacher_spread": 0.0}
  assert "the same for all 100 evaluation examples" in loop.check_teacher(constant)
  # 10 classes, 100 examples: chance 10% ± 3·3% — 18% is at chance, 20% is not.
  assert "at chance (10.00% for 10 classes)" in loop.check_teacher(
      {**fine, "teacher_correct": 18.0})
  assert loop.check_teacher({**fine, "teacher_correct": 20.0}) is None


def test_function_adapter_trains_a_plain_apply_function(setup):
  """Any ``apply(variables, x, train, key)`` model goes through the same step: a linear
  model on flattened pixels, one SGD step checked by hand."""
  data, mesh, _, _, _, preprocess, batch = setup

  def apply_fn(variables, x, train, key):
    del train, key
    return x.reshape(x.shape[0], -1) @ variables["params"]["w"]

  model = adapters.FunctionModel(apply_fn, lambda key, x: {
      "params": {"w": jnp.zeros((64, 10))}, "batch_stats": {}})
  optimizer = optax.sgd(0.5)
  variables = model.init(None, None)
  state = sharding.replicate(state_lib.new_train_state(variables, optimizer,
                                                       jax.random.PRNGKey(0)), mesh)
  step = step_lib.jit_data_parallel(step_lib.make_train_step(
      model, optimizer, methods.get_method("ce"), preprocess), mesh)
  state, metrics = step(state, batch, {}, _hparams(mesh), {})
  # With w = 0 every logit is 0: loss log(10), gradient X^T (softmax − onehot) / B.
  x = np.asarray(preprocess(None, batch, None, train=False)).reshape(32, -1)
  onehot = np.eye(10)[np.asarray(batch["label"])]
  expected_w = -0.5 * x.T @ (np.full((32, 10), 0.1) - onehot) / 32
  assert float(metrics["loss"]) == pytest.approx(np.log(10), rel=1e-6)
  np.testing.assert_allclose(state["params"]["w"], expected_w, rtol=1e-5, atol=1e-6)


def test_view_in_one_joint_pass_or_a_second_pass(setup):
  """joint_views=True: x and x' in one batch (BatchNorm statistics over both); False: the
  official code's two forward passes. The losses differ; each equals its own formula."""
  data, mesh, student, teacher, teacher_variables, preprocess, batch = setup
  optimizer = sgd()
  method = methods.get_method("kd_mixup")
  options = {"alpha": 1.0}
  hparams = _hparams(mesh, 4.0, 0.1, 0.9)
  state0 = _state(student, optimizer, mesh)
  variables = {"params": state0["params"], "batch_stats": state0["batch_stats"]}
  x = preprocess(None, batch, None, train=False)
  key = jax.random.fold_in(jax.random.fold_in(state0["rng"], 0), 1)
  mixed, _, _ = augment.mixup(key, x, 1.0)
  teacher_x = teacher.apply(teacher_variables, x, train=False)
  teacher_mixed = teacher.apply(teacher_variables, mixed, train=False)
  kd = lambda s, t, y: losses.kd_objective(s, t, y, temperature=4.0, ce_weight=0.1,
                                           kd_weight=0.9)
  joint, _ = student.apply(variables, jnp.concatenate([x, mixed]), train=True,
                           mutable=["batch_stats"])
  expected_joint = (jnp.mean(kd(joint[:32], teacher_x, batch["label"]))
                    + 0.9 * jnp.mean(losses.kd_kl(joint[32:], teacher_mixed, 4.0)))
  first, updated = student.apply(variables, x, train=True, mutable=["batch_stats"])
  second, _ = student.apply({"params": variables["params"], **updated}, mixed, train=True,
                            mutable=["batch_stats"])
  expected_two = (jnp.mean(kd(first, teacher_x, batch["label"]))
                  + 0.9 * jnp.mean(losses.kd_kl(second, teacher_mixed, 4.0)))
  assert abs(float(expected_joint) - float(expected_two)) > 1e-4
  for joint_views, expected in ((True, expected_joint), (False, expected_two)):
    step = image_step(student, optimizer, method, preprocess, teacher, options,
                      joint_views=joint_views)
    _, metrics = step(_state(student, optimizer, mesh), batch, teacher_variables, hparams)
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_regression_objectives_by_hand():
  student, teacher = jnp.array([[2.0]]), jnp.array([[1.0]])
  score = jnp.array([1.5])
  hp = {"ce_weight": 0.5, "kd_weight": 0.5, "phi": 1.0, "psi": 0.5, "margin": 0.0,
        "temperature": 2.0}
  # KD: 0.5·(2 − 1.5)² + 0.5·(2 − 1)² = 0.125 + 0.5.
  np.testing.assert_allclose(methods.METHODS["kd"].objective(student, teacher, score, hp,
                                                             regression=True), [0.625])
  # Continuation: 0.5·0.25 + 0.5·max(0, (2 − 1)² − 0) = 0.625; margin 0.5 → 0.5·0.5 + 0.125.
  cont = methods.METHODS["continuation_kd"].objective
  np.testing.assert_allclose(cont(student, teacher, score, hp, regression=True), [0.625])
  np.testing.assert_allclose(cont(student, teacher, score, {**hp, "margin": 0.5},
                                  regression=True), [0.375])
  np.testing.assert_allclose(methods.METHODS["ce"].objective(student, None, score, hp,
                                                             regression=True), [0.25])
  logits = jnp.array([[0.0, jnp.log(3.0)]])
  np.testing.assert_allclose(methods.METHODS["ce"].objective(logits, None, jnp.array([1]), hp),
                             [-np.log(0.75)], rtol=1e-6)


def test_eval_step_sums_against_hand_computed_values():
  """A student and a teacher that differ, on four examples with one masked out: every sum
  is checked against values written by hand (agreement, KL direction, teacher accuracy)."""
  def fixed(logits):
    table = jnp.asarray(logits, jnp.float32)
    return adapters.FunctionModel(lambda variables, x, train, key: table[x[:, 0, 0, 0]])

  student = fixed([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [5.0, 0.0]])
  teacher = fixed([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
  identity = lambda key, batch, hparams, train: batch["image"]
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  eval_step = step_lib.jit_eval(step_lib.make_eval_step(student, identity, teacher), mesh)
  batch = {"image": np.arange(4, dtype=np.int32).reshape(4, 1, 1, 1),
           "label": np.array([0, 0, 1, 1], np.int32),
           "mask": np.array([1, 1, 1, 0], np.float32)}  # the last example is padding
  sums = jax.device_get(eval_step({}, sharding.global_batch(batch, mesh), {}))

  def log_softmax(z):
    z = np.asarray(z, np.float64)
    return z - np.log(np.sum(np.exp(z)))

  s = [[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
  t = [[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]]
  # Student predicts 0, 1, 0; teacher 0, 0, 1; labels 0, 0, 1.
  assert sums["count"] == 3
  assert sums["correct"] == 1          # only example 0
  assert sums["teacher_correct"] == 3
  assert sums["agree"] == 1            # only example 0
  ce = -(log_softmax(s[0])[0] + log_softmax(s[1])[0] + log_softmax(s[2])[1])
  assert sums["loss"] == pytest.approx(ce, rel=1e-5)
  # KL(p_T ‖ p_S) = Σ p_T (log p_T − log p_S): teacher to student, not the reverse.
  kl = sum(np.sum(np.exp(log_softmax(ti)) * (log_softmax(ti) - log_softmax(si)))
           for si, ti in zip(s, t))
  reverse = sum(np.sum(np.exp(log_softmax(si)) * (log_softmax(si) - log_softmax(ti)))
                for si, ti in zip(s, t))
  assert abs(kl - reverse) > 0.1
  assert sums["kl"] == pytest.approx(kl, rel=1e-5)
  # For the loop's teacher check: max_c |z_T − z_T(first)| summed (0 + 0 + 3), count / C.
  assert sums["teacher_spread"] == pytest.approx(3.0)
  assert sums["teacher_chance"] == pytest.approx(1.5)


def test_population_step_equals_separate_steps(setup):
  """jit_population: three trials with their own states, batches and policies equal three
  runs of the single-trial step; vmap and unroll agree."""
  from kd_jax.methods import rolewise
  data, mesh, student, teacher, teacher_variables, _, _ = setup
  optimizer = sgd()
  preprocess = rolewise.PolicyPreprocess(data.mean, data.std, fill=(0,), pad=1, flip=False,
                                         cutout_size=2)
  model = adapters.LinenImageModel(student)
  step = step_lib.make_train_step(model, optimizer, methods.get_method("kd"), preprocess,
                                  teacher=adapters.LinenImageModel(teacher))
  states = [state_lib.create_train_state(student, optimizer, (8, 8, 1), seed) for seed in range(3)]
  policies = np.random.default_rng(0).integers(0, 10, (3, 30, 2)).astype(np.int32)
  images = data.images[:48].reshape(3, 16, 8, 8, 1)
  labels = data.labels[:48].reshape(3, 16)
  shared = {"temperature": jnp.float32(4.0), "ce_weight": jnp.float32(0.1),
            "kd_weight": jnp.float32(0.9), "view_weight": jnp.float32(1.0)}
  single = jax.jit(step)
  expected = [single(states[i], {"image": images[i], "label": labels[i]}, teacher_variables,
                     {**shared, "policy": policies[i]}, {})[0] for i in range(3)]
  pop_mesh = step_lib.make_population_mesh(3)
  for mode in step_lib.POPULATION_MODES:
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    population = step_lib.jit_population(step, pop_mesh, mode=mode)
    out, metrics = population(stacked, {"image": images, "label": labels}, teacher_variables,
                              {**shared, "policy": policies}, {})
    assert metrics["loss"].shape == (3,)
    for i in range(3):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                   out["params"], expected[i]["params"])
