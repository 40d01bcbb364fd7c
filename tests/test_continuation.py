"""Continuation-KD / Annealing-KD schedules and hinge against the formulas.

The value tests (ScheduleValuesTest) run with and without ``jax.jit`` through
``chex.variants``; the argument checks, made on Python values, are tested once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from kd_jax import continuation, losses
from kd_jax import methods
from kd_jax.methods import continuation_kd


class ScheduleValuesTest(chex.TestCase):
  """The schedules and the hinge by hand: ``chex.variants`` runs each test twice, once with
  the functions under ``jax.jit`` (epochs, lengths and φ traced: the jax.numpy branch) and once
  eagerly (Python numbers in and out, arguments checked)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_temperature_steps_down_and_never_below_one(self):
    temperature_at = self.variant(continuation.temperature_at)
    # CIFAR protocol: 200 epochs, T_max 20 -> k = 10.
    temps = [temperature_at(e, 200, 20) for e in range(1, 201)]
    chex.assert_type(temps, int)
    assert temps[0] == 20 and temps[8] == 20  # epochs 1..9
    assert temps[9] == 19  # epoch 10 = floor(10 / 10) = 1 step down
    assert temps[188] == 2 and temps[189] == 1  # epoch 190 reaches 1
    assert temps[-1] == 1  # the printed algorithm would give 0 at epoch 200
    assert min(temps) == 1 and all(a >= b for a, b in zip(temps, temps[1:]))
    # Fewer epochs than T_max: one step per epoch, still clamped.
    assert [temperature_at(e, 3, 10) for e in (1, 2, 3)] == [9, 8, 7]

  @chex.variants(with_jit=True, without_jit=True)
  def test_phi_range_and_boundaries(self):
    phi, temperature_at = self.variant(continuation.phi), self.variant(continuation.temperature_at)
    assert phi(20, 20) == pytest.approx(1 / 20)
    assert phi(1, 20) == 1.0
    values = [phi(temperature_at(e, 200, 20), 20) for e in range(1, 201)]
    assert all(1 / 20 <= v <= 1 for v in values)

  @chex.variants(with_jit=True, without_jit=True)
  def test_psi_schedules_at_boundaries(self):
    psi_linear, psi_piecewise, psi_step = map(self.variant, (
        continuation.psi_linear, continuation.psi_piecewise, continuation.psi_step))
    assert psi_linear(1, 150) == pytest.approx(1 / 150)
    assert psi_linear(150, 150) == 1.0 and psi_linear(200, 150) == 1.0
    assert psi_piecewise(20) == pytest.approx(0.5)  # GLUE: i/40 up to 20
    assert psi_piecewise(21) == 1.0
    assert psi_step(10, 10) == 0.0 and psi_step(11, 10) == 1.0

  @chex.variants(with_jit=True, without_jit=True)
  def test_annealing_switches_when_temperature_reaches_one(self):
    temperature_at = self.variant(continuation.temperature_at)
    switch = self.variant(continuation.annealing_switch_epoch)(200, 20)
    assert temperature_at(switch, 200, 20) == 1
    assert temperature_at(switch - 1, 200, 20) == 2

  @chex.variants(with_jit=True, without_jit=True)
  def test_hinge_matches_numpy(self):
    hinge = self.variant(losses.continuation_hinge)
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 6, 5)).astype(np.float32) * 2
    for phi, margin in ((0.25, 0.0), (1.0, 0.5), (0.5, 100.0)):
      expected = np.maximum(0, ((s - phi * t) ** 2).sum(-1) - margin * phi)
      np.testing.assert_allclose(hinge(s, t, phi, margin), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(hinge(s, t, 0.5, 100.0)) == 0)  # all gaps hidden

  @chex.variants(with_jit=True, without_jit=True)
  def test_hinge_hand_computed(self):
    # s = (1, 3), t = (2, 2), phi = 0.5: gaps (0, 2), summed square 4; margin 1 -> 4 - 0.5.
    value = self.variant(losses.continuation_hinge)(jnp.array([[1.0, 3.0]]),
                                                    jnp.array([[2.0, 2.0]]), 0.5, 1.0)
    assert float(value[0]) == pytest.approx(3.5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      (1, 200, 20, 20), (9, 200, 20, 20), (10, 200, 20, 19), (189, 200, 20, 2),
      (190, 200, 20, 1), (200, 200, 20, 1),
      # k = floor(10 / 3) = 3: T = 3 − floor(epoch / 3), at least 1.
      (2, 10, 3, 3), (3, 10, 3, 2), (5, 10, 3, 2), (6, 10, 3, 1), (10, 10, 3, 1),
      # fewer epochs than t_max: k = 1.
      (1, 3, 10, 9), (3, 3, 10, 7),
      # t_max = 1 and num_epochs = 1 are valid.
      (1, 1, 1, 1), (5, 10, 1, 1), (1, 1, 2, 1),
  )
  def test_temperature_at_by_hand(self, epoch, num_epochs, t_max, expected):
    assert self.variant(continuation.temperature_at)(epoch, num_epochs, t_max) == expected

  @chex.variants(with_jit=True, without_jit=True)
  def test_phi_and_psi_by_hand(self):
    phi, psi_linear, psi_piecewise, psi_step = map(self.variant, (
        continuation.phi, continuation.psi_linear, continuation.psi_piecewise,
        continuation.psi_step))
    psi_at = self.variant(continuation.psi_at, static_argnums=0)
    assert phi(1, 1) == 1.0
    assert phi(10, 20) == pytest.approx(0.55)  # 1 − 9/20
    assert phi(3, 4) == pytest.approx(0.5)  # 1 − 2/4
    assert psi_linear(75, 150) == pytest.approx(0.5)
    assert psi_linear(1, 1) == 1.0
    assert psi_piecewise(10) == pytest.approx(0.25)  # default ramp 40
    assert psi_piecewise(1) == pytest.approx(1 / 40)
    assert psi_piecewise(5, 10, 8) == pytest.approx(0.5)
    assert psi_piecewise(8, 10, 8) == pytest.approx(0.8)  # switch epoch itself
    assert psi_piecewise(9, 10, 8) == 1.0
    assert psi_step(1, 0) == 1.0 and psi_step(1, 1) == 0.0
    assert psi_at("linear", 30, ramp_epochs=60, switch_epoch=5) == pytest.approx(0.5)
    assert psi_at("piecewise", 30, ramp_epochs=60, switch_epoch=40) == pytest.approx(0.5)
    assert psi_at("piecewise", 41, ramp_epochs=60, switch_epoch=40) == 1.0
    assert psi_at("step", 5, ramp_epochs=60, switch_epoch=5) == 0.0
    assert psi_at("step", 6, ramp_epochs=60, switch_epoch=5) == 1.0

  @chex.variants(with_jit=True, without_jit=True)
  def test_schedule_values_and_annealing_switch_by_hand(self):
    schedule_values = self.variant(continuation.schedule_values, static_argnums=3)
    annealing_switch_epoch = self.variant(continuation.annealing_switch_epoch)
    # Epoch 10 of 200, t_max 20: T = 19, phi = 1 − 18/20 = 0.1; linear psi over 150: 1/15.
    values = schedule_values(10, 200, 20, "linear", ramp_epochs=150, switch_epoch=0)
    assert set(values) == {"continuation_temperature", "phi", "psi"}
    assert values["continuation_temperature"] == 19.0
    assert values["phi"] == pytest.approx(0.1) and values["psi"] == pytest.approx(1 / 15)
    values = schedule_values(4, 10, 3, "step", ramp_epochs=1, switch_epoch=3)
    chex.assert_trees_all_close(values, {"continuation_temperature": 2.0, "phi": 2 / 3,
                                         "psi": 1.0})
    values = schedule_values(4, 10, 3, "piecewise", ramp_epochs=8, switch_epoch=5)
    assert values["psi"] == pytest.approx(0.5)
    assert annealing_switch_epoch(200, 20) == 190  # ceil(19 · 10)
    assert annealing_switch_epoch(10, 3) == 6      # k = 3: ceil(2 · 3)
    assert annealing_switch_epoch(3, 10) == 3      # k = 1: ceil(9), capped at 3
    assert annealing_switch_epoch(5, 1) == 0       # t_max 1: T is 1 from the start
    assert annealing_switch_epoch(10, 10) == 9     # k = 1: ceil(9), under the cap
    assert annealing_switch_epoch(15, 10) == 9     # k = floor(15 / 10) = 1


