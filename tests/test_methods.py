"""The method layer (kd_jax.methods) against values worked out by hand.

Small pure checks: the registry and its errors, method composition, the per-epoch values,
the view loss, the fields of every view and the option handling of every view maker. Tiny
arrays and stand-in models (linear maps), so the whole file runs in seconds; written to kill
the mutants of kd_jax/experiments/mutation (results/mutation.md).
"""

import dataclasses
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import augment, backward, continuation, losses, methods, policies
from kd_jax.methods import backward_kd, base, continuation_kd, rolewise, strong_aug, vanilla

ALL_METHODS = ("annealing_kd, backward_kd, ce, continuation_kd, dkd, kd, kd_cutmix, "
               "kd_cutmix_pick, kd_mixup, mlkd")


def _softmax(z, t=1.0):
  z = np.asarray(z, np.float64) / t
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kd_kl(s, t, tau):
  p, q = _softmax(t, tau), _softmax(s, tau)
  return tau ** 2 * np.sum(p * (np.log(p) - np.log(q)), -1)


def _ce(s, y):
  return -np.log(_softmax(s)[np.arange(len(y)), y])


# --- The registry. ---

def test_get_method_errors_list_the_valid_names():
  with pytest.raises(ValueError, match=re.escape(
      f"unknown method 'kdd'; valid names: {ALL_METHODS}.") + "$"):
    methods.get_method("kdd")
  with pytest.raises(ValueError, match=re.escape(
      "unknown view 'cutmixup'; valid names: none, identity, flip, crop_flip, cutout, "
      "autoaugment, randaugment, dual, mixup, cutmix, cutmix_pick, backward.") + "$"):
    methods.get_method("kd", "cutmixup")


def test_get_method_composes_a_view_and_keeps_the_rest():
  for view in (None, ""):  # no view: the registered method itself
    assert methods.get_method("kd_mixup", view) is methods.METHODS["kd_mixup"]
  method = methods.get_method("continuation_kd", "mixup")
  assert method == dataclasses.replace(methods.METHODS["continuation_kd"],
                                       name="continuation_kd+mixup", view="mixup")
  method = methods.get_method("kd_cutmix", "none")
  assert method.name == "kd_cutmix+none" and method.view is None
  assert method.objective is vanilla.kd_objective
  method = methods.get_method("ce", "backward")
  assert (method.view, method.uses_teacher_on_x, method.needs_teacher) == ("backward", False,
                                                                            True)
  assert not methods.get_method("ce").needs_teacher


def test_get_method_fixes_the_objective_options_it_takes():
  method = methods.get_method("continuation_kd", "mixup", reduction="sum")
  assert (method.name, method.view) == ("continuation_kd+mixup", "mixup")
  assert method.objective.func is continuation_kd.continuation_objective
  assert method.objective.keywords == {"reduction": "sum"}
  assert methods.get_method("annealing_kd", reduction="mean").objective.keywords == {
      "reduction": "mean"}
  # Hinge 0.75·max(0, Σ_c (z_S − 0.5·z_T)² − 0.4·0.5): the sum over the three classes.
  hp = {"phi": 0.5, "psi": 0.25, "margin": 0.4}
  hinge = np.maximum(0.0, np.sum((S - 0.5 * T) ** 2, -1) - 0.2)
  np.testing.assert_allclose(method.objective(S, T, Y, hp), 0.25 * _ce(S, Y) + 0.75 * hinge,
                             rtol=1e-5)
  # No options: the registered method itself.
  assert methods.get_method("continuation_kd") is methods.METHODS["continuation_kd"]


def test_options_a_method_does_not_take_raise_naming_the_valid_ones():
  with pytest.raises(ValueError, match=re.escape(
      "method 'continuation_kd' takes no objective option 'margin', 't_max'; valid options: "
      "reduction.") + "$"):
    methods.get_method("continuation_kd", t_max=4, margin=0.5)
  with pytest.raises(ValueError, match=re.escape(
      "method 'kd' takes no objective option 'reductoin'; valid options: none.") + "$"):
    methods.get_method("kd", reductoin="sum")
  # A whole config block is split by the method's declared options, and a misspelt key raises.
  block = dict(t_max=4, margin=0.5, psi_schedule="linear", reduction="sum",
               annealing_phase2_epochs=0)
  parts = methods.METHODS["continuation_kd"].split_block(block)
  assert parts == methods.BlockOptions({"reduction": "sum"},
                                       dict(t_max=4, margin=0.5, psi_schedule="linear"), {})
  parts = methods.METHODS["annealing_kd"].split_block(block)  # margin, ψ ramp: not read
  assert parts == methods.BlockOptions({"reduction": "sum"},
                                       dict(t_max=4, annealing_phase2_epochs=0),
                                       dict(annealing_phase2_epochs=0))
  with pytest.raises(ValueError, match=re.escape(
      "continuation_kd takes no continuation option 'tmax'; valid options: "
      "annealing_phase2_epochs, annealing_phase2_init, margin, psi_ramp_epochs, "
      "psi_schedule, psi_switch_epoch, reduction, t_max.") + "$"):
    methods.METHODS["continuation_kd"].split_block({"tmax": 4})
  with pytest.raises(ValueError, match="takes no continuation option 'psi_ramp'"):
    methods.hparams_at(methods.get_method("continuation_kd"), 1, 10, kd={},
                       schedule_options={"psi_ramp": 3})


def test_make_view_names_modalities_and_takes_only_its_own_options():
  assert methods.make_view(None) is None and methods.make_view("none", "text") is None
  with pytest.raises(ValueError, match=re.escape(
      "unknown image view 'cutmixup'; valid names: identity, flip, crop_flip, cutout, "
      "autoaugment, randaugment, dual, mixup, cutmix, cutmix_pick, backward.") + "$"):
    methods.make_view("cutmixup")  # the modality defaults to "image"
  with pytest.raises(ValueError, match=re.escape(
      "unknown text view 'mixup'; valid names: backward.") + "$"):
    methods.make_view("mixup", "text")
  with pytest.raises(ValueError, match=re.escape(
      "unknown modality 'audio'; valid: image, text.") + "$"):
    methods.make_view("mixup", "audio")
  maker = methods.make_view("mixup", alpha=0.5, label_mixing=True)
  assert (maker.name, maker.label_mixing, maker.make.func) == ("mixup", True,
                                                                strong_aug.mixup_view)
  assert maker.make.keywords == {"alpha": 0.5}
  maker = methods.make_view("cutmix_pick", "image", alpha=0.5, pool_rounds=3, score="kl",
                            n_pick=4)
  assert maker.make.keywords == dict(alpha=0.5, pool_rounds=3, score="kl", n_pick=4)
  maker = methods.make_view("backward", steps=2, step_size=0.2, epsilon=0.3, divergence="mse")
  assert maker.make.keywords == backward_kd.sample_options(steps=2, step_size=0.2,
                                                           epsilon=0.3, divergence="mse")
  maker = methods.make_view("backward", "text", steps=2, special_ids=(7,))
  assert maker.make.keywords["special_ids"] == (7,) and maker.make.keywords["steps"] == 2
  # The example: a misspelt option and a misspelt score both raise, naming the valid.
  with pytest.raises(ValueError, match=re.escape(
      "the cutmix_pick view takes no option 'pool_round', 'scroe'; valid options: alpha, "
      "pool_rounds, score, n_pick, label_mixing.") + "$"):
    methods.make_view("cutmix_pick", pool_round=5, scroe="kl")
  with pytest.raises(ValueError, match="takes no option 'special_ids'"):
    methods.make_view("backward", special_ids=(7,))
  with pytest.raises(ValueError, match="token-level backward KD takes no epsilon"):
    methods.make_view("backward", "text", epsilon=0.3)
  # input_range is context: given to the views on pixels, unused by the others.
  assert methods.make_view("mixup", input_range=(0.0, 1.0)).name == "mixup"
  assert methods.make_view("crop_flip", input_range=(0.0, 1.0)).make.keywords[
      "input_range"] == (0.0, 1.0)
  assert methods.view_options("flip") == ("per_image",)


