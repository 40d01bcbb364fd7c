"""kd_jax.train.optim's role-kd additions, by hand: Adam with L2 weight decay on kernels,
global-norm clipping ahead of everything, and the role-wise cifar100 config that uses them."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax.train import optim


def _one_update(grads, params, **kwargs):
  optimizer, _ = optim.make_optimizer(steps_per_epoch=10, **kwargs)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return {key: np.asarray(value) for key, value in updates.items()}


def test_adam_step_adds_l2_decay_to_kernel_gradients_only():
  """First Adam step: m̂ = g', v̂ = g'², update = −lr·g'/(|g'| + ε), with g' = g + wd·w on
  the kernel (ndim > 1) and g' = g on the bias. Kernel w = [[1, −2]], g = [[0.5, 0.3]],
  wd 0.1: g' = [[0.6, 0.1]]; bias w = [3], g = [0.2]. Planted bugs caught: decoupled
  (AdamW) decay, whose update is −lr·(g/(|g|+ε) + wd·w) = −1e-3·[1.1, ≈0.8], and decay on
  the bias too (g' = 0.5 there)."""
  params = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([3.0])}
  grads = {"kernel": jnp.array([[0.5, 0.3]]), "bias": jnp.array([0.2])}
  updates = _one_update(grads, params, name="adam", learning_rate=1e-3, weight_decay=0.1,
                        adam_eps=1e-5)
  np.testing.assert_allclose(updates["kernel"],
                             [[-1e-3 * 0.6 / (0.6 + 1e-5), -1e-3 * 0.1 / (0.1 + 1e-5)]],
                             rtol=1e-5)
  np.testing.assert_allclose(updates["bias"], [-1e-3 * 0.2 / (0.2 + 1e-5)], rtol=1e-5)


def test_adam_second_step_and_schedule_by_hand():
  """Two steps of the same gradient g = 0.5 (no decay): m₂ = 0.1·0.5 + 0.09·0.5 = 0.095,
  v₂ = 0.001·0.25 + 0.000999·0.25, m̂ = 0.5, v̂ = 0.25: update −lr·0.5/(0.5 + ε) again.
  The lr is × 0.1 from the milestone epoch on (steps_per_epoch 10: step 20 for epoch 2)."""
  optimizer, schedule = optim.make_optimizer(name="adam", learning_rate=1e-3,
                                             steps_per_epoch=10, lr_milestones=(2,),
                                             adam_eps=1e-5)
  params, grads = {"w": jnp.array([1.0])}, {"w": jnp.array([0.5])}
  state = optimizer.init(params)
  for _ in range(2):
    updates, state = optimizer.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], [-1e-3 * 0.5 / (0.5 + 1e-5)], rtol=2e-5)
  assert float(schedule(19)) == pytest.approx(1e-3)
  assert float(schedule(20)) == pytest.approx(1e-4)


def test_global_norm_clipping_comes_first():
  """A gradient [6, 8] (norm 10) clipped at 5 becomes [3, 4]; plain SGD (lr 1, no momentum)
  with weight decay 0.5 on w = [2, 0] then adds 0.5·w = [1, 0]: update −[4, 4]. Planted
  bugs caught: no clipping (−[7, 8]) and clipping after the decay (−[7, 8]·5/√113)."""
  params, grads = {"w": jnp.array([2.0, 0.0])}, {"w": jnp.array([6.0, 8.0])}
  kwargs = dict(name="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.5)
  np.testing.assert_allclose(_one_update(grads, params, clip_global_norm=5.0, **kwargs)["w"],
                             [-4.0, -4.0], rtol=1e-6)
  np.testing.assert_allclose(_one_update(grads, params, **kwargs)["w"], [-7.0, -8.0],
                             rtol=1e-6)
  # Below the bound the gradient passes unchanged; the norm is over the whole tree.
  small = {"w": jnp.array([0.6, 0.8])}
  np.testing.assert_allclose(_one_update(small, params, clip_global_norm=5.0,
                                         **{**kwargs, "weight_decay": 0.0})["w"], [-0.6, -0.8],
                             rtol=1e-6)
  tree = {"a": jnp.array([6.0]), "b": jnp.array([8.0])}
  updates = _one_update(tree, {"a": jnp.zeros(1), "b": jnp.zeros(1)}, clip_global_norm=5.0,
                        **{**kwargs, "weight_decay": 0.0})
  np.testing.assert_allclose([updates["a"][0], updates["b"][0]], [-3.0, -4.0], rtol=1e-6)
  with pytest.raises(ValueError, match="clip_global_norm"):
    optim.make_optimizer(name="sgd", learning_rate=1.0, steps_per_epoch=1, clip_global_norm=0)


def test_existing_optimizers_unchanged_without_clipping():
  """clip_global_norm=None builds the same transformations as before the key existed:
  sgd = add_decayed_weights + sgd, adamw = optax.adamw, on a few steps."""
  params = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([3.0])}
  grads = {"kernel": jnp.array([[0.5, 0.3]]), "bias": jnp.array([0.2])}
  schedule = optim.multistep_schedule(0.1, (1,), 0.1, 2)
  mask = lambda p: {"kernel": True, "bias": False}  # noqa: E731
  warm = optim.warmup_linear_decay_schedule(0.1, 8, 0.25)
  pairs = [
      (dict(name="sgd", learning_rate=0.1, weight_decay=5e-4, lr_milestones=(1,)),
       optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(schedule, momentum=0.9))),
      (dict(name="adamw", learning_rate=0.1, weight_decay=0.01, num_epochs=4,
            warmup_fraction=0.25),
       optax.adamw(warm, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=mask)),
  ]
  for kwargs, reference in pairs:
    ours, _ = optim.make_optimizer(steps_per_epoch=2, **kwargs)
    state, ref_state = ours.init(params), reference.init(params)
    for _ in range(4):
      updates, state = ours.update(grads, state, params)
      expected, ref_state = reference.update(grads, ref_state, params)
      for key in params:
        np.testing.assert_array_equal(updates[key], expected[key], err_msg=kwargs["name"])


def test_rolewise_cifar100_uses_role_kd_optimiser_and_digits_is_unchanged():
  from kd_jax.experiments.configs import rolewise
  from kd_jax.train import setup
  cifar = rolewise.get_config("cifar100")
  opt = cifar.optimizer
  assert (opt.name, opt.learning_rate, opt.weight_decay, opt.adam_eps) == ("adam", 1e-3, 1e-5,
                                                                           1e-5)
  assert tuple(opt.lr_milestones) == (60, 120, 160) and opt.lr_decay == 0.1
  assert opt.clip_global_norm is None and cifar.student_learning_rate == 1e-3
  assert (cifar.num_epochs, cifar.batch_size, cifar.method) == (200, 128, "kd")
  digits = rolewise.get_config("digits")
  assert (digits.optimizer.name, digits.optimizer.learning_rate, digits.optimizer.momentum,
          digits.optimizer.weight_decay, tuple(digits.optimizer.lr_milestones),
          digits.student_learning_rate) == ("sgd", 0.05, 0.9, 5e-4, (20, 25), 0.01)
  for config in (cifar, digits):
    optim.make_optimizer(**config.optimizer.to_dict(), steps_per_epoch=3)
  assert "adam" in optim.OPTIMIZER_NAMES and hasattr(setup, "check_config")
  cifar.optimizer.clip_global_norm = 5.0  # the command-line override still takes a float
  assert cifar.optimizer.clip_global_norm == 5.0
