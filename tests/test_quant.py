"""DoReFa quantisation: values against the formulas, straight-through gradients, and the
quantised ResNet-18 initialised from its full-precision teacher.

The DoReFa value tests (DorefaValuesTest) run with and without ``jax.jit`` through
``chex.variants``; the bit-width checks, made on Python values, are tested once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import models, quant


class DorefaValuesTest(chex.TestCase):
  """DoReFa values and straight-through gradients: ``chex.variants`` runs each test twice,
  once under ``jax.jit`` (``bits`` static: it fixes the levels) and once eagerly."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_dorefa_weights_follow_the_formula(self):
    dorefa_weights = self.variant(quant.dorefa_weights, static_argnums=1)
    w = np.array([-1.5, -0.2, 0.0, 0.05, 0.7, 2.0], np.float32)
    t = np.tanh(w)
    unit = t / (2 * np.abs(t).max()) + 0.5
    for bits in (1, 2, 4):
      levels = 2 ** bits - 1
      expected = (2 * np.round(unit * levels) / levels - 1 if bits > 1
                  else np.sign(w) * np.abs(w).mean())
      np.testing.assert_allclose(dorefa_weights(jnp.asarray(w), bits), expected, atol=1e-6)
    q = np.asarray(dorefa_weights(jnp.asarray(w), 2))
    assert np.all(np.min(np.abs(q[:, None] - np.array([-1, -1 / 3, 1 / 3, 1])), axis=1) < 1e-6)
    np.testing.assert_array_equal(dorefa_weights(jnp.asarray(w), 32), w)

  @chex.variants(with_jit=True, without_jit=True)
  def test_dorefa_activations_and_straight_through_gradients(self):
    a = jnp.array([-0.5, 0.0, 0.1, 0.4, 0.6, 0.99, 1.0, 1.7])
    np.testing.assert_allclose(self.variant(quant.dorefa_activations, static_argnums=1)(a, 2),
                               [0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1], atol=1e-6)
    grad = self.variant(jax.grad(lambda x: jnp.sum(quant.dorefa_activations(x, 2))))(a)
    # Identity on the closed clip interval (the bounds included, as TF's clip_by_value).
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 1, 0])
    w = jnp.array([-1.5, -0.2, 0.3, 0.7])
    unrounded = lambda v: jnp.sum(jnp.arange(4.0) * (2 * (jnp.tanh(v) / (
        2 * jnp.max(jnp.abs(jnp.tanh(v)))) + 0.5) - 1))
    np.testing.assert_allclose(
        self.variant(jax.grad(lambda v: jnp.sum(jnp.arange(4.0) * quant.dorefa_weights(v, 2))))(w),
        jax.grad(unrounded)(w), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bit_widths_by_hand(self):
    dorefa_activations, dorefa_weights, quantize_unit = (
        self.variant(fn, static_argnums=1)
        for fn in (quant.dorefa_activations, quant.dorefa_weights, quant.quantize_unit))
    # 1 bit: levels {0, 1} for activations (round), sign(w)·mean|w| for weights.
    a = jnp.array([-0.2, 0.3, 0.5001, 0.8, 1.4])
    np.testing.assert_allclose(dorefa_activations(a, 1), [0, 0, 1, 1, 1], atol=1e-6)
    # 3 bits: 7 levels, round(a·7)/7: 0.3 -> 2/7, 0.5001 -> 4/7, 0.8 -> 6/7.
    np.testing.assert_allclose(dorefa_activations(a, 3), [0, 2 / 7, 4 / 7, 6 / 7, 1], atol=1e-6)
    # 32 bits and more: the input itself, outside [0, 1] too.
    np.testing.assert_array_equal(dorefa_activations(a, 32), a)
    np.testing.assert_array_equal(dorefa_activations(a, 33), a)
    np.testing.assert_array_equal(dorefa_weights(a, 40), a)
    # 31 bits still quantises weights (through tanh), so it is not the identity.
    assert not np.array_equal(np.asarray(dorefa_weights(a, 31)), np.asarray(a))
    np.testing.assert_allclose(quantize_unit(jnp.array([0.1, 0.26, 0.9]), 2), [0.0, 1 / 3, 1.0],
                               atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_bit_weights_pass_the_gradient_straight_through(self):
    w = jnp.array([-1.5, -0.2, 0.3, 0.7])
    grad = self.variant(jax.grad(
        lambda v: jnp.sum(jnp.arange(1.0, 5.0) * quant.dorefa_weights(v, 1))))(w)
    np.testing.assert_allclose(grad, [1.0, 2.0, 3.0, 4.0], rtol=1e-6)  # identity
    grad = self.variant(jax.grad(
        lambda v: jnp.sum(jnp.arange(1.0, 5.0) * quant.quantize_unit(v, 3))))(
            jnp.array([0.1, 0.4, 0.6, 0.95]))
    np.testing.assert_allclose(grad, [1.0, 2.0, 3.0, 4.0], rtol=1e-6)


@pytest.mark.parametrize("bits", [0, -3, 2.0, "4", None])
def test_bad_bit_widths(bits):
  for fn in (quant.dorefa_weights, quant.dorefa_activations):
    with pytest.raises(ValueError, match=rf"^bits must be an integer ≥ 1 \(a Python or NumPy "
                                         rf"int: it fixes shapes\); got {bits!r}\.$"):
      fn(jnp.ones(3), bits)


def test_quantised_resnet18_initialises_from_its_teacher():
  from kd_jax.models import resnet18
  teacher = models.create_model("resnet18_narrow", 10)
  student = models.create_model("resnet18_narrow_w2a2", 10)
  teacher_vars = models.init_variables(teacher, jax.random.PRNGKey(0), (8, 8, 3))
  template = models.init_variables(student, jax.random.PRNGKey(1), (8, 8, 3))
  student_vars = resnet18.init_from(teacher_vars, template)
  # Every variable (weights, biases, BatchNorm scales and statistics) is the teacher's, and
  # a copy of it: the student's own random initialisation is gone.
  teacher_leaves = jax.tree.leaves_with_path(teacher_vars)
  student_leaves = jax.tree.leaves_with_path(student_vars)
  assert [path for path, _ in student_leaves] == [path for path, _ in teacher_leaves]
  for (path, ours), (_, theirs), mine in zip(student_leaves, teacher_leaves,
                                             jax.tree.leaves(template)):
    np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))
    assert ours is not theirs
  kernels = [(ours, mine) for (path, ours), mine in zip(student_leaves, jax.tree.leaves(template))
             if "kernel" in jax.tree_util.keystr(path)]
  assert kernels and all(not np.array_equal(ours, mine) for ours, mine in kernels)
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 3))
  full = teacher.apply(teacher_vars, x, train=False)
  low = student.apply(student_vars, x, train=False)
  assert low.shape == full.shape and not np.allclose(low, full)  # quantisation is active
  grads = jax.grad(lambda p: jnp.sum(student.apply({"params": p, "batch_stats":
                                                     student_vars["batch_stats"]}, x)))(
      student_vars["params"])
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads))  # STE lets every layer learn
  with pytest.raises(ValueError, match="same widths"):
    resnet18.init_from(teacher_vars, models.init_variables(
        models.create_model("resnet18_narrow_w2a2", 5), jax.random.PRNGKey(1), (8, 8, 3)))


