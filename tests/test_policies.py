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
  # Jitted: op by op, the all-at-once form runs every operation's branch eagerly (slow).
  outs = [np.asarray(jax.jit(lambda key, x, loop=loop: policies.augment_batch(
      key, x, policy, fill=FILL, pad=2, cutout_size=4, loop=loop))(jax.random.PRNGKey(5), images),
                     int)
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


# --- AutoAugment: the policies as data, the magnitudes, the operations against PIL. ---


def test_autoaugment_policies_are_25_pairs_of_known_operations():
  for name in ("cifar10", "imagenet"):
    policy = policies.AUTOAUGMENT_POLICIES[name]
    assert len(policy) == 25 and all(len(pair) == 2 for pair in policy)
    for operation, probability, magnitude_bin in (op for pair in policy for op in pair):
      assert operation in policies.AUTOAUGMENT_OPERATIONS
      assert 0.0 <= probability <= 1.0
      assert (magnitude_bin is None) == (operation in ("AutoContrast", "Equalize", "Invert"))
  # Spot checks against the AutoAugment paper's appendix (torchvision's lists).
  assert policies.AUTOAUGMENT_POLICIES["cifar10"][0] == (("Invert", 0.1, None),
                                                         ("Contrast", 0.2, 6))
  assert policies.AUTOAUGMENT_POLICIES["imagenet"][0] == (("Posterize", 0.4, 8),
                                                          ("Rotate", 0.6, 9))
  encoded = policies.encode_autoaugment("cifar10")
  assert encoded["operation"].shape == encoded["bin"].shape == (25, 2)
  assert encoded["operation"][1].tolist() == [policies.AUTOAUGMENT_OPERATIONS.index("Rotate"),
                                              policies.AUTOAUGMENT_OPERATIONS.index("TranslateX")]
  np.testing.assert_allclose(encoded["probability"][1], [0.7, 0.3])
  assert encoded["bin"][1].tolist() == [2, 9] and encoded["bin"][0].tolist() == [0, 6]


def test_autoaugment_magnitudes_by_hand():
  magnitudes, signed = policies.autoaugment_magnitudes(32, 24)
  row = {name: magnitudes[i] for i, name in enumerate(policies.AUTOAUGMENT_OPERATIONS)}
  np.testing.assert_allclose(row["ShearX"][[0, 3, 9]], [0.0, 0.1, 0.3], rtol=1e-6)
  np.testing.assert_allclose(row["Rotate"][[1, 9]], [10 / 3, 30.0], rtol=1e-6)
  # 150/331 of the side: 14.50 px of 32 rows, 10.88 px of 24 columns at bin 9.
  np.testing.assert_allclose(row["TranslateY"][9], 150 / 331 * 32, rtol=1e-6)
  np.testing.assert_allclose(row["TranslateX"][9], 150 / 331 * 24, rtol=1e-6)
  assert np.trunc(row["TranslateY"]).astype(int).tolist() == [0, 1, 3, 4, 6, 8, 9, 11, 12, 14]
  np.testing.assert_allclose(row["Brightness"][[0, 9]], [0.0, 0.9], rtol=1e-6)
  assert row["Posterize"].astype(int).tolist() == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
  np.testing.assert_allclose(row["Solarize"][[0, 3, 9]], [255.0, 170.0, 0.0], rtol=1e-6)
  assert [n for n, s in zip(policies.AUTOAUGMENT_OPERATIONS, signed) if not s] == [
      "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert"]


@pytest.mark.parametrize("name", policies.AUTOAUGMENT_OPERATIONS)
def test_autoaugment_operation_matches_pil(name):
  """Each operation at bins 3 and 9, in both directions where signed, against PIL. (Bins
  whose shear puts pixel centres exactly on a pixel edge, such as bin 2's 1/15 at column
  7.5, round differently in float32 and PIL's doubles; 0.1 and 0.3 never do.)"""
  magnitudes, signed = policies.autoaugment_magnitudes(12, 10)
  index = policies.AUTOAUGMENT_OPERATIONS.index(name)
  branch = jax.jit(lambda image, m: policies.AUTOAUGMENT_BRANCHES[index](
      image, m, jnp.full((3,), 128.0)))
  for image in _images():
    for magnitude_bin in (3, 9):
      for sign in ((1.0, -1.0) if signed[index] else (1.0,)):
        magnitude = float(magnitudes[index, magnitude_bin]) * sign
        ours = np.asarray(branch(jnp.asarray(image, jnp.float32), jnp.float32(magnitude)), int)
        theirs = np.asarray(pil_policy.pil_autoaugment_operation(
            name, Image.fromarray(image), magnitude, FILL), int)
        difference = np.abs(ours - theirs)
        assert difference.max() <= 1 and np.mean(difference > 0) < 0.03, (name, magnitude)


def _batch(seed=0, size=(64, 8, 8, 3)):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, size), jnp.uint8)