# --- Argument checks on Python values, and the methods built on the schedules. ---

def test_schedule_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"^epochs count from 1; got 0\.$"):
    continuation.temperature_at(0, 10, 2)
  with pytest.raises(ValueError, match=r"^t_max and num_epochs must be ≥ 1; got 0 and 10\.$"):
    continuation.temperature_at(1, 10, 0)
  with pytest.raises(ValueError, match=r"^t_max and num_epochs must be ≥ 1; got 2 and 0\.$"):
    continuation.temperature_at(1, 0, 2)
  with pytest.raises(ValueError, match=r"^temperature must lie in \[1, t_max=20\]; got 21\.$"):
    continuation.phi(21, 20)
  with pytest.raises(ValueError, match=r"^temperature must lie in \[1, t_max=20\]; got 0\.5\.$"):
    continuation.phi(0.5, 20)
  with pytest.raises(ValueError, match=r"^temperature must lie in \[1, t_max=20\]; got 0\.$"):
    continuation.phi(0, 20)
  for psi in (lambda: continuation.psi_linear(0, 10), lambda: continuation.psi_piecewise(0),
              lambda: continuation.psi_step(0, 3)):
    with pytest.raises(ValueError, match=r"^epochs count from 1; got 0\.$"):
      psi()
  with pytest.raises(ValueError, match=r"^unknown psi schedule 'cosine'; valid names: "
                                       r"linear, piecewise, step\.$"):
    continuation.psi_at("cosine", 1, ramp_epochs=1, switch_epoch=1)


