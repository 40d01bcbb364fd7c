"""PBA operations against PIL (what PBA applies), policy application, explore, schedule files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import policies

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

FILL = (128, 128, 128)


def _images():
  rng = np.random.default_rng(0)
  noisy = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
  low_contrast = rng.integers(90, 140, (12, 10, 3), dtype=np.uint8)  # autocontrast/equalize
  return [noisy, low_contrast]


def _pil_reference(name, pil, level, sign):
  """What PBA's PIL transforms compute for ``level`` (random signs fixed to ``sign``)."""
  factor = level * 1.8 / 10 + 0.1
  shift = (level * 10 * pil.size[0]) // 320
  affine = {"ShearX": (1, sign * level * 0.3 / 10, 0, 0, 1, 0),
            "ShearY": (1, 0, 0, sign * level * 0.3 / 10, 1, 0),
            "TranslateX": (1, 0, sign * shift, 0, 1, 0),
            "TranslateY": (1, 0, 0, 0, 1, sign * ((level * 10 * pil.size[1]) // 320))}
  if name in affine:
    return pil.transform(pil.size, Image.AFFINE, affine[name], fillcolor=FILL)
  return {
      "AutoContrast": lambda: ImageOps.autocontrast(pil),
      "Equalize": lambda: ImageOps.equalize(pil),
      "Invert": lambda: ImageOps.invert(pil),
      "Rotate": lambda: pil.rotate(sign * int(level * 30 / 10), fillcolor=FILL),
      "Posterize": lambda: ImageOps.posterize(pil, 4 - int(level * 4 / 10)),
      "Solarize": lambda: ImageOps.solarize(pil, 256 - int(level * 256 / 10)),
      "Color": lambda: ImageEnhance.Color(pil).enhance(factor),
      "Contrast": lambda: ImageEnhance.Contrast(pil).enhance(factor),
      "Brightness": lambda: ImageEnhance.Brightness(pil).enhance(factor),
      "Sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(factor),
  }[name]()


@pytest.mark.parametrize("name", [n for n in policies.OPERATIONS if n != "Cutout"])
def test_operation_matches_pil(name):
  key = jax.random.PRNGKey(3)
  sign = float(policies._random_sign(key))
  for image in _images():
    for level in (0, 4, 9):
      ours = np.asarray(policies.apply_operation(name, image, level, key, fill=128.0), int)
      theirs = np.asarray(_pil_reference(name, Image.fromarray(image), level, sign), int)
      difference = np.abs(ours - theirs)
      # PIL's blends compute in float and truncate: allow a 1-level difference on a few pixels.
      assert difference.max() <= 1 and np.mean(difference > 0) < 0.03, (name, level)


def test_cutout_matches_pba_numpy_rule():
  image = np.full((10, 10, 3), 200, np.uint8)
  key = jax.random.PRNGKey(5)
  ours = np.asarray(policies.apply_operation("Cutout", image, 9, key, fill=7.0))
  cy_key, cx_key = jax.random.split(key)
  cy, cx = int(jax.random.randint(cy_key, (), 0, 10)), int(jax.random.randint(cx_key, (), 0, 10))
  size = (9 * 20 * 10) // 320  # 2·L px at 32 px, scaled to 10 px
  expected = image.copy()
  expected[max(0, cy - size // 2):min(10, cy + size // 2),
           max(0, cx - size // 2):min(10, cx + size // 2)] = 7
  np.testing.assert_array_equal(ours, expected)


def test_probability_zero_is_the_identity():
  images = np.random.default_rng(1).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
  policy = policies.zero_policy().at[:, 1].set(9)  # big magnitudes, probability 0
  out = policies.augment_batch(jax.random.PRNGKey(0), images, policy, fill=FILL, pad=0,
                               flip=False, cutout_size=0)
  np.testing.assert_array_equal(out, images)


def test_count_rule_applies_at_most_count_operations():
  """Only the two Invert tuples fire (p = 1): an image changes iff exactly one was applied,
  i.e. the count was 1 (probability 0.3); counts 0 and 2 leave it as it was."""
  images = np.random.default_rng(2).integers(0, 256, (3000, 2, 2, 1), dtype=np.uint8)
  invert = policies.OPERATIONS.index("Invert")
  policy = policies.zero_policy().at[invert, 0].set(10).at[invert + 15, 0].set(10)
  out = np.asarray(policies.augment_batch(jax.random.PRNGKey(1), images, policy, fill=(0,),
                                          pad=0, flip=False, cutout_size=0))
  changed = np.mean(np.any(out != images, axis=(1, 2, 3)))
  assert abs(changed - 0.3) < 0.03


def test_pad_crop_flip_cutout_keep_shape_and_dtype():
  images = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  policy = jnp.full((30, 2), 5, jnp.int32)
  out = policies.augment_batch(jax.random.PRNGKey(2), images, policy, fill=FILL, pad=2,
                               cutout_size=4)
  assert out.shape == images.shape and out.dtype == jnp.uint8
  with pytest.raises(ValueError, match="a policy has shape"):
    policies.augment_batch(jax.random.PRNGKey(2), images, jnp.zeros((15, 2), jnp.int32),
                           fill=FILL)


def test_explore_stays_in_range_and_resamples_about_a_fifth():
  policy = jax.random.randint(jax.random.PRNGKey(0), (64, 30, 2), 0, 10)
  policy = policy.at[..., 1].set(jnp.minimum(policy[..., 1], 9))
  explored = jax.vmap(policies.explore)(jax.random.split(jax.random.PRNGKey(1), 64), policy)
  explored = np.asarray(explored)
  assert explored[..., 0].min() >= 0 and explored[..., 0].max() <= 10
  assert explored[..., 1].min() >= 0 and explored[..., 1].max() <= 9
  moved = np.abs(explored - np.asarray(policy))
  assert 0.3 < np.mean(moved > 0) < 0.95  # most entries move, some stay (shift 0)
  # Resampling reaches values a ±3 shift cannot.
  assert np.mean(moved > 3) > 0.02


def test_released_files_use_python2_operation_order(tmp_path):
  flat = np.zeros(60, int)
  flat[0:2] = (7, 3)    # first tuple of the file: Rotate in Python 2 order
  flat[30 + 2 * 14: 30 + 2 * 14 + 2] = (4, 8)  # last tuple of the second half: Contrast
  ours = policies.from_file_encoding(flat)
  assert tuple(ours[policies.OPERATIONS.index("Rotate")]) == (7, 3)
  assert tuple(ours[15 + policies.OPERATIONS.index("Contrast")]) == (4, 8)
  assert ours.sum() == 7 + 3 + 4 + 8

  other = np.zeros(60, int)
  other[2:4] = (10, 9)  # TranslateX
  lines = [json.dumps(["trial_1", "trial_0", 3, 3, list(map(int, flat)),
                       {"hp_policy": list(map(int, other))}]),
           str(["trial_2", "trial_1", 6, 6, {"hp_policy": list(map(int, other))},
                list(map(int, flat))])]
  path = tmp_path / "policy.txt"
  path.write_text("\n".join(lines) + "\n")
  schedule = policies.read_pba_schedule(str(path), epochs=10)
  assert [start for start, _ in schedule] == [0, 3, 6]
  np.testing.assert_array_equal(policies.policy_at(schedule, 4),
                                policies.from_file_encoding(other))
  np.testing.assert_array_equal(policies.policy_at(schedule, 9), ours)
  again = policies.schedule_from_json(policies.schedule_to_json(schedule))
  for (a, p), (b, q) in zip(schedule, again):
    assert a == b and np.array_equal(p, q)
  path.write_text("not a record\n")
  with pytest.raises(ValueError, match="not a PBA policy record"):
    policies.read_pba_schedule(str(path), epochs=10)