def test_dkd_method_is_ce_plus_the_warmed_up_decoupled_term():
  from kd_jax.methods import dkd
  method = methods.get_method("dkd")
  block = dict(ce_weight=1.0, alpha=2.0, beta=8.0, warmup_epochs=20)
  hp = methods.hparams_at(method, 5, 240, kd={"temperature": 2.0}, schedule_options=block)
  assert (hp["ce_weight"], hp["dkd_alpha"], hp["dkd_beta"], hp["dkd_warmup"]) == (
      1.0, 2.0, 8.0, 0.25)
  expected = _ce(S, Y) + 0.25 * np.asarray(
      losses.dkd(S, T, Y, alpha=2.0, beta=8.0, temperature=2.0))
  np.testing.assert_allclose(method.objective(S, T, Y, hp), expected, rtol=1e-5)
  # After the warm-up the whole term; no warm-up at all with warmup_epochs = 0.
  assert dkd.dkd_values(30, 240, warmup_epochs=20)["dkd_warmup"] == 1.0
  assert dkd.dkd_values(1, 240, warmup_epochs=0)["dkd_warmup"] == 1.0
  with pytest.raises(ValueError, match="dkd takes no dkd option 'warmup'; valid options: "
                     "alpha, beta, ce_weight, warmup_epochs."):
    methods.hparams_at(method, 1, 10, kd={}, schedule_options={"warmup": 5})
  with pytest.raises(ValueError, match="dkd beta must be ≥ 0"):
    dkd.dkd_values(1, 10, beta=-1.0)
  with pytest.raises(ValueError, match="needs classes"):
    method.objective(S, T, Y, hp, regression=True)



def test_standardize_reaches_every_kd_term_through_hparams():
  """config.kd.standardize → hparams["standardize"] (absent when off) → the KD objective on
  x, the view's KD term on x' and DKD all compare z-scored logits."""
  plain = methods.hparams_at(methods.METHODS["kd"], 1, 10, kd={"temperature": 2.0})
  assert "standardize" not in plain  # the plain run compiles the plain step
  hp = methods.hparams_at(methods.METHODS["kd"], 1, 10,
                          kd={"temperature": 2.0, "kd_weight": 9.0, "standardize": True})
  assert hp["standardize"] == 1.0
  kd_ls = np.asarray(losses.kd_kl(S, T, 2.0, standardize=True))
  np.testing.assert_allclose(methods.METHODS["kd"].objective(S, T, Y, hp),
                             0.1 * _ce(S, Y) + 9.0 * kd_ls, rtol=1e-5)
  view = base.View(S, T, Y, Y, np.ones(len(Y), np.float32))
  np.testing.assert_allclose(methods.make_view("mixup").loss(S, view, hp), 9.0 * kd_ls.mean(),
                             rtol=1e-5)
  dkd_hp = methods.hparams_at(methods.METHODS["dkd"], 30, 240,
                              kd={"temperature": 2.0, "standardize": True})
  np.testing.assert_allclose(
      methods.METHODS["dkd"].objective(S, T, Y, dkd_hp),
      _ce(S, Y) + np.asarray(losses.dkd(S, T, Y, alpha=1.0, beta=8.0, temperature=2.0,
                                        standardize=True)), rtol=1e-5)
  with pytest.raises(ValueError, match="kd standardize must be True or False; got 'yes'"):
    vanilla.kd_values(standardize="yes")


def test_mlkd_method_is_ce_plus_the_multi_level_terms_on_its_dual_view():
  method = methods.get_method("mlkd")
  assert (method.view, method.schedule_block) == ("dual", "mlkd")
  hp = methods.hparams_at(method, 1, 10, kd={"temperature": 4.0, "ce_weight": 0.1,
                                              "kd_weight": 0.9})
  expected = 0.1 * _ce(S, Y) + 0.9 * np.asarray(
      losses.mlkd(S, T, (4.0, 3.0, 5.0, 2.0, 6.0), mask="fraction"))
  np.testing.assert_allclose(method.objective(S, T, Y, hp), expected, rtol=1e-5)
  # The block's options are the objective's (static: get_method binds them).
  split = method.split_block({"extra_temperatures": (2.0,), "mask": "none"})
  narrowed = methods.get_method("mlkd", "none", **split.objective)
  assert narrowed.view is None
  np.testing.assert_allclose(
      narrowed.objective(S, T, Y, hp),
      0.1 * _ce(S, Y) + 0.9 * np.asarray(losses.mlkd(S, T, (4.0, 2.0), mask="none")), rtol=1e-5)
  with pytest.raises(ValueError, match="mlkd takes no mlkd option 'temperatures'; valid "
                     "options: correlation_weight, extra_temperatures, mask."):
    method.split_block({"temperatures": (3.0,)})
  from kd_jax.methods import mlkd
  with pytest.raises(ValueError, match="extra_temperatures must be numbers > 0"):
    mlkd.check_options(extra_temperatures=(3.0, 0.0))
  with pytest.raises(ValueError, match="needs classes"):
    method.objective(S, T, Y, hp, regression=True)


# --- Per-epoch values. ---

def test_hparams_at_without_a_schedule():
  kd = methods.get_method("kd")
  assert methods.hparams_at(kd, 3, 10, kd={}) == {
      "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "view_weight": 1.0,
      "phi": 1.0, "psi": 1.0, "margin": 0.0}
  values = methods.hparams_at(methods.get_method("kd_mixup"), 1, 1,
                              kd={"temperature": 2, "ce_weight": 0.5, "kd_weight": 0.25},
                              view_weight=3, schedule_options={"t_max": 5})
  assert values == {"temperature": 2.0, "ce_weight": 0.5, "kd_weight": 0.25,
                    "view_weight": 3.0, "phi": 1.0, "psi": 1.0, "margin": 0.0}
  assert all(type(v) is float for v in values.values())