def _block_with_silent_convolutions(quantised_shortcut):
  """A 2-bit identity-shortcut block whose bn2 has scale and bias 0, so its conv branch
  adds exactly 0 and the output is relu(shortcut): what the shortcut adds, read off."""
  from kd_jax.models import resnet18
  block = resnet18.QuantBasicBlock(1, 1, weight_bits=2, activation_bits=2,
                                   quantised_shortcut=quantised_shortcut)
  variables = block.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 6, 1)), train=False)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if "bn2" in jax.tree_util.keystr(path) and
      jax.tree_util.keystr(path).endswith(("['scale']", "['bias']")) else v, variables)
  return lambda x: block.apply(variables, x, train=False)


def test_quantised_block_shortcut_adds_the_quantised_input_as_role_kd():
  """role-kd's student block clips and 2-bit quantises its input first and adds that on the
  identity shortcut. By hand, Q_2(clip(a, 0, 1)) = round(3a)/3 on [0, 1]:
  -0.5 -> 0, 0.1 -> 0 (0.3 rounds down), 0.2 -> 1/3 (0.6), 0.45 -> 1/3 (1.35),
  0.9 -> 1 (2.7), 1.7 -> 1 (clipped). Planted bug caught: adding the full-precision input
  (the old form), which gives relu(x) = [0, 0.1, 0.2, 0.45, 0.9, 1.7]."""
  x = jnp.array([-0.5, 0.1, 0.2, 0.45, 0.9, 1.7]).reshape(1, 1, 6, 1)
  roles = _block_with_silent_convolutions(True)
  np.testing.assert_allclose(roles(x).ravel(), [0, 0, 1 / 3, 1 / 3, 1, 1], atol=1e-7)
  # The straight-through gradient of the shortcut: 1 inside the clip interval, 0 outside
  # (and 0 at 0.1, whose quantised 0 meets the block's final ReLU at its kink).
  np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(roles(v)))(x).ravel(),
                                [0, 0, 1, 1, 1, 0])
  old = _block_with_silent_convolutions(False)  # the option: full-precision shortcut
  np.testing.assert_allclose(old(x).ravel(), [0, 0.1, 0.2, 0.45, 0.9, 1.7], atol=1e-7)
  np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(old(v)))(x).ravel(),
                                [0, 1, 1, 1, 1, 1])


def test_shortcut_option_leaves_full_precision_models_and_the_tree_alone():
  """Full precision: the option changes nothing (bit-identical logits, same tree); 2-bit:
  the names pick the two forms, which differ, on one parameter tree."""
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
  fp = models.create_model("resnet18_narrow", 10)
  variables = models.init_variables(fp, jax.random.PRNGKey(0), (8, 8, 3))
  np.testing.assert_array_equal(
      fp.apply(variables, x), fp.clone(quantised_shortcut=False).apply(variables, x))
  roles = models.create_model("resnet18_narrow_w2a2", 10)
  old = models.create_model("resnet18_narrow_w2a2_fp_shortcut", 10)
  assert roles.quantised_shortcut and not old.quantised_shortcut
  assert jax.tree.structure(models.init_variables(old, jax.random.PRNGKey(0), (8, 8, 3))) == \
      jax.tree.structure(variables)
  assert not np.allclose(roles.apply(variables, x), old.apply(variables, x))
