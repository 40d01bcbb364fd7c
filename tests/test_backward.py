"""Backward-pass KD: input gradients, auxiliary samples, and their use in the step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import backward, losses, methods, models
from kd_jax.data import load_dataset
from kd_jax.train import preprocess as preprocess_lib, sharding, state as state_lib
from tests.conftest import image_step, sgd


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


# Toy nets whose input gradient is written by hand: teacher z_T(x) = x (identity logits),
# student z_S(x) = 0. With D = mse = mean_c (z_T − z_S)² = |x|² / C, ∇_x D = 2x / C; with
# C = 2 classes that is x itself.
_identity = lambda x: x
_zero = lambda x: jnp.zeros_like(x)


@pytest.mark.parametrize("normalize, steps, step_size, x, expected", [
    # "none": x ← x + η·x, so K steps scale x by (1 + η)^K: 1.5³ = 3.375.
    ("none", 3, 0.5, [[1.0, -2.0], [0.5, 4.0]], [[3.375, -6.75], [1.6875, 13.5]]),
    ("none", 1, 0.5, [[1.0, -2.0], [0.5, 4.0]], [[1.5, -3.0], [0.75, 6.0]]),
    # "sign": x ← x + η·sign(x): K·η = 0.3 away from 0 in every coordinate (0 stays).
    ("sign", 3, 0.1, [[1.0, -2.0], [0.0, 4.0]], [[1.3, -2.3], [0.0, 4.3]]),
    ("sign", 2, 0.25, [[1.0, -2.0], [0.0, 4.0]], [[1.5, -2.5], [0.0, 4.5]]),
    # "l2" (per example): x grows by η along x/|x| per step: |x| = 5 and 1 here, so after
    # K = 2 steps of η = 0.5 the examples are scaled by 6/5 and 2/1.
    ("l2", 2, 0.5, [[3.0, 4.0], [0.6, -0.8]], [[3.6, 4.8], [1.2, -1.6]]),
])
def test_auxiliary_steps_and_step_size_by_hand(normalize, steps, step_size, x, expected):
  aux = jax.jit(lambda v: backward.auxiliary_samples(
      _identity, _zero, v, steps=steps, step_size=step_size, normalize=normalize,
      divergence="mse"))(jnp.asarray(x))
  np.testing.assert_allclose(aux, expected, rtol=1e-6, atol=1e-6)


def test_auxiliary_projection_and_clip_by_hand():
  x = jnp.array([[1.0, -2.0], [0.0, 4.0]])
  # L∞ ball: three sign steps of 0.1 would move 0.3; ε = 0.25 stops them at 0.25.
  aux = backward.auxiliary_samples(_identity, _zero, x, steps=3, step_size=0.1,
                                   normalize="sign", epsilon=0.25, divergence="mse")
  np.testing.assert_allclose(aux, [[1.25, -2.25], [0.0, 4.25]], rtol=1e-6)
  # Clip to [−2.1, 1.2] after every step: (1.3, −2.3) → (1.2, −2.1); (0, 4.3) → (0, 1.2).
  aux = backward.auxiliary_samples(_identity, _zero, x, steps=3, step_size=0.1,
                                   normalize="sign", clip=(-2.1, 1.2), divergence="mse")
  np.testing.assert_allclose(aux, [[1.2, -2.1], [0.0, 1.2]], rtol=1e-6)
  # L2 ball: x = (3, 4), two unit steps along x/5: (3.6, 4.8), then δ = (1.2, 1.6) of norm 2,
  # projected to norm 1.5: δ = (0.9, 1.2).
  aux = backward.auxiliary_samples(_identity, _zero, jnp.array([[3.0, 4.0]]), steps=2,
                                   step_size=1.0, normalize="l2", epsilon=1.5, divergence="mse")
  np.testing.assert_allclose(aux, [[3.9, 5.2]], rtol=1e-6)
  # The L2 ball leaves a step shorter than ε alone: one unit step stays at (3.6, 4.8).
  aux = backward.auxiliary_samples(_identity, _zero, jnp.array([[3.0, 4.0]]), steps=1,
                                   step_size=1.0, normalize="l2", epsilon=1.5, divergence="mse")
  np.testing.assert_allclose(aux, [[3.6, 4.8]], rtol=1e-6)


def test_input_gradients_by_hand():
  """KL at temperature τ, through the student only (the teacher's logits are constant 0,
  p_T = (1/2, 1/2)): ∇_x KL(p_T || softmax(x/τ)) = (softmax(x/τ) − p_T) / τ. At
  x = (τ·log 3, 0), softmax(x/τ) = (3/4, 1/4), so the gradient is (1/4, −1/4) / τ."""
  for tau in (1.0, 2.0):
    x = jnp.array([[tau * np.log(3.0), 0.0]])
    grad = backward.divergence_input_grad(_zero, _identity, x, divergence="kl", temperature=tau)
    np.testing.assert_allclose(grad, [[0.25 / tau, -0.25 / tau]], rtol=1e-5)
  # Through the teacher: ∇_x KL(softmax(x) || p_S) with p_S = (1/2, 1/2) at x = (log 3, 0):
  # KL = Σ p log p + log 2, whose gradient is p_c (log p_c − Σ_k p_k log p_k):
  # p = (3/4, 1/4), H = −(3/4 log 3/4 + 1/4 log 1/4) → g = p·(log p + H).
  p = np.array([0.75, 0.25])
  neg_entropy = float(np.sum(p * np.log(p)))
  grad = backward.divergence_input_grad(_identity, _zero, jnp.array([[np.log(3.0), 0.0]]))
  np.testing.assert_allclose(grad, [p * (np.log(p) - neg_entropy)], rtol=1e-5)
  # l1: mean_c |x_c − 0| has gradient sign(x) / C; mse: 2x / C.
  x = jnp.array([[1.5, -0.5, 2.0, -3.0]])
  np.testing.assert_allclose(backward.divergence_input_grad(_identity, _zero, x, divergence="l1"),
                             [[0.25, -0.25, 0.25, -0.25]], rtol=1e-6)
  np.testing.assert_allclose(backward.divergence_input_grad(_zero, _identity, x, divergence="mse"),
                             [[0.75, -0.25, 1.0, -1.5]], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown divergence 'js'"):
    backward.divergence_input_grad(_identity, _zero, x, divergence="js")


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
                                           clip=True, divergence="kl", divergence_temperature=1.0))
  optimizer = sgd()
  preprocess = preprocess_lib.image_preprocess(data.mean, data.std)
  step = image_step(student, optimizer, methods.get_method("backward_kd"), preprocess, teacher,
                    options)
  state = state_lib.create_train_state(student, optimizer, (8, 8, 1), seed=0)
  batch = {"image": data.images[:16], "label": data.labels[:16]}
  x = preprocess(None, batch, None, train=False)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  teacher_fn = lambda v: teacher.apply(teacher_variables, v, train=False)
  student_fn = lambda v: student.apply(variables, v, train=False)
  low, high = preprocess.valid_range()
  aux = x  # the options' two sign steps of 0.1, clipped to the valid range, written out
  for _ in range(2):
    grad = backward.divergence_input_grad(teacher_fn, student_fn, aux)
    aux = jnp.clip(aux + 0.1 * jnp.sign(grad), low, high)
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


# --- Edge cases and the token path, pinned one by one. ---

def test_tiny_gradients_are_divided_by_at_least_1e_12():
  """l2 steps and the L2 projection divide by max(norm, 1e-12): a zero gradient stays zero
  (no NaN), and a gradient of norm 5e-13 moves by η·g / 1e-12."""
  x = jnp.array([[3e-13, 4e-13], [0.0, 0.0]])
  aux = backward.auxiliary_samples(_identity, _zero, x, step_size=1.0, normalize="l2",
                                   divergence="mse")
  np.testing.assert_allclose(aux, [[0.3, 0.4], [0.0, 0.0]], rtol=1e-5, atol=1e-18)
  aux = backward.auxiliary_samples(_identity, _zero, x, step_size=1.0, normalize="l2",
                                   epsilon=0.0, divergence="mse")
  np.testing.assert_allclose(aux, x, atol=1e-18)  # ε = 0 projects every move back to x


def test_images_are_normalised_per_example_and_keep_their_dtype():
  """Per example over all non-batch axes ([B, H, W, C]); the dtype of x is kept."""
  x = jnp.zeros((2, 2, 2, 1)).at[0, 0, 0, 0].set(3.0).at[0, 1, 1, 0].set(4.0).at[1, 0, 1, 0].set(
      -2.0)
  flat = lambda v: v.reshape(v.shape[0], -1)
  teacher_fn = lambda v: flat(v)  # mse over the 4 "classes": gradient x / 2
  aux = backward.auxiliary_samples(teacher_fn, lambda v: flat(jnp.zeros_like(v)), x,
                                   step_size=1.0, normalize="l2", divergence="mse")
  expected = np.asarray(x).copy()
  expected[0, 0, 0, 0], expected[0, 1, 1, 0], expected[1, 0, 1, 0] = 3.6, 4.8, -3.0
  np.testing.assert_allclose(aux, expected, rtol=1e-6)
  aux16 = backward.auxiliary_samples(teacher_fn, lambda v: flat(jnp.zeros_like(v)),
                                     x.astype(jnp.bfloat16), step_size=0.5, divergence="mse")
  assert aux16.dtype == jnp.bfloat16


@pytest.mark.parametrize("call, error, message", [
    (lambda: backward.per_example_divergence(jnp.zeros((1, 2)), jnp.zeros((1, 2)), "js"),
     ValueError, r"^unknown divergence 'js'; valid names: kl, l1, mse\.$"),
    (lambda: backward.divergence_input_grad(_identity, _zero, jnp.zeros((1, 2)), divergence="js"),
     ValueError, r"^unknown divergence 'js'; valid names: kl, l1, mse\.$"),
    (lambda: backward.divergence_input_grad(_identity, _zero, jnp.zeros((1, 2), jnp.int32)),
     TypeError, r"^x must be floating \(normalised inputs\); got int32\.$"),
    (lambda: backward.auxiliary_samples(_identity, _zero, jnp.zeros((1, 2)), step_size=0.1,
                                        normalize="linf"),
     ValueError, r"^unknown normalize 'linf'; valid names: sign, l2, none\.$"),
    (lambda: backward.auxiliary_samples(_identity, _zero, jnp.zeros((1, 2)), step_size=0.1,
                                        steps=2.0),
     ValueError, r"^steps must be an integer ≥ 1 \(a Python or NumPy int: it fixes shapes\); got 2\.0\.$"),
    (lambda: backward.auxiliary_samples(_identity, _zero, jnp.zeros((1, 2)), step_size=0.1,
                                        steps=0),
     ValueError, r"^steps must be an integer ≥ 1 \(a Python or NumPy int: it fixes shapes\); got 0\.$"),
])
def test_backward_errors(call, error, message):
  with pytest.raises(error, match=message):
    call()


def _token_models(vocab=7, d_teacher=3, d_student=2, classes=3):
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  table_t = jax.random.normal(keys[0], (vocab, d_teacher))
  table_s = jax.random.normal(keys[1], (vocab, d_student))
  w_t = jax.random.normal(keys[2], (d_teacher, classes))
  w_s = jax.random.normal(keys[3], (d_student, classes))
  teacher_fn = lambda e: jnp.tanh(e).sum(1) @ w_t  # [B, L, d] -> [B, classes]
  student_fn = lambda e: jnp.tanh(e).sum(1) @ w_s
  return teacher_fn, student_fn, table_t, table_s


def _explicit_token_ascent(teacher_fn, student_fn, table_t, table_s, ids, mask, *, steps,
                           step_size, normalize, divergence, temperature):
  """The relaxed one-hot X [B, L, V] itself: X ← X + η·g/|g| (or η·g), g = ∇_X D masked."""
  def total(x):
    return jnp.sum(backward.per_example_divergence(teacher_fn(x @ table_t),
                                                   student_fn(x @ table_s), divergence,
                                                   temperature))
  x = jax.nn.one_hot(ids, table_t.shape[0])
  for _ in range(steps):
    g = jax.grad(total)(x) * mask[..., None]
    if normalize == "l2":
      g = g / jnp.sqrt(jnp.sum(g ** 2, axis=(1, 2), keepdims=True))
    x = x + step_size * g
  return x


@pytest.mark.parametrize("steps, step_size, normalize, divergence, temperature", [
    (1, 0.5, "l2", "kl", 2.0), (3, 0.3, "none", "mse", 1.0), (2, 1.5, "l2", "l1", 1.0)])
def test_token_samples_against_the_explicit_ascent(steps, step_size, normalize, divergence,
                                                   temperature):
  teacher_fn, student_fn, table_t, table_s = _token_models()
  ids = jnp.array([[0, 3, 5, 1], [0, 6, 2, 1], [0, 4, 1, 1]])
  mask = jnp.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 0]], bool)
  x = _explicit_token_ascent(teacher_fn, student_fn, table_t, table_s, ids, mask, steps=steps,
                             step_size=step_size, normalize=normalize, divergence=divergence,
                             temperature=temperature)
  kwargs = dict(steps=steps, step_size=step_size, normalize=normalize, divergence=divergence,
                temperature=temperature)
  e_t, e_s = backward.token_auxiliary_embeddings(teacher_fn, student_fn, table_t, table_s, ids,
                                                 mask, **kwargs)
  np.testing.assert_allclose(e_t, x @ table_t, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(e_s, x @ table_s, rtol=1e-4, atol=1e-5)
  # A precomputed teacher Gram matrix gives the same samples; projection adds the tokens.
  *again, projected = backward.token_auxiliary_embeddings(
      teacher_fn, student_fn, table_t, table_s, ids, mask, teacher_gram=table_t.T @ table_t,
      project_to_tokens=True, **kwargs)
  np.testing.assert_allclose(again[0], e_t, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(again[1], e_s, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(projected, jnp.where(mask, jnp.argmax(x, -1), ids))
  assert projected.dtype == ids.dtype
  # The supplied Gram matrix is the one used (not recomputed): a doubled one changes the step.
  doubled, _ = backward.token_auxiliary_embeddings(
      teacher_fn, student_fn, table_t, table_s, ids, mask, teacher_gram=2 * table_t.T @ table_t,
      **kwargs)
  assert not np.allclose(doubled, e_t, rtol=1e-3, atol=1e-4)


def test_token_defaults_and_errors():
  teacher_fn, student_fn, table_t, table_s = _token_models()
  ids = jnp.array([[0, 3, 5, 1]])
  mask = jnp.array([[0, 1, 1, 0]], bool)
  x = _explicit_token_ascent(teacher_fn, student_fn, table_t, table_s, ids, mask, steps=1,
                             step_size=0.4, normalize="l2", divergence="kl", temperature=1.0)
  e_t, _ = backward.token_auxiliary_embeddings(teacher_fn, student_fn, table_t, table_s, ids,
                                               mask, step_size=0.4)  # 1 step, l2, kl, τ = 1
  np.testing.assert_allclose(e_t, x @ table_t, rtol=1e-4, atol=1e-5)
  call = lambda **kw: backward.token_auxiliary_embeddings(
      teacher_fn, student_fn, table_t, table_s, ids, kw.pop("mask", mask), step_size=0.1, **kw)
  with pytest.raises(ValueError, match=r"^unknown token normalize 'sign'; valid names: l2, "
                                       r"none \(sign needs the vocabulary-wide gradient"):
    call(normalize="sign")
  with pytest.raises(ValueError, match=r"^unknown divergence 'js'; valid names: kl, l1, mse\.$"):
    call(divergence="js")
  with pytest.raises(ValueError, match=r"^steps must be an integer ≥ 1 \(a Python or NumPy int: it fixes shapes\); got 0\.$"):
    call(steps=0)
  with pytest.raises(ValueError, match=r"^steps must be an integer ≥ 1 \(a Python or NumPy int: it fixes shapes\); got 1\.0\.$"):
    call(steps=1.0)
  with pytest.raises(ValueError, match=r"^perturb_mask has shape \(1, 3\); input_ids has "
                                       r"\(1, 4\)\.$"):
    call(mask=mask[:, :3])


def test_auxiliary_sample_defaults():
  """One sign step on the KL at τ = 1, no ball, no clip: with a zero teacher (p_T uniform)
  and student logits x = (log 3, 0), p_S = (3/4, 1/4), so the gradient is (1/4, −1/4)."""
  x = jnp.array([[np.log(3.0), 0.0]])
  aux = backward.auxiliary_samples(_zero, _identity, x, step_size=0.1)
  np.testing.assert_allclose(aux, [[np.log(3.0) + 0.1, -0.1]], rtol=1e-6)
  np.testing.assert_allclose(backward.divergence_input_grad(_zero, _identity, x),
                             [[0.25, -0.25]], rtol=1e-5)
  aux = backward.auxiliary_samples(_identity, _zero, jnp.array([[5.0, -7.0]]), step_size=3.0,
                                   divergence="mse")
  np.testing.assert_allclose(aux, [[8.0, -10.0]])  # unclipped, no ball, one step


def test_l2_ball_is_per_example():
  """Two examples, each projected onto its own L2 ball: (3, 4) moves by two unit steps to
  δ = (1.2, 1.6), projected to (0.9, 1.2); (0.6, −0.8) moves to δ = (1.2, −1.6), projected to
  (0.9, −1.2). One norm over the batch would shrink both by 1.5 / sqrt(8) instead."""
  x = jnp.array([[3.0, 4.0], [0.6, -0.8]])
  aux = backward.auxiliary_samples(_identity, _zero, x, steps=2, step_size=1.0, normalize="l2",
                                   epsilon=1.5, divergence="mse")
  np.testing.assert_allclose(aux, [[3.9, 5.2], [1.5, -2.0]], rtol=1e-6)


def test_auxiliary_samples_keep_bfloat16_with_float32_bounds():
  """bfloat16 in, bfloat16 out, whatever the dtypes of the step size, radius and clip bounds
  (a NumPy float32 per-channel range, as the run passes)."""
  teacher = lambda x: jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], -1).astype(jnp.float32)
  student = lambda x: jnp.zeros((x.shape[0], 2)) + jnp.array([1.0, 0.0])
  x = jnp.zeros((2, 3, 3, 2), jnp.bfloat16)
  clip = (np.full((2,), -0.25, np.float32), np.full((2,), 0.25, np.float32))
  for normalize in ("sign", "l2", "none"):
    aux = jax.jit(lambda x: backward.auxiliary_samples(
        teacher, student, x, steps=2, step_size=jnp.float32(0.5), normalize=normalize,
        epsilon=jnp.float32(0.2), clip=clip))(x)
    assert aux.dtype == jnp.bfloat16 and aux.shape == x.shape, normalize
  aux = backward.auxiliary_samples(teacher, student, x, step_size=0.5, clip=clip)
  np.testing.assert_array_equal(np.asarray(aux, np.float32), np.full(x.shape, -0.25))