def test_hinge_bad_input():
  with pytest.raises(ValueError, match="margin"):
    losses.continuation_hinge(jnp.zeros((1, 2)), jnp.zeros((1, 2)), 0.5, -1.0)
  with pytest.raises(ValueError, match="same shape"):
    losses.continuation_hinge(jnp.zeros((1, 2)), jnp.zeros((1, 3)), 0.5, 0.0)


def test_schedules_run_under_jit_and_vmap_with_the_host_values():
  """A traced epoch (jit, vmap over epochs) gives the values the host computes."""
  epochs = np.arange(1, 41)

  @jax.jit
  @jax.vmap
  def traced(epoch):
    t = continuation.temperature_at(epoch, 30, 10)
    return {"temperature": t, "phi": continuation.phi(t, 10),
            "linear": continuation.psi_linear(epoch, 22),
            "piecewise": continuation.psi_piecewise(epoch, 40, 20),
            "step": continuation.psi_step(epoch, 27),
            "values": continuation.schedule_values(epoch, 30, 10, "piecewise", ramp_epochs=40,
                                                   switch_epoch=20)["psi"]}

  got = traced(jnp.asarray(epochs))
  epochs = [int(epoch) for epoch in epochs]
  temperatures = [continuation.temperature_at(epoch, 30, 10) for epoch in epochs]
  piecewise = [continuation.psi_piecewise(epoch, 40, 20) for epoch in epochs]
  chex.assert_trees_all_equal(
      {"temperature": got["temperature"], "step": got["step"]},
      {"temperature": np.array(temperatures),
       "step": np.array([continuation.psi_step(epoch, 27) for epoch in epochs])})
  chex.assert_trees_all_close(
      {key: got[key] for key in ("phi", "linear", "piecewise", "values")},
      {"phi": np.array([continuation.phi(t, 10) for t in temperatures]),
       "linear": np.array([continuation.psi_linear(epoch, 22) for epoch in epochs]),
       "piecewise": np.array(piecewise), "values": np.array(piecewise)}, rtol=1e-6)
  for num_epochs, t_max in ((200, 20), (10, 3), (3, 10), (5, 1), (15, 10)):
    assert int(jax.jit(continuation.annealing_switch_epoch)(num_epochs, t_max)) == \
        continuation.annealing_switch_epoch(num_epochs, t_max)