def test_autoaugment_applies_each_operation_with_its_probability():
  images = _batch()
  key = jax.random.PRNGKey(0)
  # Invert always, then nothing (probability 0): exactly 255 − x for every image.
  always = [(("Invert", 1.0, None), ("Equalize", 0.0, None))]
  np.testing.assert_array_equal(policies.autoaugment_batch(key, images, always),
                                255 - np.asarray(images))
  # Inverting twice is the identity; probability-0 operations never fire.
  twice = [(("Invert", 1.0, None), ("Invert", 1.0, None))]
  np.testing.assert_array_equal(policies.autoaugment_batch(key, images, twice), images)
  never = [(("Rotate", 0.0, 9), ("Solarize", 0.0, 9))]
  np.testing.assert_array_equal(policies.autoaugment_batch(key, images, never), images)
  # Probability 0.5: about half the images are inverted (64 images: 20..44 is > 3 sigma).
  half = [(("Invert", 0.5, None), ("Invert", 0.0, None))]
  out = np.asarray(policies.autoaugment_batch(key, images, half))
  inverted = np.all(out == 255 - np.asarray(images), axis=(1, 2, 3))
  assert 20 <= inverted.sum() <= 44
  assert np.all(inverted | np.all(out == np.asarray(images), axis=(1, 2, 3)))


def test_autoaugment_draws_sub_policies_signs_per_image_or_per_batch():
  images = _batch(1)
  # Two sub-policies: invert, or nothing (posterize to 8 bits keeps every value).
  policy = [(("Invert", 1.0, None), ("Invert", 0.0, None)),
            (("Posterize", 1.0, 0), ("Invert", 0.0, None))]
  for per_image, expected_kinds in ((True, 2), (False, 1)):
    kinds = set()
    # Jitted once per form: each eager call would trace and compile the policy again.
    augment = jax.jit(lambda key, x, per_image=per_image: policies.autoaugment_batch(
        key, x, policy, per_image=per_image))
    for seed in range(4):
      out = np.asarray(augment(jax.random.PRNGKey(seed), images))
      inverted = np.all(out == 255 - np.asarray(images), axis=(1, 2, 3))
      kinds.add(tuple(sorted(set(inverted.tolist()))))
    if per_image:
      assert (False, True) in kinds  # both kinds inside one batch
    else:
      assert kinds <= {(False,), (True,)} and len(kinds) == 2  # whole batches, both seen
  # Signed magnitudes go both ways: a 30-degree rotation of an asymmetric image.
  image = np.zeros((1, 11, 11, 1), np.uint8)
  image[0, 0:3, 4:7] = 255  # a block above the centre turns left or right
  rotate = [(("Rotate", 1.0, 9), ("Invert", 0.0, None))]
  columns = []
  augment = jax.jit(lambda key, x: policies.autoaugment_batch(key, x, rotate))
  for seed in range(12):
    out = np.asarray(augment(jax.random.PRNGKey(seed), image))
    columns.append(np.nonzero(out[0, :, :, 0])[1].mean())  # the block's mean column
  assert min(columns) < 4.5 < max(columns)


def test_autoaugment_is_jitable_deterministic_and_checks_its_policy():
  images = _batch(2, (6, 12, 10, 3))
  run = jax.jit(lambda key, x: policies.autoaugment_batch(key, x, "imagenet", fill=128.0))
  first = run(jax.random.PRNGKey(3), images)
  assert first.dtype == jnp.uint8 and first.shape == images.shape
  np.testing.assert_array_equal(first, run(jax.random.PRNGKey(3), images))
  np.testing.assert_array_equal(first, jax.jit(lambda key, x: policies.autoaugment_batch(
      key, x, "imagenet", fill=128.0, loop="vmap"))(jax.random.PRNGKey(3), images))
  for policy, message in (("svhn", "unknown AutoAugment policy 'svhn'; valid names: cifar10, "
                                   "imagenet"),
                          ([(("Blur", 0.5, 3), ("Invert", 0.1, None))], "unknown operation"),
                          ([(("Rotate", 1.5, 3), ("Invert", 0.1, None))], r"not in \[0, 1\]"),
                          ([(("Rotate", 0.5, None), ("Invert", 0.1, None))],
                           "Rotate needs a magnitude bin 0..9"),
                          ([(("Invert", 0.1, None),)], "has 1 operations")):
    with pytest.raises(ValueError, match=message):
      policies.autoaugment_batch(jax.random.PRNGKey(0), images, policy)


# --- RandAugment: N operations drawn uniformly, at one magnitude. ---

