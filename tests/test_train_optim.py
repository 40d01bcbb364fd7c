"""kd_jax.train.optim by hand: role-kd's additions (Adam with L2 weight decay on kernels,
global-norm clipping ahead of everything, the role-wise cifar100 config that uses them) and
the ImageNet recipes' (cosine and warm-up schedules, weight decay without BatchNorm
parameters and biases, the lr scaled with the global batch)."""

import jax
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
    # The same state tree: checkpoints written before the ImageNet options still restore.
    assert jax.tree.structure(state) == jax.tree.structure(ref_state), kwargs["name"]
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


def test_cosine_schedule_with_warmup_by_hand():
  """lr 0.1, 10 steps an epoch, 10 epochs, 1 warm-up epoch: 0.1·(s + 1)/10 for s < 10, then
  0.1·½(1 + cos(π(s − 10)/90)): 0.1 at step 10, 0.05 at 55, 0 at 100."""
  _, schedule = optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=10,
                                     num_epochs=10, schedule="cosine", warmup_epochs=1)
  for step, expected in [(0, 0.01), (4, 0.05), (9, 0.1), (10, 0.1), (55, 0.05), (100, 0.0),
                         (32, 0.05 * (1 + np.cos(np.pi * 22 / 90)))]:
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6, atol=1e-9, err_msg=step)


def test_step_schedule_with_warmup_keeps_its_milestones():
  """Half an epoch of warm-up (5 steps) before the step schedule, whose milestone (epoch 2 =
  step 20) stays where it was: 0.02, ..., 0.1 over steps 0-4, 0.1 until 19, 0.01 from 20."""
  _, schedule = optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=10,
                                     lr_milestones=(2,), warmup_epochs=0.5)
  for step, expected in [(0, 0.02), (4, 0.1), (5, 0.1), (19, 0.1), (20, 0.01)]:
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6, err_msg=step)


def test_decay_norm_and_bias_false_spares_vectors_for_every_optimizer():
  """sgd, wd 0.1, lr 1, no momentum, first step: kernel −(g + 0.1·w) = −[[0.6, 0.1]], bias −g
  = −[0.2] with decay_norm_and_bias=False, −(0.2 + 0.3) with the default (PyTorch's). adamw's
  default already spares the bias, True decays it (update − lr·wd·w)."""
  params = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([3.0])}
  grads = {"kernel": jnp.array([[0.5, 0.3]]), "bias": jnp.array([0.2])}
  sgd = dict(name="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.1)
  spared = _one_update(grads, params, **sgd, decay_norm_and_bias=False)
  np.testing.assert_allclose(spared["kernel"], [[-0.6, -0.1]], rtol=1e-6)
  np.testing.assert_allclose(spared["bias"], [-0.2], rtol=1e-6)
  np.testing.assert_allclose(_one_update(grads, params, **sgd)["bias"], [-0.5], rtol=1e-6)
  adamw = dict(name="adamw", learning_rate=1e-3, weight_decay=0.1, num_epochs=100)
  default_bias = _one_update(grads, params, **adamw)["bias"]
  decayed_bias = _one_update(grads, params, **adamw, decay_norm_and_bias=True)["bias"]
  lr0 = optim.warmup_linear_decay_schedule(1e-3, 1000, 0.1)(0)
  np.testing.assert_allclose(decayed_bias - default_bias, [-lr0 * 0.1 * 3.0], rtol=1e-5)


def test_lr_scales_with_the_global_batch():
  """lr_reference_batch 256: lr 0.1 at global batch 1024 is 0.4 (Goyal et al.); 0 leaves it."""
  _, scaled = optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=1,
                                   lr_reference_batch=256, global_batch=1024)
  _, plain = optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=1,
                                  global_batch=1024)
  np.testing.assert_allclose([scaled(0), plain(0)], [0.4, 0.1], rtol=1e-6)
  with pytest.raises(ValueError, match="pass global_batch"):
    optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=1,
                         lr_reference_batch=256)


def test_defaults_build_the_optimizers_of_before():
  """No new key set: the schedules are the old ones (sgd step, adamw linear) and cosine
  without num_epochs is refused."""
  _, step = optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=2,
                                 lr_milestones=(1,))
  np.testing.assert_allclose([step(0), step(1), step(2)], [0.1, 0.1, 0.01], rtol=1e-6)
  _, linear = optim.make_optimizer(name="adamw", learning_rate=0.1, steps_per_epoch=2,
                                   num_epochs=4, warmup_fraction=0.25)
  reference = optim.warmup_linear_decay_schedule(0.1, 8, 0.25)
  np.testing.assert_allclose([linear(s) for s in range(8)], [reference(s) for s in range(8)])
  with pytest.raises(ValueError, match="cosine lr schedule needs num_epochs"):
    optim.make_optimizer(name="sgd", learning_rate=0.1, steps_per_epoch=1, schedule="cosine")