def test_margin_zero_with_step_psi_is_annealing_kd():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(2, 8, 10)).astype(np.float32)
  labels = jnp.arange(8) % 10
  anneal = methods.get_method("annealing_kd", reduction="mean").objective
  # Phase 1 (psi = 0): Annealing-KD's official loss with reduction="mean", the batch- and
  # class-mean squared error to phi·z_T; by default the class sum (10 times more here).
  hparams = {"phi": 0.3, "psi": 0.0, "margin": 5.0}  # the margin is ignored
  got = jnp.mean(anneal(s, t, labels, hparams))
  assert float(got) == pytest.approx(float(np.mean((s - 0.3 * t) ** 2)), rel=1e-6)
  summed = jnp.mean(methods.METHODS["annealing_kd"].objective(s, t, labels, hparams))
  assert float(summed) == pytest.approx(10 * float(np.mean((s - 0.3 * t) ** 2)), rel=1e-6)
  # Phase 2 (psi = 1): cross-entropy only.
  got = anneal(s, t, labels, {"phi": 1.0, "psi": 1.0, "margin": 0.0})
  np.testing.assert_allclose(got, losses.cross_entropy(s, labels), rtol=1e-6)
  # And the continuation objective with m = 0 agrees with it.
  cont = methods.METHODS["continuation_kd"].objective
  np.testing.assert_allclose(cont(s, t, labels, {"phi": 0.3, "psi": 0.0, "margin": 0.0}),
                             methods.METHODS["annealing_kd"].objective(s, t, labels, hparams),
                             rtol=1e-6)


def test_methods_compose_with_views():
  method = methods.get_method("continuation_kd", "cutmix_pick")
  assert method.view == "cutmix_pick" and method.name == "continuation_kd+cutmix_pick"
  assert method.objective is continuation_kd.continuation_objective
  assert method.schedule is continuation_kd.continuation_values
  assert methods.get_method("annealing_kd").objective is continuation_kd.annealing_objective
  assert methods.get_method("backward_kd", "none").view is None


def test_hinge_reduction_reaches_the_objective_from_the_config_block():
  """The objectives sum over classes by default (the paper's squared norm);
  continuation.reduction reaches them from the config; other methods ignore the option."""
  from kd_jax.train import setup
  from tests.conftest import tiny_config
  s, t = jnp.array([[2.0, 0.0, 1.0]]), jnp.array([[2.0, 2.0, 0.0]])  # gap² (1, 1, 1) at φ ½
  hp = {"phi": 0.5, "psi": 0.0, "margin": 0.4}
  labels = jnp.array([0])
  for name, margin in (("continuation_kd", 0.2), ("annealing_kd", 0.0)):
    mean = methods.get_method(name, reduction="mean").objective(s, t, labels, hp)
    total = methods.get_method(name).objective(s, t, labels, hp)  # the sum by default
    np.testing.assert_allclose(mean, [1.0 - margin], rtol=1e-6)
    np.testing.assert_allclose(total, [3.0 - margin], rtol=1e-6)
    config = tiny_config("kd", method=name, **{"continuation.reduction": "mean"})
    np.testing.assert_allclose(setup.method_of(config).objective(s, t, labels, hp), mean)
  # The config's method reads its own block; KD has no reduction and refuses one.
  assert setup.method_of(tiny_config("kd")).objective is methods.METHODS["kd"].objective
  with pytest.raises(ValueError, match="method 'kd' takes no objective option 'reduction'"):
    methods.get_method("kd", reduction="sum")