def test_hparams_at_with_the_continuation_and_annealing_schedules():
  # t_max 4 over 8 epochs: k = 2, T = 4 − floor(epoch / 2) ≥ 1, φ = 1 − (T − 1)/4.
  method = methods.get_method("continuation_kd")
  values = methods.hparams_at(method, 3, 8, kd={"temperature": 3.0}, schedule_options=dict(
      t_max=4, margin=0.5, psi_schedule="linear", psi_ramp_epochs=6))
  assert values == {"temperature": 3.0, "ce_weight": 0.1, "kd_weight": 0.9,
                    "view_weight": 1.0, "continuation_temperature": 3.0, "phi": 0.5,
                    "psi": 0.5, "margin": 0.5}
  # Defaults: t_max 20, margin 3.0 (the summed hinge's), linear ψ over 150 epochs.
  values = methods.hparams_at(method, 30, 200, kd={})
  assert (values["continuation_temperature"], values["phi"], values["psi"],
          values["margin"]) == (17.0, 1 - 16 / 20, 30 / 150, 3.0)
  # Annealing-KD: margin 0, ψ = 0 until T reaches 1 (epoch 6 of 8 with t_max 4), then 1;
  # the continuation block's other keys are ignored.
  method = methods.get_method("annealing_kd")
  options = dict(t_max=4, margin=0.5, psi_schedule="linear", psi_ramp_epochs=6)
  for epoch, (t, phi, psi) in {1: (4.0, 0.25, 0.0), 6: (1.0, 1.0, 0.0),
                               7: (1.0, 1.0, 1.0)}.items():
    values = methods.hparams_at(method, epoch, 8, kd={}, schedule_options=options)
    assert (values["continuation_temperature"], values["phi"], values["psi"],
            values["margin"]) == (t, phi, psi, 0.0)
  # With no options: t_max 20 over 200 epochs, switch at epoch (20 − 1)·10 = 190.
  assert methods.hparams_at(method, 190, 200, kd={})["psi"] == 0.0
  assert methods.hparams_at(method, 191, 200, kd={})["psi"] == 1.0


def test_continuation_values_by_hand():
  assert continuation_kd.continuation_values(1, 200) == {
      "continuation_temperature": 20.0, "phi": 1 - 19 / 20, "psi": 1 / 150, "margin": 3.0}
  values = continuation_kd.continuation_values(4, 10, t_max=5, margin=2, psi_ramp_epochs=8)
  assert values == {"continuation_temperature": 3.0, "phi": 0.6, "psi": 0.5, "margin": 2.0}
  assert type(values["margin"]) is float
  # Piecewise ψ: epoch / ramp up to the switch epoch, then 1; no switch epoch means 0.
  piecewise = lambda epoch, switch: continuation_kd.continuation_values(
      epoch, 10, psi_schedule="piecewise", psi_ramp_epochs=10, psi_switch_epoch=switch)["psi"]
  assert (piecewise(3, 5), piecewise(5, 5), piecewise(6, 5)) == (0.3, 0.5, 1.0)
  assert piecewise(1, None) == 1.0
  step = continuation_kd.continuation_values(1, 10, psi_schedule="step")
  assert step["psi"] == 1.0  # switch epoch 0: labels only from epoch 1


def test_continuation_library_defaults_are_the_config_schemas():
  """A library caller without a config gets the values a configured run gets (the margin
  on the summed scale, with the summed hinge)."""
  from kd_jax.experiments.configs import common
  block = common.base_config().continuation
  schedule = inspect.signature(continuation_kd.continuation_values).parameters
  for key in ("t_max", "margin", "psi_schedule", "psi_ramp_epochs"):
    assert schedule[key].default == block[key], key
  for objective in (continuation_kd.continuation_objective,
                    continuation_kd.annealing_objective, losses.continuation_hinge):
    assert inspect.signature(objective).parameters["reduction"].default == block.reduction


def test_annealing_values_by_hand():
  assert continuation_kd.annealing_values(1, 200) == {
      "continuation_temperature": 20.0, "phi": 1 - 19 / 20, "psi": 0.0, "margin": 0.0}
  # t_max 10 over 100 epochs: k = 10, T reaches 1 at epoch 90.
  assert continuation_kd.annealing_values(90, 100, t_max=10)["psi"] == 0.0
  assert continuation_kd.annealing_values(91, 100, t_max=10)["psi"] == 1.0
  values = continuation_kd.annealing_values(5, 100, t_max=10, psi_switch_epoch=5)
  assert values == {"continuation_temperature": 10.0, "phi": 1 - 9 / 10, "psi": 0.0,
                    "margin": 0.0}
  assert continuation_kd.annealing_values(6, 100, t_max=10, psi_switch_epoch=5)["psi"] == 1.0


def test_annealing_two_phase_values_by_hand():
  """annealing_phase2_epochs = 3 of 10: phase 1 is epochs 1..7 with T stepping from t_max = 4
  over 7 epochs (k = 1: T = max(1, 4 − epoch)) and ψ = 0; phase 2 (8..10) keeps T = 1, ψ = 1."""
  values = lambda epoch, **kw: continuation_kd.annealing_values(
      epoch, 10, t_max=4, annealing_phase2_epochs=3, **kw)
  assert values(1) == {"continuation_temperature": 3.0, "phi": 0.5, "psi": 0.0, "margin": 0.0}
  assert values(2, annealing_phase2_init="best")["continuation_temperature"] == 2.0
  assert (values(7)["phi"], values(7)["psi"]) == (1.0, 0.0)
  for epoch in (8, 10):
    assert values(epoch) == {"continuation_temperature": 1.0, "phi": 1.0, "psi": 1.0,
                             "margin": 0.0}
  # One epoch of phase 1 is allowed (k = max(1, 1 // 4) = 1: T = 3 at epoch 1).
  assert continuation_kd.annealing_values(1, 10, t_max=4, annealing_phase2_epochs=9)[
      "continuation_temperature"] == 3.0
  for bad in (10, -1):
    with pytest.raises(ValueError, match=re.escape(
        f"annealing_phase2_epochs must lie in [0, num_epochs − 1 = 9]; got {bad}.") + "$"):
      continuation_kd.annealing_values(1, 10, annealing_phase2_epochs=bad)
  with pytest.raises(ValueError, match=re.escape(
      "unknown annealing_phase2_init 'worst'; valid: last, best.") + "$"):
    continuation_kd.annealing_values(1, 10, annealing_phase2_init="worst")


