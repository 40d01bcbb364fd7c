"""T. stddev against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import diagnostics


def test_teacher_stddev_hand_computed():
  # Two blocks of two samples, two classes. Block means: (0.75, 0.25) and (0.25, 0.75).
  # Per class, deviations ±0.25 from the mean 0.5: sample std (the official torch.std)
  # sqrt(2 · 0.25² / 1) = 0.3536, population std 0.25; the mean over the classes alike.
  p = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [0.9, 0.1]])  # last dropped
  assert float(diagnostics.teacher_stddev(p, 2)) == pytest.approx(0.25 * np.sqrt(2))
  assert float(diagnostics.teacher_stddev(p, 2, ddof=0)) == pytest.approx(0.25)


def test_teacher_stddev_is_zero_for_identical_blocks_and_matches_numpy():
  p = jnp.tile(jnp.array([[0.2, 0.8], [0.6, 0.4]]), (3, 1))
  assert float(diagnostics.teacher_stddev(p, 2)) == pytest.approx(0.0, abs=1e-7)
  rng = np.random.default_rng(0)
  q = rng.dirichlet(np.ones(5), size=40)
  expected = q.reshape(8, 5, 5).mean(1).std(0, ddof=1).mean()
  assert float(diagnostics.teacher_stddev(q, 5)) == pytest.approx(expected, rel=1e-5)


def test_teacher_stddev_bad_input():
  with pytest.raises(ValueError, match="at least 2 blocks"):
    diagnostics.teacher_stddev(jnp.ones((3, 2)) / 2, 2)
  with pytest.raises(ValueError, match=r"\[num_samples, num_classes\]"):
    diagnostics.teacher_stddev(jnp.ones(4), 2)
