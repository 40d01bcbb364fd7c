"""Backward-pass KD: input gradients, auxiliary samples, and their use in the step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import backward, losses, models
from kd_jax.data import load_dataset
from kd_jax.train import objectives, optim, sharding, state as state_lib, steps


def _tiny_nets():
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
  w_t, w_s = jax.random.normal(k1, (6, 4)), jax.random.normal(k2, (6, 4))
  v_t, v_s = jax.random.normal(k3, (4, 3)), jax.random.normal(k4, (4, 3))
  teacher_fn = lambda x: jnp.tanh(x @ w_t) @ v_t
  student_fn = lambda x: jnp.tanh(x @ w_s) @ v_s
  return teacher_fn, student_fn


@pytest.mark.parametrize("divergence, temperature", [("kl", 1.0), ("kl", 3.0), ("l1", 1.0),
                                                     ("mse", 1.0)])
def test_input_gradient_matches_central_differences(divergence, temperature):
  teacher_fn, student_fn = _tiny_nets()
  x = jax.random.normal(jax.random.PRNGKey(5), (3, 6), jnp.float64) if jax.config.jax_enable_x64 \
      else jax.random.normal(jax.random.PRNGKey(5), (3, 6))
  grad = backward.divergence_input_grad(teacher_fn, student_fn, x, divergence=divergence,
                                        temperature=temperature)

  def total(inputs):
    return float(jnp.sum(backward.per_example_divergence(teacher_fn(inputs), student_fn(inputs),
                                                         divergence, temperature)))

  h = 1e-3
  numeric = np.zeros(x.shape)
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      e = np.zeros(x.shape, np.float32)
      e[i, j] = h
      numeric[i, j] = (total(x + e) - total(x - e)) / (2 * h)
  np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-3)


def test_per_example_divergences_by_hand():
  t = jnp.array([[1.0, 3.0]])
  s = jnp.array([[2.0, 1.0]])
  assert float(backward.per_example_divergence(t, s, "l1")[0]) == pytest.approx(1.5)
  assert float(backward.per_example_divergence(t, s, "mse")[0]) == pytest.approx(2.5)
  kl = backward.per_example_divergence(t, s, "kl", 2.0)
  assert float(kl[0]) == pytest.approx(float(losses.kd_kl(s, t, 2.0)[0]) / 4, rel=1e-6)
  with pytest.raises(ValueError, match="unknown divergence 'js'"):
    backward.per_example_divergence(t, s, "js")


@pytest.mark.parametrize("normalize", backward.NORMALIZATIONS)
def test_generated_samples_have_larger_divergence(normalize):
  teacher_fn, student_fn = _tiny_nets()
  x = jax.random.normal(jax.random.PRNGKey(6), (16, 6))
  aux = jax.jit(lambda v: backward.auxiliary_samples(teacher_fn, student_fn, v, steps=3,
                                                     step_size=0.05, normalize=normalize))(x)
  before = backward.per_example_divergence(teacher_fn(x), student_fn(x))
  after = backward.per_example_divergence(teacher_fn(aux), student_fn(aux))
  assert np.all(np.asarray(after) > np.asarray(before))


def test_epsilon_ball_and_clip_bounds_hold():
  teacher_fn, student_fn = _tiny_nets()
  x = jax.random.uniform(jax.random.PRNGKey(7), (16, 6), minval=-0.5, maxval=0.5)
  aux = backward.auxiliary_samples(teacher_fn, student_fn, x, steps=5, step_size=0.2,
                                   normalize="sign", epsilon=0.3, clip=(-0.6, 0.6))
  assert np.all(np.abs(np.asarray(aux - x)) <= 0.3 + 1e-6)
  assert np.all((np.asarray(aux) >= -0.6 - 1e-6) & (np.asarray(aux) <= 0.6 + 1e-6))
  assert np.any(np.abs(np.asarray(aux - x)) > 0.29)  # it did move up to the boundary
  aux_l2 = backward.auxiliary_samples(teacher_fn, student_fn, x, steps=5, step_size=0.2,
                                      normalize="l2", epsilon=0.3)
  assert np.all(np.linalg.norm(np.asarray(aux_l2 - x), axis=1) <= 0.3 + 1e-5)


def test_samples_carry_no_gradient_and_bad_options():
  teacher_fn, student_fn = _tiny_nets()
  x = jnp.ones((2, 6))
  grad = jax.grad(lambda v: jnp.sum(backward.auxiliary_samples(
      teacher_fn, student_fn, v, step_size=0.1)))(x)
  assert np.all(np.asarray(grad) == 0)
  with pytest.raises(ValueError, match="unknown normalize"):
    backward.auxiliary_samples(teacher_fn, student_fn, x, step_size=0.1, normalize="linf")
  with pytest.raises(ValueError, match="steps"):
    backward.auxiliary_samples(teacher_fn, student_fn, x, steps=0, step_size=0.1)
  with pytest.raises(TypeError, match="floating"):
    backward.divergence_input_grad(teacher_fn, student_fn, jnp.ones((2, 6), jnp.int32))


def test_works_with_any_apply_function_flax_nnx():
  """An NNX model plugs in through a plain function (nnx.split / nnx.merge)."""
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
      return self.dense(x)

  graphdef, params = nnx.split(Net(nnx.Rngs(0)))
  student_fn = lambda x: nnx.merge(graphdef, params)(x)
  teacher_fn, _ = _tiny_nets()
  aux = jax.jit(lambda v: backward.auxiliary_samples(teacher_fn, student_fn, v,
                                                     step_size=0.1))(jnp.ones((4, 6)))
  assert aux.shape == (4, 6) and np.all(np.isfinite(aux))


def test_backward_step_updates_batchnorm_once_from_x_and_x_aux():
  """Generation runs both networks in inference mode: only the training forward on
  [x, x_aux] moves the student's BatchNorm statistics."""
  data = load_dataset("digits", "train")
  mesh = sharding.make_data_mesh()
  student = models.create_model("cnn_tiny", 10)
  teacher = models.create_model("cnn_tiny", 10)
  teacher_variables = models.init_variables(teacher, jax.random.PRNGKey(1), (8, 8, 1))
  options = ml_collections.ConfigDict(dict(steps=2, step_size=0.1, normalize="sign", epsilon=0.0,
                                           clip=True, divergence="kl", divergence_temperature=1.0,
                                           weight=1.0, label_mixing=False))
  sgd = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.9,
                                       nesterov=False, weight_decay=0.0, lr_milestones=(),
                                       lr_decay=0.1))
  optimizer, _ = optim.make_optimizer(sgd, 10)
  preprocess = steps.make_preprocess(data.mean, data.std, 0, False, jnp.float32)
  step = steps.make_train_step(student, optimizer, objectives.get_method("backward_kd"), mesh,
                               preprocess, teacher, options)
  state = state_lib.create_train_state(student, optimizer, (8, 8, 1), seed=0)
  batch = {"image": data.images[:16], "label": data.labels[:16]}
  x = preprocess(None, jnp.asarray(batch["image"]), train=False)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  teacher_fn = lambda v: teacher.apply(teacher_variables, v, train=False)
  student_fn = lambda v: student.apply(variables, v, train=False)
  low, high = preprocess.valid_range()
  aux = backward.auxiliary_samples(teacher_fn, student_fn, x, steps=2, step_size=0.1,
                                   clip=(low, high))
  _, expected = student.apply(variables, jnp.concatenate([x, aux]), train=True,
                              mutable=["batch_stats"])
  loss_on_x = float(jnp.mean(losses.kd_objective(
      student.apply(variables, x, train=True, mutable=["batch_stats"])[0], teacher_fn(x),
      jnp.asarray(batch["label"]), temperature=4.0, ce_weight=0.1, kd_weight=0.9)))
  hparams = {k: jnp.float32(v) for k, v in dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9,
                                                 view_weight=1.0).items()}
  new_state, metrics = step(sharding.replicate(state, mesh), sharding.global_batch(batch, mesh),
                            sharding.replicate(teacher_variables, mesh),
                            sharding.replicate(hparams, mesh))  # donates state
  for ours, theirs in zip(jax.tree.leaves(new_state["batch_stats"]),
                          jax.tree.leaves(expected["batch_stats"])):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
  assert float(metrics["loss"]) > loss_on_x  # plus the KD term on x_aux
  assert np.all(np.asarray(aux) >= np.asarray(low) - 1e-6)
