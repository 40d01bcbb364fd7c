"""kd_jax.losses against hand-computed values, a NumPy reference, jit and bad input.

The value tests (LossValuesTest) run with and without ``jax.jit`` through ``chex.variants``;
the errors, raised at trace time or on Python values, are tested once."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kd_kl(student, teacher, tau):
  log_t, log_s = np_log_softmax(teacher / tau), np_log_softmax(student / tau)
  return tau ** 2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)


class LossValuesTest(chex.TestCase):
  """Values by hand and against NumPy: ``chex.variants`` runs each test twice, once with the
  functions under ``jax.jit`` (their arguments traced) and once eagerly."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_kl_hand_computed_two_classes(self):
    # Teacher logits (0, log 3) -> p_T = (1/4, 3/4); student (0, 0) -> p_S = (1/2, 1/2).
    # KL = 1/4 log(1/2) + 3/4 log(3/2); tau = 1 so no scaling.
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    value = self.variant(losses.kd_kl)(jnp.array([[0.0, 0.0]]), jnp.array([[0.0, math.log(3.0)]]),
                                       1.0)
    np.testing.assert_allclose(value, [expected], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_kl_temperature_squared_factor(self):
    # With tau = 2 the logits are halved and the KL is multiplied by 4:
    # teacher (0, 2 log 3) / 2 = (0, log 3) -> same distributions as above.
    expected = 4.0 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    value = self.variant(losses.kd_kl)(jnp.array([[0.0, 0.0]]),
                                       jnp.array([[0.0, 2 * math.log(3.0)]]), 2.0)
    np.testing.assert_allclose(value, [expected], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_kl_matches_numpy(self):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 16, 10)).astype(np.float32) * 3
    value = self.variant(losses.kd_kl, static_argnums=2)(student, teacher, 4.0)
    np.testing.assert_allclose(value, np_kd_kl(student, teacher, 4.0), rtol=1e-5, atol=1e-6)
    chex.assert_shape(value, (16,))

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_kl_is_zero_for_equal_logits_and_has_known_gradient(self):
    rng = np.random.default_rng(1)
    student, teacher = rng.normal(size=(2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(self.variant(losses.kd_kl)(teacher, teacher, 3.0), np.zeros(4),
                               atol=1e-6)
    # d/dz_S tau^2 KL(p_T^tau || p_S^tau) = tau (p_S^tau - p_T^tau).
    tau = 3.0
    grad = self.variant(jax.grad(lambda s: losses.kd_kl(s, teacher, tau).sum()))(student)
    expected = tau * (jax.nn.softmax(student / tau) - jax.nn.softmax(teacher / tau))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_kl_array_temperature(self):
    """τ as a scalar array: traced under jit, concrete without."""
    rng = np.random.default_rng(2)
    student, teacher = rng.normal(size=(2, 3, 7)).astype(np.float32)
    value = self.variant(losses.kd_kl)(student, teacher, jnp.float32(2.5))
    np.testing.assert_allclose(value, np_kd_kl(student, teacher, 2.5), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_stable_for_huge_logits(self):
    kd_kl, cross_entropy, entropy = map(self.variant, (losses.kd_kl, losses.cross_entropy,
                                                       losses.entropy))
    student = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]])
    teacher = jnp.array([[-1e4, 1e4, 0.0], [-1e4, 1e4, 0.0]])
    labels = jnp.array([1, 1])
    for value in (kd_kl(student, teacher, 1.0), cross_entropy(student, labels), entropy(student),
                  kd_kl(student, teacher, 4.0)):
      assert np.all(np.isfinite(value)), value
    # First example: the teacher puts all mass on class 1, the student on class 0:
    # KL = log p_T(1) - log p_S(1) = 0 - (-2e4) = 2e4 (log-softmax differences are exact).
    np.testing.assert_allclose(kd_kl(student, teacher, 1.0)[0], 2e4, rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(student, labels), [2e4, 0.0], atol=1e-3)
    grads = self.variant(jax.grad(lambda s: losses.kd_kl(s, teacher, 1.0).sum()))(student)
    assert np.all(np.isfinite(grads))

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_inputs_are_computed_in_float32(self):
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(2, 8, 10)).astype(np.float32)
    student_bf16, teacher_bf16 = jnp.bfloat16(student), jnp.bfloat16(teacher)
    value = self.variant(losses.kd_kl)(student_bf16, teacher_bf16, 4.0)
    chex.assert_type(value, jnp.float32)
    # Same as float32 on the bf16-rounded logits: no loss of precision inside.
    reference = np_kd_kl(np.asarray(student_bf16, np.float32),
                         np.asarray(teacher_bf16, np.float32), 4.0)
    np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-7)
    chex.assert_type(self.variant(losses.cross_entropy)(student_bf16, jnp.zeros(8, jnp.int32)),
                     jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_cross_entropy_hand_computed_and_soft_labels(self):
    cross_entropy = self.variant(losses.cross_entropy)
    logits = jnp.array([[0.0, math.log(3.0)], [2.0, 2.0]])
    np.testing.assert_allclose(cross_entropy(logits, jnp.array([1, 0])),
                               [-math.log(0.75), math.log(2.0)], rtol=1e-6)
    soft = jnp.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(cross_entropy(logits, soft),
                               [-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), math.log(2.0)],
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_label_smoothing_hand_computed(self):
    """p = softmax([0, ln 3]) = [¼, ¾], label 1, ε 0.2, C 2: target [0.1, 0.9], CE =
    −(0.1·ln ¼ + 0.9·ln ¾); the same with soft labels [0, 1]; ε 0 is the plain CE (a traced
    ε 0 under jit); KD's CE term carries it and its KL term does not."""
    cross_entropy = self.variant(losses.cross_entropy)
    logits = jnp.array([[0.0, math.log(3.0)]])
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    np.testing.assert_allclose(cross_entropy(logits, jnp.array([1]), 0.2), [expected],
                               rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(logits, jnp.array([[0.0, 1.0]]), 0.2), [expected],
                               rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(logits, jnp.array([1]), 0.0), [-math.log(0.75)],
                               rtol=1e-6)
    teacher = jnp.array([[1.0, 0.0]])
    kd = self.variant(losses.kd_objective)(logits, teacher, jnp.array([1]), temperature=2.0,
                                           ce_weight=0.5, kd_weight=0.5, label_smoothing=0.2)
    np.testing.assert_allclose(kd, 0.5 * expected + 0.5 * losses.kd_kl(logits, teacher, 2.0),
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_entropy_hand_computed(self):
    entropy = self.variant(losses.entropy)
    np.testing.assert_allclose(entropy(jnp.zeros((2, 4))), [math.log(4)] * 2, rtol=1e-6)
    # tau = 2 on (0, 2 log 3) is p = (1/4, 3/4).
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(entropy(jnp.array([[0.0, 2 * math.log(3.0)]]), 2.0), [expected],
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_objective_is_the_weighted_sum(self):
    rng = np.random.default_rng(4)
    student, teacher = rng.normal(size=(2, 5, 6)).astype(np.float32)
    labels = jnp.array([0, 1, 2, 3, 5])
    value = self.variant(lambda s, t, y: losses.kd_objective(
        s, t, y, temperature=4.0, ce_weight=0.1, kd_weight=0.9))(student, teacher, labels)
    ce = -np.take_along_axis(np_log_softmax(student), np.asarray(labels)[:, None], 1)[:, 0]
    np.testing.assert_allclose(value, 0.1 * ce + 0.9 * np_kd_kl(student, teacher, 4.0),
                               rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmap_over_a_population_axis(self):
    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # [population, batch, classes]
    batched = self.variant(jax.vmap(losses.kd_kl, in_axes=(0, 0, None)))(s, t, 2.0)
    np.testing.assert_allclose(batched,
                               np.stack([losses.kd_kl(a, b, 2.0) for a, b in zip(s, t)]),
                               rtol=1e-6)
    hinge = self.variant(jax.vmap(losses.continuation_hinge, in_axes=(0, 0, 0, None)))(
        s, t, jnp.array([0.1, 0.5, 1.0]), 0.2)
    chex.assert_shape(hinge, (3, 4))

  @chex.variants(with_jit=True, without_jit=True)
  def test_default_temperatures(self):
    # entropy: τ = 1 by default; (0, log 3) -> p = (1/4, 3/4).
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(self.variant(losses.entropy)(jnp.array([[0.0, math.log(3.0)]])),
                               [expected], rtol=1e-6)
    # kd_kl: τ = 4 by default; teacher (0, 4 log 3) / 4 = (0, log 3), student uniform.
    expected = 16.0 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    np.testing.assert_allclose(
        self.variant(losses.kd_kl)(jnp.zeros((1, 2)), jnp.array([[0.0, 4 * math.log(3.0)]])),
        [expected], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kd_objective_passes_its_temperature_on(self):
    # τ = 2: teacher (0, 2 log 3) -> (1/4, 3/4), student uniform; label 1: CE = log 2.
    kd = 4.0 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    value = self.variant(losses.kd_objective)(
        jnp.zeros((1, 2)), jnp.array([[0.0, 2 * math.log(3.0)]]), jnp.array([1]),
        temperature=2.0, ce_weight=0.3, kd_weight=0.5)
    np.testing.assert_allclose(value, [0.3 * math.log(2.0) + 0.5 * kd], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_extra_leading_axes(self):
    """Everything reduces over the last (class) axis only: [population, batch, classes]."""
    kd_kl, cross_entropy, entropy, hinge = map(self.variant, (
        losses.kd_kl, losses.cross_entropy, losses.entropy, losses.continuation_hinge))
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, (3, 4))
    np.testing.assert_allclose(kd_kl(s, t, 2.0), np_kd_kl(s, t, 2.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        cross_entropy(s, jnp.asarray(labels)),
        -np.take_along_axis(np_log_softmax(s), labels[..., None], -1)[..., 0], rtol=1e-5)
    soft = np.exp(np_log_softmax(t))
    np.testing.assert_allclose(cross_entropy(s, jnp.asarray(soft, jnp.float32)),
                               -(soft * np_log_softmax(s)).sum(-1), rtol=1e-5)
    p = np.exp(np_log_softmax(s / 2.0))
    np.testing.assert_allclose(entropy(s, 2.0), -(p * np.log(p)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(hinge(s, t, 0.4, 0.3),
                               np.maximum(0, ((s - 0.4 * t) ** 2).sum(-1) - 0.12), rtol=1e-5,
                               atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_continuation_hinge_sum_or_mean_over_classes_by_hand(self):
    hinge = self.variant(losses.continuation_hinge, static_argnames="reduction")
    # gap z_S − φ·z_T with φ = 0.5: (2, 0, 1) − 0.5·(2, 2, 0) = (1, −1, 1); squares (1, 1, 1).
    s, t = jnp.array([[2.0, 0.0, 1.0]]), jnp.array([[2.0, 2.0, 0.0]])
    # mean 1, sum 3 (the default); margin 0.4·φ = 0.2 is subtracted from either.
    np.testing.assert_allclose(hinge(s, t, 0.5, 0.4, reduction="mean"), [0.8], rtol=1e-6)
    np.testing.assert_allclose(hinge(s, t, 0.5, 0.4), [2.8], rtol=1e-6)
    # A margin of 2·φ = 1 (mean scale) zeroes the mean hinge but not the sum (3 − 1 = 2).
    # Eagerly exactly 0; under jit XLA takes the mean as the sum times float32(1/3), 1 + 3e-8.
    jit = self.variant.type == chex.ChexVariantType.WITH_JIT
    np.testing.assert_allclose(hinge(s, t, 0.5, 2.0, "mean"), [0.0], atol=1e-7 if jit else 0)
    np.testing.assert_allclose(hinge(s, t, 0.5, 2.0, "sum"), [2.0], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_standardized_kd_compares_shapes_not_ranges(self):
    kd = self.variant(functools.partial(losses.kd_kl, standardize=True), static_argnums=2)
    # (1, 2, 3) and (10, 20, 30) z-score to the same (−1, 0, 1): nothing left to distil,
    # though plain KD between them is large.
    teacher, student = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[10.0, 20.0, 30.0]])
    np.testing.assert_allclose(kd(student, teacher, 1.0), [0.0], atol=1e-6)
    assert float(losses.kd_kl(student, teacher, 1.0)[0]) > 1.0
    # Reversed order: KL(softmax(−1, 0, 1) ‖ softmax(1, 0, −1)), by hand in NumPy, × τ² at τ 2.
    p = np.exp([-0.5, 0.0, 0.5]) / np.exp([-0.5, 0.0, 0.5]).sum()
    expected = 4.0 * np.sum(p * (np.log(p) - np.log(p[::-1])))
    np.testing.assert_allclose(kd(jnp.array([[3.0, 2.0, 1.0]]), teacher, 2.0), [expected],
                               rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_dkd_hand_computed(self):
    dkd = self.variant(functools.partial(losses.dkd, temperature=1.0))
    # Teacher p_T = (2, 1, 3)/6: target (class 0) 1/3, rest 2/3, non-target (1/4, 3/4).
    teacher = jnp.log(jnp.array([[2.0, 1.0, 3.0]]))
    # Student uniform: target 1/3 (TCKD = 0), non-target (1/2, 1/2).
    nckd = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    np.testing.assert_allclose(dkd(jnp.zeros((1, 3)), teacher, jnp.array([0]), alpha=1.0,
                                   beta=8.0), [8.0 * nckd], rtol=1e-5)
    # KD = TCKD + (1 − p_T,t)·NCKD: here 2/3 of NCKD.
    np.testing.assert_allclose(losses.kd_kl(jnp.zeros((1, 3)), teacher, 1.0), [2 / 3 * nckd],
                               rtol=1e-5)
    # Student p_S = (2, 1, 1)/4: target 1/2, non-target (1/2, 1/2) again.
    tckd = (1 / 3) * math.log((1 / 3) / 0.5) + (2 / 3) * math.log((2 / 3) / 0.5)
    student = jnp.log(jnp.array([[2.0, 1.0, 1.0]]))
    np.testing.assert_allclose(dkd(student, teacher, jnp.array([0]), alpha=2.0, beta=0.5),
                               [2.0 * tckd + 0.5 * nckd], rtol=1e-5)
    # One-hot labels give the same; τ = 2 on doubled logits gives 4 times the value.
    np.testing.assert_allclose(dkd(student, teacher, jnp.array([[1.0, 0.0, 0.0]]), alpha=2.0,
                                   beta=0.5), [2.0 * tckd + 0.5 * nckd], rtol=1e-5)
    np.testing.assert_allclose(
        losses.dkd(2 * student, 2 * teacher, jnp.array([0]), alpha=2.0, beta=0.5,
                   temperature=2.0), [4 * (2.0 * tckd + 0.5 * nckd)], rtol=1e-5)


  @chex.variants(with_jit=True, without_jit=True)
  def test_standardize_as_an_hparams_array_selects_per_call(self):
    # A traced 0/1 flag gives the plain and the standardised value of the same compiled call.
    kd = self.variant(lambda s, t, flag: losses.kd_kl(s, t, 2.0, standardize=flag))
    student, teacher = jnp.array([[3.0, 2.0, 1.0]]), jnp.array([[1.0, 2.0, 4.0]])
    np.testing.assert_allclose(kd(student, teacher, jnp.float32(0.0)),
                               np_kd_kl(np.asarray(student), np.asarray(teacher), 2.0), rtol=1e-5)
    np.testing.assert_allclose(kd(student, teacher, jnp.float32(1.0)),
                               losses.kd_kl(student, teacher, 2.0, standardize=True), rtol=1e-6)
    # Off, a constant row (std 0) still has a finite gradient through the unselected branch.
    constant = jnp.ones((1, 3))
    grad = jax.grad(lambda z: jnp.sum(losses.kd_kl(z, teacher, 2.0,
                                                   standardize=jnp.float32(0.0))))(constant)
    assert np.all(np.isfinite(grad))
    # DKD standardises both logit vectors first: its value on z equals that on z-scored z.
    dkd = self.variant(functools.partial(losses.dkd, standardize=True))
    labels = jnp.array([2])
    np.testing.assert_allclose(
        dkd(student, teacher, labels),
        losses.dkd(losses.standardize_logits(student), losses.standardize_logits(teacher),
                   labels), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mlkd_against_numpy_by_the_official_formulas(self):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 2, (6, 5)), rng.normal(0, 3, (6, 5))
    temperatures = (4.0, 3.0, 5.0, 2.0, 6.0)

    def softmax(z, tau):
      return np.exp(np_log_softmax(z / tau))

    def standardized(z):
      return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)

    # The official code's scalars: KD batch mean, ‖G_T − G_S‖²/B, ‖M_T − M_S‖²/C, with the
    # masks scaling each by the fraction of kept examples (classes) at or below the median.
    p1 = softmax(teacher, 1.0)
    confidence, mass = p1.max(-1), p1.sum(0)
    f_examples = np.mean(confidence <= np.percentile(confidence, 50))
    f_classes = np.mean(mass <= np.percentile(mass, 50))
    assert (f_examples, f_classes) == (0.5, 0.6)  # 5 classes: the median class is kept

    def official(mask_examples, mask_classes, standardize=False):
      total = 0.0
      for tau in temperatures:
        ps, pt = softmax(student, tau), softmax(teacher, tau)
        kd_s, kd_t = (standardized(student), standardized(teacher)) if standardize else (
            student, teacher)
        instance = np_kd_kl(kd_s, kd_t, tau)
        batch = ((pt @ pt.T - ps @ ps.T) ** 2).sum(-1)  # per row; its mean is ‖·‖²/B
        classes = ((pt.T @ pt - ps.T @ ps) ** 2).sum(-1) / 5
        total = total + mask_examples * (instance + batch) + np.sum(mask_classes * classes)
      return total

    mlkd = self.variant(losses.mlkd, static_argnames=("mask",))
    s, t = jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)
    expected = official(f_examples, f_classes)
    np.testing.assert_allclose(mlkd(s, t, temperatures), expected, rtol=2e-5)
    # The batch mean is the official scalar loss.
    scalar = sum(f_examples * np_kd_kl(student, teacher, tau).mean() for tau in temperatures)
    assert scalar < float(jnp.mean(mlkd(s, t, temperatures)))  # the other levels add to it
    np.testing.assert_allclose(
        mlkd(s, t, temperatures, mask="per_example"),
        official((confidence <= np.percentile(confidence, 50)).astype(float),
                 (mass <= np.percentile(mass, 50)).astype(float)), rtol=2e-5)
    np.testing.assert_allclose(mlkd(s, t, temperatures, mask="none"), official(1.0, 1.0),
                               rtol=2e-5)
    # correlation_weight scales the batch and class terms only: 0 leaves the instance terms.
    instance_only = sum(f_examples * np_kd_kl(student, teacher, tau) for tau in temperatures)
    np.testing.assert_allclose(losses.mlkd(s, t, temperatures, correlation_weight=0.0),
                               instance_only, rtol=2e-5)
    np.testing.assert_allclose(
        losses.mlkd(s, t, temperatures, correlation_weight=0.5),
        0.5 * expected + 0.5 * instance_only, rtol=2e-5)
    # Standardisation reaches the instance terms only, as Sun et al.'s code.
    np.testing.assert_allclose(
        losses.mlkd(s, t, temperatures, standardize=True),
        official(f_examples, f_classes, standardize=True), rtol=2e-5)



# --- Bad input: errors at trace time or on Python values, tested once. ---

@pytest.mark.parametrize("call, message", [
    (lambda: losses.kd_kl(jnp.zeros((4, 10)), jnp.zeros((4, 9))), "same shape"),
    (lambda: losses.kd_kl(jnp.zeros((4, 10), jnp.int32), jnp.zeros((4, 10))), "student_logits"),
    (lambda: losses.kd_kl(jnp.zeros((4, 10)), jnp.zeros((4, 10)), 0.0), "temperature"),
    (lambda: losses.cross_entropy(jnp.zeros((4, 10)), jnp.zeros((5,), jnp.int32)), "labels"),
    (lambda: losses.cross_entropy(jnp.zeros((4, 10)), jnp.zeros((4, 9))), "labels"),
    (lambda: losses.cross_entropy(jnp.zeros((4, 10)), jnp.zeros((4,), bool)), "labels"),
    (lambda: losses.entropy(jnp.float32(1.0)), "logits"),
])
def test_bad_input_names_the_argument(call, message):
  with pytest.raises((ValueError, TypeError), match=message):
    call()


def test_bad_shapes_fail_at_trace_time_under_jit():
  with pytest.raises(ValueError, match="student_logits and teacher_logits"):
    jax.jit(losses.kd_kl)(jnp.zeros((4, 10)), jnp.zeros((3, 10)))


def test_mlkd_refuses_what_it_cannot_compute():
  z = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="unknown mlkd mask 'top'; valid: fraction, per_example"):
    losses.mlkd(z, z, mask="top")
  with pytest.raises(ValueError, match=r"need logits \[batch, classes\]; got shape \(3,\)"):
    losses.mlkd(z[0], z[0])
  with pytest.raises(ValueError, match="at least one temperature"):
    losses.mlkd(z, z, ())
  with pytest.raises(ValueError, match="temperature"):
    losses.mlkd(z, z, (4.0, -1.0))
  # The teacher's side carries no gradient (its masks and targets are constants).
  grad = jax.grad(lambda t: jnp.sum(losses.mlkd(jnp.ones((4, 3)), t)))(jnp.eye(4, 3))
  np.testing.assert_array_equal(grad, np.zeros((4, 3)))


def test_dkd_and_standardize_refuse_what_they_cannot_split():
  z = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="labels must be class ids or one-hot rows"):
    losses.dkd(z, z, jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))
  with pytest.raises(ValueError, match="needs at least 2 classes"):
    losses.kd_kl(jnp.zeros((2, 1)), jnp.zeros((2, 1)), standardize=True)


def test_label_smoothing_outside_0_1_raises():
  with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\); got 1.5"):
    losses.cross_entropy(jnp.array([[0.0, math.log(3.0)]]), jnp.array([1]), 1.5)


def test_continuation_hinge_unknown_reduction():
  s, t = jnp.array([[2.0, 0.0, 1.0]]), jnp.array([[2.0, 2.0, 0.0]])
  with pytest.raises(ValueError, match="unknown hinge reduction 'l2'; valid: mean, sum"):
    losses.continuation_hinge(s, t, 0.5, 0.0, reduction="l2")


# --- Error messages and dtypes, pinned one by one. ---

@pytest.mark.parametrize("call, error, message", [
    (lambda: losses.kd_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32)), TypeError,
     r"^teacher_logits must have a floating dtype"),
    (lambda: losses.kd_kl(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3))), TypeError,
     r"^student_logits must have a floating dtype"),
    (lambda: losses.kd_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4))), ValueError,
     r"^student_logits and teacher_logits must have the same shape"),
    (lambda: losses.kd_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), -1.0), ValueError,
     r"^temperature must be > 0"),
    (lambda: losses.cross_entropy(jnp.zeros((2, 3), jnp.int32), jnp.zeros(2, jnp.int32)),
     TypeError, r"^logits must have a floating dtype"),
    (lambda: losses.cross_entropy(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32)), ValueError,
     r"^integer labels must have shape \(2,\) \(the shape of logits \(2, 3\)"),
    (lambda: losses.cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 4))), ValueError,
     r"^probability labels must have the shape of logits \(2, 3\)"),
    (lambda: losses.cross_entropy(jnp.zeros((2, 3)), jnp.zeros(2, bool)), TypeError,
     r"^labels must be integer class ids"),
    (lambda: losses.entropy(jnp.zeros((2, 3), jnp.int32)), TypeError,
     r"^logits must have a floating dtype"),
    (lambda: losses.entropy(jnp.zeros((2, 3)), 0.0), ValueError, r"^temperature must be > 0"),
    (lambda: losses.continuation_hinge(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)), 0.5, 0.0),
     TypeError, r"^student_logits must have a floating dtype"),
    (lambda: losses.continuation_hinge(jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32), 0.5, 0.0),
     TypeError, r"^teacher_logits must have a floating dtype"),
    (lambda: losses.continuation_hinge(jnp.zeros(()), jnp.zeros(()), 0.5, 0.0), ValueError,
     r"^student_logits must have shape \[batch, num_classes\]"),
    (lambda: losses.continuation_hinge(jnp.zeros((2, 3)), jnp.zeros((3, 3)), 0.5, 0.0),
     ValueError, r"^student_logits and teacher_logits must have the same shape"),
    (lambda: losses.continuation_hinge(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.5, -0.1),
     ValueError, r"^margin must be ≥ 0"),
])
def test_error_messages_name_the_argument(call, error, message):
  with pytest.raises(error, match=message):
    call()