def test_kd_values_defaults_and_errors():
  assert vanilla.kd_values() == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9,
                                 "view_weight": 1.0}
  values = vanilla.kd_values(temperature=1, ce_weight=2, kd_weight=3, view_weight=0)
  assert values == {"temperature": 1.0, "ce_weight": 2.0, "kd_weight": 3.0, "view_weight": 0.0}
  assert all(type(v) is float for v in values.values())
  assert vanilla.kd_values(temperature=1e-3)["temperature"] == 1e-3
  for bad in (0, -1.0):
    with pytest.raises(ValueError, match=re.escape(
        f"the KD temperature must be > 0; got {bad}.") + "$"):
      vanilla.kd_values(temperature=bad)


# --- Objectives. ---

S = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], np.float32)
T = np.array([[0.0, 1.0, 3.0], [1.0, -1.0, 0.5]], np.float32)
Y = np.array([2, 0])


def test_kd_and_ce_objectives_by_hand():
  hp = {"temperature": 2.0, "ce_weight": 0.3, "kd_weight": 0.7}
  np.testing.assert_allclose(vanilla.kd_objective(S, T, Y, hp),
                             0.3 * _ce(S, Y) + 0.7 * _kd_kl(S, T, 2.0), rtol=1e-5)
  np.testing.assert_allclose(vanilla.ce_objective(S, T, Y, hp), _ce(S, Y), rtol=1e-5)
  np.testing.assert_allclose(vanilla.hard_label_loss(S, Y), _ce(S, Y), rtol=1e-5)


def test_regression_objectives_read_the_first_output_by_hand():
  s = jnp.array([[2.0, 7.0], [0.0, 1.0]])
  t = jnp.array([[1.0, 4.0], [2.0, 1.0]])
  y = jnp.array([1.5, -1.0])
  hp = {"temperature": 2.0, "ce_weight": 0.25, "kd_weight": 0.5}
  np.testing.assert_allclose(vanilla.hard_label_loss(s, y, True), [0.25, 1.0])
  np.testing.assert_allclose(vanilla.ce_objective(s, t, y, hp, regression=True), [0.25, 1.0])
  # soft: mean_j (z_S − z_T)²: (1 + 9)/2 = 5 and (4 + 0)/2 = 2.
  np.testing.assert_allclose(vanilla.kd_objective(s, t, y, hp, regression=True),
                             [0.25 * 0.25 + 0.5 * 5, 0.25 * 1.0 + 0.5 * 2])
  half = jnp.array([[2.0], [0.0]], jnp.bfloat16)
  assert vanilla.hard_label_loss(half, jnp.array([1.5, -1.0], jnp.bfloat16),
                                 True).dtype == jnp.float32


def test_continuation_and_annealing_objectives_by_hand():
  hp = {"phi": 0.5, "psi": 0.25, "margin": 0.4}
  # Default reduction: the squared gaps summed over the three classes (the paper's norm).
  hinge = np.maximum(0.0, np.sum((S - 0.5 * T) ** 2, -1) - 0.4 * 0.5)
  np.testing.assert_allclose(continuation_kd.continuation_objective(S, T, Y, hp),
                             0.25 * _ce(S, Y) + 0.75 * hinge, rtol=1e-5)
  # Annealing: the margin is 0 whatever hparams say.
  no_margin = np.sum((S - 0.5 * T) ** 2, -1)
  np.testing.assert_allclose(continuation_kd.annealing_objective(S, T, Y, hp),
                             0.25 * _ce(S, Y) + 0.75 * no_margin, rtol=1e-5)
  # reduction="mean": the class mean instead (Annealing-KD's official MSE).
  hinge_mean = np.maximum(0.0, np.mean((S - 0.5 * T) ** 2, -1) - 0.4 * 0.5)
  np.testing.assert_allclose(
      continuation_kd.continuation_objective(S, T, Y, hp, reduction="mean"),
      0.25 * _ce(S, Y) + 0.75 * hinge_mean, rtol=1e-5)
  np.testing.assert_allclose(
      continuation_kd.annealing_objective(S, T, Y, hp, reduction="mean"),
      0.25 * _ce(S, Y) + 0.75 * np.mean((S - 0.5 * T) ** 2, -1), rtol=1e-5)
  s, t, y = jnp.array([[2.0]]), jnp.array([[1.0]]), jnp.array([1.5])
  # Regression: 0.25·(2 − 1.5)² + 0.75·(2 − 0.5)².
  np.testing.assert_allclose(continuation_kd.annealing_objective(s, t, y, hp, regression=True),
                             [0.25 * 0.25 + 0.75 * 2.25])


# --- Views: the loss on x' and the fields of every view. ---

def _teacher(x):  # a fixed linear map of the flattened input to 3 logits
  flat = jnp.reshape(x, (x.shape[0], -1))
  w = jnp.cos(jnp.arange(flat.shape[1] * 3, dtype=jnp.float32).reshape(-1, 3))
  return flat @ w


def _student(x):
  flat = jnp.reshape(x, (x.shape[0], -1))
  w = jnp.sin(jnp.arange(flat.shape[1] * 3, dtype=jnp.float32).reshape(-1, 3) + 0.5)
  return 0.5 * flat @ w


def test_teacher_labelled_view():
  x = jnp.arange(12.0).reshape(2, 2, 3, 1)
  labels = jnp.array([4, 1])
  view = base.teacher_labelled(x, _teacher, labels)
  np.testing.assert_array_equal(view.inputs, x)
  np.testing.assert_array_equal(view.teacher_logits, _teacher(x))
  np.testing.assert_array_equal(view.labels, labels)
  np.testing.assert_array_equal(view.partner_labels, labels)
  np.testing.assert_array_equal(view.lam, [1.0, 1.0])
  assert view.lam.dtype == jnp.float32


def test_view_maker_passes_its_arguments_and_loss_by_hand():
  calls = []
  maker = base.ViewMaker(lambda *args: calls.append(args) or "view", "mine")
  assert maker("k", "x", "y", "t", "s", "h") == "view" and calls == [("k", "x", "y", "t", "s",
                                                                       "h")]
  assert maker.label_mixing is False
  view = base.View(None, T, Y, np.array([1, 1]), np.array([0.75, 0.25], np.float32))
  hp = {"temperature": 2.0, "ce_weight": 0.3, "kd_weight": 0.7, "view_weight": 0.5}
  kd_term = 0.5 * 0.7 * np.mean(_kd_kl(S, T, 2.0))
  assert float(maker.loss(S, view, hp)) == pytest.approx(kd_term, rel=1e-5)
  mixed = dataclasses.replace(maker, label_mixing=True)
  ce = 0.75 * _ce(S[:1], [2])[0] + 0.25 * _ce(S[:1], [1])[0], \
      0.25 * _ce(S[1:], [0])[0] + 0.75 * _ce(S[1:], [1])[0]
  assert float(mixed.loss(S, view, hp)) == pytest.approx(kd_term + 0.3 * np.mean(ce), rel=1e-5)