def test_randaugment_magnitudes_at_31_bins_by_hand():
  magnitudes, _ = policies.autoaugment_magnitudes(32, 32, policies.RANDAUGMENT_BINS)
  row = {name: magnitudes[i] for i, name in enumerate(policies.AUTOAUGMENT_OPERATIONS)}
  # torchvision's RandAugment at its default M = 9 of 31: 9°, shear 0.09, 0.27 enhance,
  # 8 − round(9 / 7.5) = 7 bits, solarize above 255·(1 − 9/30) = 178.5.
  np.testing.assert_allclose([row["Rotate"][9], row["ShearX"][9], row["Color"][9]],
                             [9.0, 0.09, 0.27], rtol=1e-6)
  assert row["Posterize"][9] == 7 and row["Posterize"][30] == 4
  np.testing.assert_allclose(row["Solarize"][9], 178.5, rtol=1e-6)
  assert "Invert" not in policies.RANDAUGMENT_OPERATIONS
  assert len(policies.RANDAUGMENT_OPERATIONS) == 14  # the paper's list, identity included


def test_randaugment_applies_one_drawn_operation_as_pil_would():
  """With N = 1 every image is one of the 14 operations at bin M (either sign where signed),
  each checked against PIL; the draws cover the list. (M = 30, the strongest: shear 0.3,
  whose pixel centres never fall on a pixel edge, unlike 0.2's.)"""
  image = _images()[0]
  images = jnp.asarray(np.repeat(image[None], 96, axis=0))
  out = np.asarray(policies.randaugment_batch(jax.random.PRNGKey(3), images, 1, 30), int)
  magnitudes, signed = policies.autoaugment_magnitudes(12, 10, policies.RANDAUGMENT_BINS)
  candidates = {"Identity": image.astype(int)}
  for index, name in enumerate(policies.AUTOAUGMENT_OPERATIONS):
    if name in policies.RANDAUGMENT_OPERATIONS:
      for sign in ((1.0, -1.0) if signed[index] else (1.0,)):
        candidates[f"{name}{sign:+.0f}"] = np.asarray(pil_policy.pil_autoaugment_operation(
            name, Image.fromarray(image), float(magnitudes[index, 30]) * sign, (0, 0, 0)), int)
  seen = set()
  for result in out:
    matches = [name for name, expected in candidates.items()
               if np.abs(result - expected).max() <= 1 and np.mean(result != expected) < 0.03]
    assert matches, "an output that is none of RandAugment's operations"
    seen.update(name.rstrip("+-1") for name in matches)
  assert len(seen) >= 12, seen  # 96 draws of 14 operations


def test_randaugment_draws_per_image_zero_ops_and_random_magnitudes():
  images = _batch(2, (16, 8, 8, 3))
  key = jax.random.PRNGKey(0)
  augment = jax.jit(policies.randaugment_batch, static_argnums=(2, 3),
                    static_argnames=("random_magnitude", "per_image", "loop"))
  np.testing.assert_array_equal(policies.randaugment_batch(key, images, 0, 9), images)
  # vmap and map give the same images up to one level where rounding lands on .5.
  by_map = np.asarray(augment(key, images, 2, 9, loop="map"), int)
  by_vmap = np.asarray(augment(key, images, 2, 9, loop="vmap"), int)
  assert np.abs(by_map - by_vmap).max() <= 1 and np.mean(by_map != by_vmap) < 0.01
  # One draw for the whole batch: identical images stay identical.
  same = jnp.asarray(np.repeat(np.asarray(images[:1]), 16, axis=0))
  once = np.asarray(augment(key, same, 2, 9, per_image=False, loop="map"))
  assert all(np.array_equal(once[0], o) for o in once)
  each = np.asarray(augment(key, same, 2, 9, loop="map"))
  assert not all(np.array_equal(each[0], o) for o in each)
  # random_magnitude draws a bin in 0..M per operation (the same operations and signs):
  # at M = 0 it is the fixed magnitude 0, at M = 9 it differs from the fixed 9.
  np.testing.assert_array_equal(augment(key, images, 2, 0, random_magnitude=True, loop="map"),
                                augment(key, images, 2, 0, loop="map"))
  assert not np.array_equal(augment(key, images, 2, 9, random_magnitude=True, loop="map"),
                            by_map)


@pytest.mark.parametrize("num_ops, magnitude, bins, message", [
    (-1, 9, 31, "num_ops must be an int ≥ 0; got -1"),
    (2, 31, 31, r"magnitude must be an int bin in 0..30 \(torchvision's default: 9 of 31\); "
                "got 31"),
    (2, 9.5, 31, "got 9.5"),
    (2, 1, 1, "bins must be an int ≥ 2; got 1"),
])
def test_randaugment_refuses_bad_options(num_ops, magnitude, bins, message):
  with pytest.raises(ValueError, match=message):
    policies.randaugment_batch(jax.random.PRNGKey(0), _batch(), num_ops, magnitude, bins=bins)