def test_float64_stays_float64_and_bfloat16_becomes_float32():
  """The compute dtype is at least float32 and follows the logits (both of them): float64
  logits (x64 mode) give float64 losses; host-side float64 schedule values (phi, margin, τ
  as NumPy scalars) do not promote float32 logits."""
  with jax.enable_x64(True):
    f64, f32 = jnp.ones((2, 3), jnp.float64), jnp.ones((2, 3), jnp.float32)
    bf16 = jnp.ones((2, 3), jnp.bfloat16)
    labels = jnp.array([0, 2])
    for s, t, dtype in ((f64, f32, jnp.float64), (f32, f64, jnp.float64),
                        (f32, f32, jnp.float32), (bf16, bf16, jnp.float32)):
      chex.assert_type(losses.kd_kl(s, t, 2.0), dtype)
      chex.assert_type(losses.continuation_hinge(s, t, 0.5, 0.1), dtype)
      own = jnp.promote_types(s.dtype, jnp.float32)  # cross-entropy, entropy: the logits'
      chex.assert_type(losses.cross_entropy(s, labels), own)
      chex.assert_type(losses.cross_entropy(s, t.astype(s.dtype)), own)
      chex.assert_type(losses.entropy(s), own)
    chex.assert_type(losses.continuation_hinge(f32, f32, np.float64(0.3), np.float64(0.2)),
                     jnp.float32)
    chex.assert_type(losses.kd_kl(f32, f32, np.float64(2.0)), jnp.float32)
    chex.assert_type(losses.kd_kl(f32, f32, jnp.float64(2.0)), jnp.float32)
    chex.assert_type(losses.entropy(f32, np.float64(2.0)), jnp.float32)
    chex.assert_type(losses.kd_objective(f32, f32, labels, temperature=np.float64(2.0),
                                         ce_weight=0.1, kd_weight=0.9), jnp.float32)
    # bfloat16 values are computed in float32, not rounded to bfloat16 on the way.
    s = jnp.asarray([[0.0, 1.0, 2.5]], jnp.bfloat16)
    t = jnp.asarray([[1.0, -1.0, 0.5]], jnp.bfloat16)
    s32, t32 = np.asarray(s, np.float32), np.asarray(t, np.float32)
    np.testing.assert_allclose(losses.continuation_hinge(s, t, 0.3, 0.01),
                               np.sum((s32 - 0.3 * t32) ** 2, -1) - 0.003, rtol=1e-6)
    p = np.exp(np_log_softmax(s32 / 1.5))
    np.testing.assert_allclose(losses.entropy(s, 1.5), -(p * np.log(p)).sum(-1), rtol=1e-6)