# NumPy at import time: a test module that creates JAX arrays when it is imported starts
# JAX's backend in mutmut's fork server, and the forked mutants then deadlock.
IMAGES_NP = np.random.default_rng(0).normal(size=(4, 4, 4, 1)).astype(np.float32)
LABELS_NP = np.array([3, 0, 2, 1])
HP = {"temperature": np.float32(2.0)}


def _images_labels():
  return jnp.asarray(IMAGES_NP), jnp.asarray(LABELS_NP)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixup_and_cutmix_views(name):
  images, labels = _images_labels()
  key = jax.random.PRNGKey(3)
  factory, mix = {"mixup": (strong_aug.mixup, augment.mixup),
                  "cutmix": (strong_aug.cutmix, augment.cutmix)}[name]
  maker = factory()
  assert (maker.name, maker.label_mixing) == (name, False)
  assert factory(alpha=0.4, label_mixing=True).label_mixing
  view = maker(key, images, labels, _teacher, None, HP)
  mixed, perm, lam = mix(key, images, 1.0)  # default α = 1
  np.testing.assert_array_equal(view.inputs, mixed)
  np.testing.assert_allclose(view.teacher_logits, _teacher(mixed), rtol=1e-6)
  np.testing.assert_array_equal(view.labels, labels)
  np.testing.assert_array_equal(view.partner_labels, np.asarray(labels)[np.asarray(perm)])
  np.testing.assert_array_equal(view.lam, np.full(4, float(lam), np.float32))
  # α is passed on (with key 2 the CutMix boxes of α = 0.4 and α = 1 differ on 4×4 images).
  key = jax.random.PRNGKey(2)
  view = factory(alpha=0.4)(key, images, labels, _teacher, None, HP)
  np.testing.assert_array_equal(view.inputs, mix(key, images, 0.4)[0])
  assert not np.array_equal(view.inputs, mix(key, images, 1.0)[0])


def _pool(key, rounds, alpha=1.0):
  images, labels = _images_labels()
  draws = [augment.cutmix(k, images, alpha) for k in jax.random.split(key, rounds)]
  pool = jnp.concatenate([d[0] for d in draws])
  partners = np.concatenate([np.asarray(labels)[np.asarray(d[1])] for d in draws])
  lams = np.repeat([float(d[2]) for d in draws], 4)
  return pool, np.tile(np.asarray(labels), rounds), partners, lams


@pytest.mark.parametrize("score, n_pick", [("teacher_entropy", None), ("student_entropy", 3),
                                           ("kl", 5)])
