"""PBA operations against PIL (what PBA applies), policy application, explore, schedule files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import policies

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from experiments.torch_reference import pil_policy  # noqa: E402

FILL = (128, 128, 128)


def _images():
  rng = np.random.default_rng(0)
  noisy = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
  low_contrast = rng.integers(90, 140, (12, 10, 3), dtype=np.uint8)  # autocontrast/equalize
  return [noisy, low_contrast]


def _key_with_sign(sign):
  """A key whose random direction (policies._random_sign) is ``sign``."""
  for seed in range(100):
    key = jax.random.PRNGKey(seed)
    if float(policies._random_sign(key)) == sign:
      return key
  raise AssertionError(f"no key with sign {sign}")


DIRECTED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


@pytest.mark.parametrize("name, sign", [(n, 1.0) for n in policies.OPERATIONS if n != "Cutout"]
                         + [(n, -1.0) for n in DIRECTED])
def test_operation_matches_pil(name, sign):
  """Each operation against PIL at three levels; the geometric ones in both directions."""
  key = _key_with_sign(sign)
  for image in _images():
    for level in (0, 4, 9):
      ours = np.asarray(policies.apply_operation(name, image, level, key, fill=128.0), int)
      theirs = np.asarray(pil_policy.pil_operation(name, Image.fromarray(image), level, sign,
                                                      FILL), int)
      difference = np.abs(ours - theirs)
      # PIL's blends compute in float and truncate: allow a 1-level difference on a few pixels.
      assert difference.max() <= 1 and np.mean(difference > 0) < 0.03, (name, level)
      if name in DIRECTED and level == 9:  # the two directions really differ
        other = np.asarray(pil_policy.pil_operation(name, Image.fromarray(image), level, -sign,
                                                     FILL), int)
        assert np.mean(ours != other) > 0.2, (name, sign)


def test_random_sign_is_fair():
  signs = jax.vmap(policies._random_sign)(jax.random.split(jax.random.PRNGKey(0), 2000))
  assert set(np.asarray(signs).tolist()) == {-1.0, 1.0}
  assert abs(float(np.mean(np.asarray(signs) > 0)) - 0.5) < 0.05


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
  theirs = pil_policy.pil_operation("Cutout", Image.fromarray(image), 9, 1.0, (7, 7, 7),
                                    (cy, cx))
  np.testing.assert_array_equal(np.asarray(theirs), expected)


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


def test_host_pil_pipeline_follows_the_same_count_rule():
  """The PIL reference pipeline (PBA's host-side augmentation) under the same Invert-only
  policy: images change with probability 0.3, and a changed image is exactly inverted."""
  images = np.random.default_rng(2).integers(0, 256, (2000, 2, 2, 1), dtype=np.uint8)
  invert = policies.OPERATIONS.index("Invert")
  policy = np.zeros((30, 2), int)
  policy[[invert, invert + 15], 0] = 10
  out = pil_policy.augment_batch(np.random.default_rng(0), images, policy, fill=(0,), pad=0,
                                 flip=False, cutout_size=0)
  changed = np.any(out != images, axis=(1, 2, 3))
  assert abs(np.mean(changed) - 0.3) < 0.03
  np.testing.assert_array_equal(out[changed], 255 - images[changed])


def test_host_pil_pipeline_pads_with_the_fill_colour():
  images = np.full((64, 4, 4, 3), 9, np.uint8)
  out = pil_policy.augment_batch(np.random.default_rng(1), images, np.zeros((30, 2), int),
                                 fill=(200, 100, 50), pad=2, cutout_size=0)
  assert out.shape == images.shape and out.dtype == np.uint8
  shifted = np.any(out != 9, axis=-1)
  assert 0.3 < np.mean(np.any(shifted, axis=(1, 2))) < 1.0  # offset (2, 2) keeps the image
  np.testing.assert_array_equal(out[shifted], np.broadcast_to([200, 100, 50],
                                                              out[shifted].shape))


def test_pad_crop_flip_cutout_keep_shape_and_dtype():
  images = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  policy = jnp.full((30, 2), 5, jnp.int32)
  out = policies.augment_batch(jax.random.PRNGKey(2), images, policy, fill=FILL, pad=2,
                               cutout_size=4)
  assert out.shape == images.shape and out.dtype == jnp.uint8
  with pytest.raises(ValueError, match="a policy has shape"):
    policies.augment_batch(jax.random.PRNGKey(2), images, jnp.zeros((15, 2), jnp.int32),
                           fill=FILL)


def test_image_by_image_and_all_at_once_agree():
  """``loop="map"`` (XLA:CPU's fast path) and ``"vmap"`` draw the same numbers; the blends'
  float rounding may differ by one grey level on a few pixels."""
  images = np.random.default_rng(4).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
  policy = jax.random.randint(jax.random.PRNGKey(3), (30, 2), 0, 10)
  outs = [np.asarray(policies.augment_batch(jax.random.PRNGKey(5), images, policy, fill=FILL,
                                            pad=2, cutout_size=4, loop=loop), int)
          for loop in policies.LOOPS]
  difference = np.abs(outs[0] - outs[1])
  assert difference.max() <= 1 and np.mean(difference > 0) < 0.01
  assert np.mean(outs[0] != images) > 0.3  # the policy did change the images
  with pytest.raises(ValueError, match="unknown loop 'scan'"):
    policies.augment_batch(jax.random.PRNGKey(5), images, policy, fill=FILL, loop="scan")


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


# --- Policy bookkeeping and schedule files: exact values and messages. ---

def test_operation_names_defaults_and_policy_shapes():
  image = np.full((4, 4, 3), 100, np.uint8)
  with pytest.raises(ValueError, match=r"^unknown operation 'Blur'; valid names: AutoContrast, "
                                       r"Equalize, Invert, Rotate, "):
    policies.apply_operation("Blur", image, 3)
  # Default key and fill: a full-size cutout at level 9 of a 4-pixel image fills with 128.
  out = np.asarray(policies.apply_operation("TranslateX", image, 9))
  assert out.dtype == np.uint8 and set(np.unique(out)) <= {100, 128} and np.any(out == 128)
  assert policies.zero_policy().shape == (30, 2) and policies.zero_policy(3).shape == (3, 30, 2)
  assert policies.zero_policy().dtype == jnp.int32 and not np.any(policies.zero_policy(2))
  for shape in ((15, 2), (30, 3), (30,)):
    with pytest.raises(ValueError, match=r"^a policy has shape \[30, 2\] \(probability, "
                                         r"magnitude\) per tuple, or \[P, 30, 2\] for a "
                                         rf"population; got \({shape[0]},"):
      policies.check_policy(np.zeros(shape))
  policy = np.zeros((30, 2), int)
  policy[16] = (7, 4)  # tuple 16 is operation 16 % 15 = 1, Equalize
  described = policies.describe(policy)
  assert len(described) == 30 and described[16] == ("Equalize", 0.7, 4)
  assert described[0] == ("AutoContrast", 0.0, 0) and described[29] == ("Cutout", 0.0, 0)


def test_explore_shifts_by_at_most_three_and_resamples_the_full_range():
  policy = jnp.full((200, 30, 2), 5, jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(2), 200)
  shifted = np.asarray(jax.vmap(lambda k, p: policies.explore(k, p, 0.0))(keys, policy))
  assert set(np.unique(shifted - 5)) == {-3, -2, -1, 0, 1, 2, 3}
  assert abs(np.mean(shifted == 5) - 0.25) < 0.03  # a shift of 0 is 1 of the 4 amounts
  resampled = np.asarray(jax.vmap(lambda k, p: policies.explore(k, p, 1.0))(keys, policy))
  assert set(np.unique(resampled[..., 0])) == set(range(11))  # probabilities 0..10
  assert set(np.unique(resampled[..., 1])) == set(range(10))  # magnitudes 0..9
  edge = jnp.asarray(np.tile([[10, 9]], (30, 1)))
  explored = np.asarray(jax.vmap(lambda k: policies.explore(k, edge, 0.0))(keys))
  assert explored[..., 0].max() == 10 and explored[..., 1].max() == 9  # clipped, not wrapped
  assert explored[..., 0].min() == 7 and explored[..., 1].min() == 6
  default = np.asarray(jax.vmap(lambda k: policies.explore(k, policy[0]))(keys))
  # By default 1 in 5 integers is resampled; only resampling leaves 5 ± 3: probabilities
  # land on {0, 1, 9, 10} with 4/11, magnitudes on {0, 1, 9} with 3/10.
  far = np.abs(default - 5) > 3
  assert abs(np.mean(far[..., 0]) - 0.2 * 4 / 11) < 0.015
  assert abs(np.mean(far[..., 1]) - 0.2 * 3 / 10) < 0.015
  with pytest.raises(ValueError, match="a policy has shape"):
    policies.explore(keys[0], jnp.zeros((30,), jnp.int32))


def test_schedule_helpers_and_their_errors(tmp_path):
  a, b = np.full((30, 2), 1), np.full((30, 2), 2)
  schedule = [(0, a), (5, b)]
  assert policies.policy_at(schedule, 0)[0, 0] == 1 and policies.policy_at(schedule, 4)[0, 0] == 1
  assert policies.policy_at(schedule, 5)[0, 0] == 2 and policies.policy_at(schedule, 99)[0, 0] == 2
  assert policies.policy_at([(3, b)], 1)[0, 0] == 2  # before the first start: the first policy
  assert policies.policy_at(schedule, 5).dtype == np.int32
  with pytest.raises(ValueError, match=r"^empty policy schedule\.$"):
    policies.policy_at([], 1)
  text = policies.schedule_to_json(schedule)
  assert json.loads(text)["operations"] == list(policies.OPERATIONS)
  assert json.loads(text)["schedule"][1] == [5, [2] * 60]
  wrong = json.dumps({"operations": list(policies.PY2_FILE_ORDER), "schedule": []})
  with pytest.raises(ValueError, match=r"^schedule file lists its operations in another order "
                                       r"than kd_jax\.policies\.OPERATIONS\.$"):
    policies.schedule_from_json(wrong)
  assert policies.schedule_from_json(json.dumps({"schedule": [[2, [3] * 60]]}))[0][0] == 2
  with pytest.raises(ValueError, match=r"^a policy encoding has 60 integers; got \(58,\)\.$"):
    policies.from_file_encoding([0] * 58)
  # An explicit order: the identity order maps tuple k to operation k.
  flat = np.arange(60)
  np.testing.assert_array_equal(policies.from_file_encoding(flat, policies.OPERATIONS),
                                flat.reshape(30, 2))

  def write(lines):
    path = tmp_path / "log.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)

  zeros, ones = [0] * 60, [1] * 60
  with pytest.raises(ValueError, match=r":1: a PBA record has 6 fields; got 5\.$"):
    policies.read_pba_schedule(write([json.dumps(["t1", "t0", 3, 3, zeros])]), epochs=10)
  with pytest.raises(ValueError, match=r"holds no policy records\.$"):
    policies.read_pba_schedule(write(["", "  "]), epochs=10)
  with pytest.raises(ValueError, match=r": a clone epoch \(12\) exceeds epochs=10\.$"):
    policies.read_pba_schedule(write([json.dumps(["t1", "t0", 12, 12, zeros, ones])]), epochs=10)
  with pytest.raises(ValueError, match=r":2: not a PBA policy record"):
    policies.read_pba_schedule(write([json.dumps(["t1", "t0", 3, 3, zeros, ones]), "[1, 2"]),
                               epochs=10)
  # Leading lines of another lineage are skipped; blank lines too; the clone epoch counts.
  lines = [json.dumps(["x9", "x8", 1, 1, ones, ones]), "",
           json.dumps(["t1", "t0", 2, 4, zeros, ones]),
           json.dumps(["t2", "t1", 6, 7, ones, zeros])]
  schedule = policies.read_pba_schedule(write(lines), epochs=7)
  assert [start for start, _ in schedule] == [0, 4, 7]
  assert [int(p[0, 0]) for _, p in schedule] == [0, 1, 0]


def test_pipeline_stages_pad_with_fill_flip_and_cut_out():
  """With a zero policy: padding shows the per-channel fill, offsets cover all 5 × 5 shifts
  of pad 2; flips mirror about half the images; cutout fills a clipped square."""
  fill = (200, 100, 50)
  images = np.full((200, 6, 6, 3), 9, np.uint8)
  out = np.asarray(policies.augment_batch(jax.random.PRNGKey(0), images, policies.zero_policy(),
                                          fill=fill, pad=2, flip=False, cutout_size=0))
  shifted = np.any(out != 9, axis=-1)
  np.testing.assert_array_equal(out[shifted], np.broadcast_to(fill, out[shifted].shape))
  # The uncovered band shows the vertical and horizontal shift: rows of fill on top or bottom.
  dy = [int(np.sum(np.all(s, axis=1)[:3]) - np.sum(np.all(s, axis=1)[3:])) for s in shifted]
  dx = [int(np.sum(np.all(s, axis=0)[:3]) - np.sum(np.all(s, axis=0)[3:])) for s in shifted]
  assert set(zip(dy, dx)) == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}
  columns = np.broadcast_to(np.arange(6, dtype=np.uint8)[None, None, :, None] * 40, (64, 6, 6, 3))
  out = np.asarray(policies.augment_batch(jax.random.PRNGKey(1), columns, policies.zero_policy(),
                                          fill=fill, pad=0, cutout_size=0))
  mirrored = np.all(out == columns[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(mirrored | np.all(out == columns, axis=(1, 2, 3))) and 16 < mirrored.sum() < 48
  out = np.asarray(policies.augment_batch(jax.random.PRNGKey(2), images[:64],
                                          policies.zero_policy(), fill=fill, pad=0, flip=False,
                                          cutout_size=4))
  cut = np.all(out == fill, axis=-1)
  assert np.all(cut | np.all(out == 9, axis=-1))
  sizes = cut.sum(axis=(1, 2))
  assert sizes.max() == 16 and sizes.min() >= 4  # a 4 × 4 square, clipped to at least 2 × 2
  for c in cut:
    rows, cols = np.where(c)
    assert c[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_gray_is_pils_fixed_point_conversion():
  """PIL's RGB → L rounds (299·R + 587·G + 114·B)/1000 in 16-bit fixed point; among them
  pixels whose weighted sum sits exactly one below the rounding point."""
  rng = np.random.default_rng(5)
  pixels = np.concatenate([[[0, 62, 229], [0, 183, 27], [1, 63, 230], [2, 64, 231]],
                           rng.integers(0, 256, (60, 3))]).astype(np.uint8)[None]
  ours = np.asarray(policies._gray(jnp.asarray(pixels, jnp.float32)))
  np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(pixels).convert("L")))


def test_default_key_and_per_entry_resampling():
  image = np.random.default_rng(6).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  for name in ("Rotate", "Cutout"):  # the default key is PRNGKey(0)
    np.testing.assert_array_equal(policies.apply_operation(name, image, 7),
                                  policies.apply_operation(name, image, 7, jax.random.PRNGKey(0)))
  # Each integer is resampled on its own coin: at probability 1/2 every one of 100 policies
  # has some integers that only resampling reaches (a ±3 shift of 5 never leaves 2..8).
  keys = jax.random.split(jax.random.PRNGKey(7), 100)
  explored = np.asarray(jax.vmap(lambda k: policies.explore(k, jnp.full((30, 2), 5), 0.5))(keys))
  assert np.all(np.any(np.abs(explored - 5) > 3, axis=(1, 2)))
  assert np.all(np.any(np.abs(explored - 5) <= 3, axis=(1, 2)))


def test_equalize_and_autocontrast_on_large_images_match_pil():
  """PIL's equalize changes nothing below 256 pixels, so the 120-pixel images above never
  exercise it: a 20 × 20 image whose channels differ in range, in their brightest value
  and in having two values only (one of them once)."""
  rng = np.random.default_rng(8)
  image = np.stack([np.where(np.arange(400) == 7, 200, 10).reshape(20, 20),
                    rng.integers(50, 151, (20, 20)), rng.integers(0, 231, (20, 20))],
                   -1).astype(np.uint8)
  # Brightest values that are frequent (PIL leaves their count out of the step), and not the
  # same in every channel.
  bright = np.stack([np.where(np.arange(400) < 150, 200, 10).reshape(20, 20),
                     rng.integers(50, 151, (20, 20)),
                     np.where(np.arange(400) % 8 < 3, 230, rng.integers(0, 230, 400)).reshape(
                         20, 20)], -1).astype(np.uint8)
  for name, image in (("Equalize", image), ("AutoContrast", image), ("Equalize", bright)):
    ours = np.asarray(policies.apply_operation(name, image, 5), int)
    theirs = np.asarray(pil_policy.pil_operation(name, Image.fromarray(image), 5, 1.0, FILL),
                        int)
    difference = np.abs(ours - theirs)  # AutoContrast's float32 scale: ±1 on a few pixels
    assert difference.max() <= (0 if name == "Equalize" else 1)
    assert np.mean(difference > 0) < 0.01 and np.any(ours != image)
