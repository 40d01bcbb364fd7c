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