def test_cutmix_pick_view_keeps_the_top_of_the_pool(score, n_pick):
  images, labels = _images_labels()
  key = jax.random.PRNGKey(11)
  maker = strong_aug.cutmix_pick(alpha=0.7, pool_rounds=3, score=score, n_pick=n_pick)
  assert (maker.name, maker.label_mixing) == ("cutmix_pick", False)
  teacher_calls = []

  def teacher(x):
    teacher_calls.append(x.shape[0])
    return _teacher(x)

  view = maker(key, images, labels, teacher, _student, HP)
  pool, pool_labels, partners, lams = _pool(key, 3, 0.7)
  scores = {"teacher_entropy": lambda: losses.entropy(_teacher(pool), 1.0),
            "student_entropy": lambda: losses.entropy(_student(pool), 1.0),
            "kl": lambda: losses.kd_kl(_student(pool), _teacher(pool), 2.0)}[score]()
  top = np.argsort(-np.asarray(scores), kind="stable")[:n_pick or 4]
  np.testing.assert_allclose(view.inputs, pool[top], rtol=1e-6)
  np.testing.assert_allclose(view.teacher_logits, _teacher(pool[top]), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(view.labels, pool_labels[top])
  np.testing.assert_array_equal(view.partner_labels, partners[top])
  np.testing.assert_allclose(view.lam, lams[top], rtol=1e-6)
  # The teacher runs once: on the pool when it scores, else on the picked samples only.
  assert teacher_calls == [n_pick if score == "student_entropy" else 12]


def test_cutmix_pick_entropy_is_at_temperature_one():
  """Two pools whose entropy order differs between τ = 1 and τ = 2: the pick follows τ = 1;
  the KL score follows the temperature in hparams."""
  images, labels = _images_labels()
  key = jax.random.PRNGKey(11)
  pool = _pool(key, 2)[0]
  # H at τ = 1: 0.69 > 0.67; at τ = 2: 0.71 < 0.98.
  rows = jnp.array([[0.0, 0.0, -10.0], [2.0, 0.0, 0.0]])
  h1, h2 = losses.entropy(rows, 1.0), losses.entropy(rows, 2.0)
  assert (float(h1[0]) < float(h1[1])) != (float(h2[0]) < float(h2[1]))
  # Logits of each pool sample: row 0 for the first four, row 1 for the rest (by position).
  index = {float(jnp.sum(p)): i for i, p in enumerate(pool)}

  def fn(x):
    which = jnp.array([index[float(jnp.sum(s))] >= 4 for s in x], jnp.int32)
    return rows[which]

  view = strong_aug.cutmix_pick_view(key, images, labels, fn, fn, HP, alpha=1.0,
                                     pool_rounds=2, score="teacher_entropy", n_pick=4)
  expected = 4 if float(h1[1]) > float(h1[0]) else 0
  np.testing.assert_array_equal(view.inputs, pool[expected:expected + 4])
  view = strong_aug.cutmix_pick_view(key, images, labels, fn, fn, HP, alpha=1.0,
                                     pool_rounds=2, score="student_entropy", n_pick=4)
  np.testing.assert_array_equal(view.inputs, pool[expected:expected + 4])
  # KL scores at hparams' τ (here 1), not kd_kl's default 4: with a zero student, teacher
  # rows (3, 0, 0) and (0, 0, −6) give τ²·KL 0.73 > 0.40 at τ = 1 but 1.11 < 2.39 at τ = 4.
  teacher_rows = jnp.array([[3.0, 0.0, 0.0], [0.0, 0.0, -6.0]])

  def teacher(x):
    return teacher_rows[jnp.array([index[float(jnp.sum(s))] >= 4 for s in x], jnp.int32)]

  view = strong_aug.cutmix_pick_view(key, images, labels, teacher, lambda x: 0 * teacher(x),
                                     {"temperature": np.float32(1.0)}, alpha=1.0,
                                     pool_rounds=2, score="kl", n_pick=4)
  np.testing.assert_array_equal(view.inputs, pool[:4])


def test_view_weights_and_regression_loss_stay_float32_in_x64_mode():
  """x64 mode: λ of teacher-labelled views and the regression loss of bfloat16 outputs are
  float32, so they never promote the float32 step to float64."""
  with jax.enable_x64(True):
    x = jnp.ones((2, 3), jnp.float32)
    assert base.teacher_labelled(x, lambda v: v, jnp.array([0, 1])).lam.dtype == jnp.float32
    loss = vanilla.hard_label_loss(jnp.ones((2, 1), jnp.bfloat16),
                                   jnp.array([0.5, 1.0], jnp.float32), True)
    assert loss.dtype == jnp.float32
    teacher, student = _token_nets()
    view = backward_kd.token_view(step_size=0.1)(None, _tokens(), jnp.array([0, 1]), teacher,
                                                 student, {})
    assert view.lam.dtype == jnp.float32


def test_cutmix_pick_options_and_errors():
  images, labels = _images_labels()
  keywords = strong_aug.cutmix_pick().make.keywords
  assert keywords == dict(alpha=1.0, pool_rounds=2, score="teacher_entropy", n_pick=None)
  assert strong_aug.mixup().make.keywords == {"alpha": 1.0}
  assert strong_aug.cutmix().make.keywords == {"alpha": 1.0}
  assert strong_aug.cutmix_pick(pool_rounds=1, n_pick=1, label_mixing=True).label_mixing
  with pytest.raises(ValueError, match=re.escape(
      "unknown pick score 'margin'; valid names: teacher_entropy, student_entropy, kl.") + "$"):
    strong_aug.cutmix_pick(score="margin")
  with pytest.raises(ValueError, match=re.escape(
      "unknown pick score 'margin'; valid names: teacher_entropy, student_entropy, kl.") + "$"):
    strong_aug.cutmix_pick_view(jax.random.PRNGKey(0), images, labels, _teacher, _student, HP,
                                alpha=1.0, pool_rounds=1, score="margin", n_pick=None)
  with pytest.raises(ValueError, match=re.escape("pool_rounds must be ≥ 1; got 0.") + "$"):
    strong_aug.cutmix_pick(pool_rounds=0)
  with pytest.raises(ValueError, match=re.escape(
      "n_pick must be ≥ 1 or None (the batch size); got 0.") + "$"):
    strong_aug.cutmix_pick(n_pick=0)


# --- Backward KD. ---

def test_sample_options_defaults_and_errors():
  assert backward_kd.sample_options() == dict(
      steps=1, step_size=0.03, normalize="sign", epsilon=None, clip=None, divergence="kl",
      temperature=1.0)
  assert backward_kd.sample_options(steps=2, step_size=0.5, normalize="l2", epsilon=0.1,
                                    clip=(0, 1), divergence="l1",
                                    divergence_temperature=3.0) == dict(
      steps=2, step_size=0.5, normalize="l2", epsilon=0.1, clip=(0, 1), divergence="l1",
      temperature=3.0)
  with pytest.raises(ValueError, match=re.escape(
      "unknown backward normalize 'unit'; valid names: sign, l2, none.") + "$"):
    backward_kd.sample_options(normalize="unit")
  with pytest.raises(ValueError, match=re.escape(
      "unknown backward divergence 'js'; valid names: kl, l1, mse.") + "$"):
    backward_kd.sample_options(divergence="js")
  with pytest.raises(ValueError, match=re.escape("backward steps must be ≥ 1; got 0.") + "$"):
    backward_kd.sample_options(steps=0)
  assert set(backward_kd.SAMPLE_OPTIONS) == set(
      inspect.signature(backward_kd.sample_options).parameters)


def test_backward_image_view_is_teacher_labelled_ascent():
  images, labels = _images_labels()
  maker = backward_kd.image_view(steps=2, step_size=0.1, epsilon=0.15)
  assert (maker.name, maker.label_mixing) == ("backward", False)
  view = maker(jax.random.PRNGKey(0), images, labels, _teacher, _student, HP)
  aux = backward.auxiliary_samples(_teacher, _student, images, steps=2, step_size=0.1,
                                   normalize="sign", epsilon=0.15)
  np.testing.assert_allclose(view.inputs, aux, rtol=1e-6)
  assert not np.allclose(view.inputs, images)
  np.testing.assert_allclose(view.teacher_logits, _teacher(aux), rtol=1e-5)
  np.testing.assert_array_equal(view.labels, labels)
  np.testing.assert_array_equal(view.partner_labels, labels)
  np.testing.assert_array_equal(view.lam, np.ones(4))


@dataclasses.dataclass
class _TokenModel:  # a stand-in for kd_jax.models.adapters: mean embedding, then a linear map
  def embedding_matrix(self, variables):
    return variables["table"]

  def predict(self, variables, inputs):
    # Padding counts (half weight), so only the view's mask keeps it from moving.
    assert ("input_ids" in inputs) != ("word_embeddings" in inputs)  # ids, or their embedding
    embeddings = (jnp.take(variables["table"], inputs["input_ids"], axis=0)
                  if "input_ids" in inputs else inputs["word_embeddings"])
    weight = 0.5 + inputs["attention_mask"][..., None].astype(jnp.float32)
    pooled = jnp.mean(embeddings * weight, 1)
    return pooled @ variables["w"]


@dataclasses.dataclass
class _Bound:
  model: object
  variables: dict
  constants: object = None

  def __call__(self, inputs):
    return self.model.predict(self.variables, inputs)


def _token_nets(constants=None):
  rng = np.random.default_rng(1)
  t_vars = {"table": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
            "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  s_vars = {"table": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32),
            "w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)}
  return _Bound(_TokenModel(), t_vars, constants), _Bound(_TokenModel(), s_vars)


TOKENS_NP = {"input_ids": np.array([[0, 1, 5, 2, 7], [0, 3, 1, 4, 7]], np.int32),
             "attention_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.int32),
             "token_type_ids": np.zeros((2, 5), np.int32)}


def _tokens():
  return {k: jnp.asarray(v) for k, v in TOKENS_NP.items()}


def _expected_token_view(teacher, student, mask, **kwargs):
  tokens = _tokens()
  t_table = teacher.variables["table"]
  s_table = student.variables["table"]
  rest = {k: v for k, v in tokens.items() if k != "input_ids"}
  fwd = lambda bound: lambda e: bound({**rest, "word_embeddings": e})
  e_t, e_s = backward.token_auxiliary_embeddings(fwd(teacher), fwd(student), t_table, s_table,
                                                 tokens["input_ids"], mask, **kwargs)
  return e_t, e_s, teacher({**rest, "word_embeddings": e_t})


@pytest.mark.parametrize("special_ids, divergence", [((), "kl"), ((0, 7), "mse")])
def test_token_view_freezes_padding_and_special_tokens(special_ids, divergence):
  tokens = _tokens()
  teacher, student = _token_nets()
  maker = backward_kd.token_view(steps=2, step_size=0.5, normalize="none", divergence=divergence,
                                 divergence_temperature=2.0, special_ids=special_ids)
  assert (maker.name, maker.label_mixing) == ("backward", False)
  labels = jnp.array([1, 2])
  view = maker(jax.random.PRNGKey(0), tokens, labels, teacher, student, {})
  # Perturbed: attended tokens that are not special (token 1 is an ordinary token).
  mask = np.asarray(tokens["attention_mask"]) > 0
  mask &= ~np.isin(np.asarray(tokens["input_ids"]), special_ids)
  e_t, e_s, logits = _expected_token_view(teacher, student, jnp.asarray(mask), steps=2,
                                          step_size=0.5, normalize="none",
                                          divergence=divergence, temperature=2.0)
  assert set(view.inputs) == {"attention_mask", "token_type_ids", "word_embeddings"}
  np.testing.assert_allclose(view.inputs["word_embeddings"], e_s, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(view.inputs["attention_mask"], tokens["attention_mask"])
  np.testing.assert_allclose(view.teacher_logits, logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(view.labels, labels)
  np.testing.assert_array_equal(view.partner_labels, labels)
  np.testing.assert_array_equal(view.lam, [1.0, 1.0])
  assert view.lam.dtype == jnp.float32
  # The frozen positions keep the embeddings of their token; the others moved.
  frozen = ~mask
  s_table = student.variables["table"]
  np.testing.assert_allclose(np.asarray(view.inputs["word_embeddings"])[frozen],
                             np.asarray(s_table)[np.asarray(tokens["input_ids"])][frozen],
                             rtol=1e-6)
  assert not np.allclose(np.asarray(view.inputs["word_embeddings"])[mask],
                         np.asarray(s_table)[np.asarray(tokens["input_ids"])][mask])


def test_token_view_uses_the_teachers_constants_and_defaults():
  tokens = _tokens()
  maker = backward_kd.token_view()
  assert maker.make.keywords == dict(steps=1, step_size=1.0, normalize="l2", divergence="kl",
                                     temperature=1.0, special_ids=(), project_to_tokens=False)
  keywords = backward_kd.token_view(special_ids=np.array([3, 4]), steps=3).make.keywords
  assert (keywords["special_ids"], keywords["steps"]) == ((3, 4), 3)
  teacher, student = _token_nets()
  gram = 2.0 * teacher.variables["table"].T @ teacher.variables["table"]
  teacher = dataclasses.replace(teacher, constants={"teacher_gram": gram})
  view = maker(None, tokens, jnp.array([0, 1]), teacher, student, {})
  mask = jnp.asarray(tokens["attention_mask"]) > 0
  e_t, e_s, logits = _expected_token_view(teacher, student, mask, teacher_gram=gram,
                                          step_size=1.0)
  np.testing.assert_allclose(view.inputs["word_embeddings"], e_s, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(view.teacher_logits, logits, rtol=1e-5, atol=1e-6)
  constants = backward_kd.teacher_constants(teacher.model, teacher.variables)
  np.testing.assert_allclose(constants["teacher_gram"], gram / 2, rtol=1e-6)
  assert set(constants) == {"teacher_gram"}


def test_token_view_projected_to_tokens_trains_on_the_nearest_sentence():
  """Both models get the projected ids (so the student's embedding table learns from them),
  which differ from the input only at perturbable positions (a step large enough to move
  some argmax)."""
  tokens = _tokens()
  teacher, student = _token_nets()
  maker = backward_kd.token_view(step_size=50.0, special_ids=(0, 7), project_to_tokens=True)
  view = maker(None, tokens, jnp.array([0, 1]), teacher, student, {})
  mask = (np.asarray(tokens["attention_mask"]) > 0) & ~np.isin(TOKENS_NP["input_ids"], (0, 7))
  rest = {k: v for k, v in tokens.items() if k != "input_ids"}
  *_, ids = backward.token_auxiliary_embeddings(
      lambda e: teacher({**rest, "word_embeddings": e}),
      lambda e: student({**rest, "word_embeddings": e}), teacher.variables["table"],
      student.variables["table"], tokens["input_ids"], jnp.asarray(mask), step_size=50.0,
      project_to_tokens=True)
  ids = np.asarray(ids)
  np.testing.assert_array_equal(ids[~mask], TOKENS_NP["input_ids"][~mask])
  assert (ids[mask] != TOKENS_NP["input_ids"][mask]).any()
  assert set(view.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
  np.testing.assert_array_equal(view.inputs["input_ids"], ids)
  # An l2 step η moves the sentence by η, and changing a token costs more than 1/2 of η²:
  # η = 0.7 < 1/√2 changes none.
  small = backward_kd.token_view(step_size=0.7, special_ids=(0, 7), project_to_tokens=True)
  np.testing.assert_array_equal(
      small(None, tokens, jnp.array([0, 1]), teacher, student, {}).inputs["input_ids"],
      TOKENS_NP["input_ids"])
  np.testing.assert_array_equal(view.inputs["attention_mask"], TOKENS_NP["attention_mask"])
  np.testing.assert_allclose(view.teacher_logits, teacher({**rest, "input_ids": ids}),
                             rtol=1e-5, atol=1e-6)


def test_text_configs_backward_block_reaches_the_token_view():
  from kd_jax.experiments.configs import rotten_tomatoes
  from kd_jax.train import setup as setup_lib
  config = rotten_tomatoes.get_config("backward_kd")
  config.backward.project_to_tokens = True
  keywords = setup_lib.view_keywords(setup_lib.view_block(config, "backward"))
  maker = methods.make_view("backward", "text", **keywords, special_ids=(0,))
  assert maker.make.keywords == dict(steps=1, step_size=1.0, normalize="l2", divergence="kl",
                                     temperature=1.0, special_ids=(0,), project_to_tokens=True)


def test_token_view_errors():
  with pytest.raises(ValueError, match=re.escape(
      "token-level backward KD takes normalize 'l2' or 'none' (the sign of a one-hot gradient "
      "leaves the simplex).") + "$"):
    backward_kd.token_view(normalize="sign")
  with pytest.raises(ValueError, match="backward steps must be ≥ 1; got 0"):
    backward_kd.token_view(steps=0)
  with pytest.raises(ValueError, match="unknown backward divergence 'js'"):
    backward_kd.token_view(divergence="js")
  with pytest.raises(ValueError, match="unknown backward normalize 'unit'"):
    backward_kd.token_view(normalize="unit")


class _ImageNet:  # predict(variables, x) = (x·params.w + batch_stats.b) summed to 3 logits
  def __init__(self, scale):
    self.scale = scale

  def predict(self, variables, x):
    flat = jnp.reshape(x, (x.shape[0], -1))
    w = jnp.cos(self.scale * jnp.arange(flat.shape[1] * 3, dtype=jnp.float32)).reshape(-1, 3)
    return flat @ (w * variables["params"]) + variables["batch_stats"]


def _pool_setup():
  student, teacher = _ImageNet(1.0), _ImageNet(0.3)
  state = {"params": jnp.float32(0.5), "batch_stats": jnp.arange(3.0)}
  teacher_vars = {"params": jnp.float32(2.0), "batch_stats": jnp.zeros(3)}

  def preprocess(key, batch, hparams, train):
    assert key is None and hparams is None and train is False
    return batch["image"].astype(jnp.float32) / 255.0

  preprocess.compute_dtype = jnp.float32
  images = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2, 1) * 15
  return student, teacher, state, teacher_vars, preprocess, images


def _expected_pool(student, teacher, state, teacher_vars, images, options):
  x = jnp.asarray(images, jnp.float32) / 255.0
  return backward.auxiliary_samples(
      lambda v: teacher.predict(teacher_vars, v),
      lambda v: student.predict({"params": state["params"], "batch_stats":
                                 state["batch_stats"]}, v), x,
      **backward_kd.sample_options(**options))


def test_pool_generator_grows_every_image_in_chunks():
  student, teacher, state, teacher_vars, preprocess, images = _pool_setup()
  options = dict(steps=2, step_size=0.05, normalize="l2")
  generate = backward_kd.make_pool_generator(student, teacher, preprocess, options,
                                             chunk_size=2, num_examples=3)
  pool = generate(state, teacher_vars, jnp.asarray(images))
  expected = _expected_pool(student, teacher, state, teacher_vars, images, options)
  assert pool.shape == (3, 2, 2, 1)
  np.testing.assert_allclose(pool, expected[:3], rtol=1e-5, atol=1e-6)


def test_pool_hook_regenerates_every_n_epochs():
  """5 images in chunks of 4 (padded to 8 with the first 3), regenerated at epochs 1, 4, 7."""
  from kd_jax.train import sharding
  student, teacher, state, teacher_vars, preprocess, _ = _pool_setup()
  preprocess.compute_dtype = jnp.bfloat16  # the dtype of the initial pool
  images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 1) * 12
  options = dict(step_size=0.05, normalize="sign")
  initial, start_of_epoch = backward_kd.pool_hook(
      student, teacher, teacher_vars, preprocess, options, images, every=3, chunk_size=4,
      mesh=sharding.make_data_mesh())
  assert initial.shape == (5, 2, 2, 1) and initial.dtype == jnp.bfloat16
  np.testing.assert_array_equal(initial, 0)
  expected = _expected_pool(student, teacher, state, teacher_vars, images, options)
  for epoch in range(1, 8):
    before = {**state, "aux_pool": initial}
    after = start_of_epoch(before, epoch)
    if epoch in (1, 4, 7):
      assert set(after) == {"params", "batch_stats", "aux_pool"}
      np.testing.assert_allclose(after["aux_pool"], expected, rtol=1e-5, atol=1e-6)
      assert after["params"] is before["params"]
    else:
      assert after is before


# --- Role-wise policies as a preprocess. ---

def test_policy_preprocess_augments_only_in_training_with_hparams_policy(monkeypatch):
  """What the preprocess hands to policies.augment_batch (a recording stand-in: the real one
  is tested in tests/test_policies.py and compiles for seconds), then normalises."""
  calls = []
  out = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3) * 7

  def augment_batch(key, images, policy, *, fill, pad=4, flip=True, cutout_size=16,
                    loop=None):
    calls.append(dict(key=key, images=images, policy=policy, fill=fill, pad=pad, flip=flip,
                      cutout_size=cutout_size, loop=loop))
    return jnp.asarray(out)

  monkeypatch.setattr(policies, "augment_batch", augment_batch)
  images = np.full((3, 2, 2, 3), 9, np.uint8)
  mean, std, fill = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5), (10, 200, 30)
  # Not the defaults of augment_batch (pad 4, flip True, cutout 16), so none can go missing.
  pre = rolewise.PolicyPreprocess(mean, std, fill, pad=1, flip=False, cutout_size=2,
                                  compute_dtype=jnp.bfloat16)
  hparams = rolewise.policy_values(np.ones((30, 2)))
  got = pre("key", {"image": images}, hparams, train=True)
  [call] = calls
  assert call.pop("images") is images and call.pop("policy") is hparams["policy"]
  np.testing.assert_array_equal(call.pop("fill"), fill)
  assert call == dict(key="key", pad=1, flip=False, cutout_size=2, loop=None)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, augment.normalize(out, mean, std, jnp.bfloat16))
  got = pre("key", {"image": images}, None, train=False)  # evaluation: normalise only
  assert len(calls) == 1
  np.testing.assert_array_equal(got, augment.normalize(images, mean, std, jnp.bfloat16))


def test_policy_valid_range_and_values():
  pre = rolewise.PolicyPreprocess((0.5, 0.25), (0.5, 0.25), (0, 0))
  low, high = pre.valid_range()
  np.testing.assert_allclose(low, [-1.0, -1.0])
  np.testing.assert_allclose(high, [1.0, 3.0])
  values = rolewise.policy_values(np.ones((30, 2), np.int64))
  assert set(values) == {"policy"} and values["policy"].dtype == jnp.int32
  np.testing.assert_array_equal(values["policy"], np.ones((30, 2)))
  values = rolewise.policy_values(np.full((30, 2), 2.0))  # a float policy becomes int32
  assert values["policy"].dtype == jnp.int32
  with pytest.raises(ValueError, match=r"a policy has shape \[30, 2\]"):
    rolewise.policy_values(np.ones((29, 2)))


def test_label_smoothing_reaches_every_hard_label_term():
  """config.label_smoothing → hparams_at → the CE of ce and kd (kd_weight 0 isolates it) and
  of continuation_kd (ψ = 1); ε 0 adds no key, so the step is the one of before."""
  logits = jnp.array([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0]])
  teacher = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  labels = jnp.array([1, 0])
  smoothed = losses.cross_entropy(logits, labels, 0.1)
  assert "label_smoothing" not in methods.hparams_at(methods.METHODS["kd"], 1, 1, kd={})
  for name in ("ce", "kd"):
    method = methods.METHODS[name]
    hparams = methods.hparams_at(method, 1, 1, kd={"ce_weight": 1.0, "kd_weight": 0.0},
                                 label_smoothing=0.1)
    np.testing.assert_allclose(method.objective(logits, teacher, labels, hparams), smoothed,
                               rtol=1e-6, err_msg=name)
  hparams = {"phi": 1.0, "psi": 1.0, "margin": 0.0, "label_smoothing": 0.1}
  np.testing.assert_allclose(continuation_kd.continuation_objective(
      logits, teacher, labels, hparams), smoothed, rtol=1e-6)
