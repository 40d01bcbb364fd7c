"""kd_jax.augment: crop/flip semantics and normalisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import augment


def _images(batch=16, size=6, channels=2):
  return jnp.arange(batch * size * size * channels, dtype=jnp.int32).reshape(
      batch, size, size, channels) % 251 + 1  # no zeros, so padding is recognisable


def test_no_pad_no_flip_is_identity():
  images = _images()
  np.testing.assert_array_equal(augment.random_crop_flip(jax.random.PRNGKey(0), images, 0,
                                                         flip=False), images)


def test_crop_is_a_window_of_the_zero_padded_image():
  images = np.asarray(_images())
  out = np.asarray(jax.jit(augment.random_crop_flip, static_argnums=(2, 3))(
      jax.random.PRNGKey(1), jnp.asarray(images), 2, False))
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = set()
  for i in range(len(images)):
    matches = [(dy, dx) for dy in range(5) for dx in range(5)
               if np.array_equal(out[i], padded[i, dy:dy + 6, dx:dx + 6])]
    assert matches, f"image {i} is not a crop of its padded version"
    offsets.update(matches)
  assert len(offsets) > 3  # offsets differ between images


def test_flip_mirrors_about_half_the_images():
  images = _images(batch=64)
  out = augment.random_crop_flip(jax.random.PRNGKey(2), images, pad=0, flip=True)
  flipped = [bool(jnp.array_equal(out[i], images[i, :, ::-1])) for i in range(64)]
  kept = [bool(jnp.array_equal(out[i], images[i])) for i in range(64)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 16 < sum(flipped) < 48


def test_deterministic_for_a_key_and_keeps_dtype():
  images = jnp.asarray(_images(), jnp.uint8)
  a = augment.random_crop_flip(jax.random.PRNGKey(3), images)
  b = augment.random_crop_flip(jax.random.PRNGKey(3), images)
  np.testing.assert_array_equal(a, b)
  assert a.dtype == jnp.uint8 and a.shape == images.shape


def test_normalize():
  images = jnp.full((1, 2, 2, 1), 255, jnp.uint8)
  np.testing.assert_allclose(augment.normalize(images, (0.5,), (0.25,)), 2.0)


def test_bad_input():
  with pytest.raises(ValueError, match="images must have shape"):
    augment.random_crop_flip(jax.random.PRNGKey(0), jnp.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="pad"):
    augment.random_crop_flip(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), pad=-1)


# --- mixing and picking (Wang et al. 2022) ---

def _constant_images(batch=8, size=16):
  """Image i is filled with the value i + 1, so every pixel tells where it came from."""
  return jnp.broadcast_to(jnp.arange(1, batch + 1, dtype=jnp.float32)[:, None, None, None],
                          (batch, size, size, 3))


@pytest.mark.parametrize("seed", range(20))
def test_partner_permutations_have_no_fixed_points(seed):
  key = jax.random.PRNGKey(seed)
  for batch in (2, 3, 8):
    perm = np.asarray(augment.shift_permutation(key, batch))
    assert sorted(perm) == list(range(batch)) and np.all(perm != np.arange(batch))
  for mix in (augment.mixup, augment.cutmix):
    _, perm, _ = mix(key, _constant_images())
    assert np.all(np.asarray(perm) != np.arange(8))


@pytest.mark.parametrize("seed", range(10))
def test_cutmix_kept_area_equals_lambda(seed):
  images = _constant_images()
  mixed, perm, lam = jax.jit(augment.cutmix)(jax.random.PRNGKey(seed), images)
  mixed, perm = np.asarray(mixed), np.asarray(perm)
  for i in range(8):
    own = np.mean(mixed[i, :, :, 0] == i + 1)
    partner = np.mean(mixed[i, :, :, 0] == perm[i] + 1)
    assert own == pytest.approx(float(lam)) and own + partner == pytest.approx(1.0)
  # The pasted region is one axis-aligned box, the same for every image.
  box = mixed[0, :, :, 0] != 1
  if box.any():
    rows, cols = np.where(box)
    assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
  assert np.array_equal(mixed[:, :, :, 0] != np.arange(1, 9)[:, None, None],
                        np.broadcast_to(box, (8, 16, 16)))


def test_cutmix_box_side_ratio_is_sqrt_one_minus_lambda():
  # An unclipped box (centre in the middle) has sides int(H·sqrt(1−λ)) rounded to even.
  for lam in (0.19, 0.5, 0.75):
    box = np.asarray(augment.cutmix_box(jax.random.PRNGKey(3), 32, 32, jnp.float32(lam)))
    side = int(32 * np.sqrt(1 - lam))
    rows, cols = np.where(box)
    assert rows.max() - rows.min() + 1 <= side and cols.max() - cols.min() + 1 <= side


def test_mixup_is_the_convex_combination():
  images = _constant_images()
  mixed, perm, lam = augment.mixup(jax.random.PRNGKey(0), images, alpha=1.0)
  expected = lam * np.arange(1, 9) + (1 - lam) * (np.asarray(perm) + 1)
  np.testing.assert_allclose(np.asarray(mixed)[:, 0, 0, 0], expected, rtol=1e-6)
  assert 0.0 <= float(lam) <= 1.0
  uint8_mixed, _, _ = augment.mixup(jax.random.PRNGKey(0), images.astype(jnp.uint8))
  assert uint8_mixed.dtype == jnp.float32  # integer images are mixed in float


def test_pick_top_keeps_exactly_the_highest_scores():
  scores = jnp.array([0.3, 2.0, -1.0, 0.9, 2.0, 0.1])
  images = jnp.arange(6.0)[:, None] * jnp.ones((6, 3))
  picked = jax.jit(augment.pick_top, static_argnums=2)(scores, images, 3)
  assert np.asarray(picked)[:, 0].tolist() == [1.0, 4.0, 3.0]
  with pytest.raises(ValueError, match="n_pick"):
    augment.pick_top(scores, images, 7)
  with pytest.raises(ValueError, match="scores has 6 entries"):
    augment.pick_top(scores, images[:5], 2)


def test_mixing_bad_input():
  with pytest.raises(ValueError, match="at least 2"):
    augment.cutmix(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="alpha"):
    augment.mixup(jax.random.PRNGKey(0), jnp.zeros((2, 4, 4, 1)), alpha=0.0)
