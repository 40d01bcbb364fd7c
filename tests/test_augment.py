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


def _centre(box_key, height, width):
  """The centre draw of cutmix_box: (row, column), uniform over the pixels."""
  cy_key, cx_key = jax.random.split(box_key)
  return (int(jax.random.randint(cy_key, (), 0, height)),
          int(jax.random.randint(cx_key, (), 0, width)))


def _formula_box(height, width, cut_h, cut_w, cy, cx):
  """CutMix's box by hand: half-sides cut // 2 either side of the centre, clipped."""
  box = np.zeros((height, width), bool)
  box[max(cy - cut_h // 2, 0):min(cy + cut_h // 2, height),
      max(cx - cut_w // 2, 0):min(cx + cut_w // 2, width)] = True
  return box


# (height, width, λ, int(H·sqrt(1−λ)), int(W·sqrt(1−λ))), worked out by hand:
# sqrt(0.81) = 0.9, sqrt(0.5) = 0.7071, sqrt(0.25) = 0.5, sqrt(0.7) = 0.8367, sqrt(0.96) = 0.9798.
BOX_SIDES = [(32, 32, 0.19, 28, 28), (32, 32, 0.5, 22, 22), (32, 32, 0.75, 16, 16),
             (16, 40, 0.75, 8, 20), (10, 25, 0.3, 8, 20), (20, 12, 0.04, 19, 11),
             (32, 32, 1.0, 0, 0), (8, 8, 0.0, 8, 8),
             # sqrt(0.2) = 0.447: one side below 2 pixels, so the box is empty even at the
             # image's first row or column.
             (2, 20, 0.8, 0, 8), (20, 2, 0.8, 8, 0)]


@pytest.mark.parametrize("height, width, lam, cut_h, cut_w", BOX_SIDES)
def test_cutmix_box_side_ratio_is_sqrt_one_minus_lambda(height, width, lam, cut_h, cut_w):
  """The box against the formula for fixed centre draws, clipped or not: side
  int(H·sqrt(1−λ)) by int(W·sqrt(1−λ)) (rows by columns), half of it either side."""
  box_fn = jax.jit(augment.cutmix_box, static_argnums=(1, 2))
  for seed in range(12):
    key = jax.random.PRNGKey(seed)
    box = np.asarray(box_fn(key, height, width, jnp.float32(lam)))
    cy, cx = _centre(key, height, width)
    np.testing.assert_array_equal(box, _formula_box(height, width, cut_h, cut_w, cy, cx))


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_kept_area_equals_lambda(seed):
  """For fixed draws (λ ~ Beta(α, α), shift, centre): the pasted region is the formula's box
  for the drawn λ, the same for every image, filled from the partner; the returned λ is
  1 − box area / (H·W) of that box."""
  images = _constant_images(size=16)
  key = jax.random.PRNGKey(seed)
  alpha = 1.0 if seed % 2 else 0.4
  mixed, perm, lam = jax.jit(augment.cutmix, static_argnums=2)(key, images, alpha)
  mixed, perm = np.asarray(mixed), np.asarray(perm)
  lam_key, _, box_key = jax.random.split(key, 3)
  drawn = float(jax.random.beta(lam_key, alpha, alpha))
  side = int(16 * np.sqrt(1.0 - drawn))
  box = _formula_box(16, 16, side, side, *_centre(box_key, 16, 16))
  for i in range(8):
    np.testing.assert_array_equal(mixed[i, :, :, 0], np.where(box, perm[i] + 1, i + 1))
    assert np.all(mixed[i] == mixed[i, :, :, :1])  # every channel alike
  assert float(lam) == pytest.approx(1.0 - box.sum() / 256.0, abs=1e-6)
  assert mixed.dtype == np.float32


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


# --- Distributions, defaults, dtypes and errors, pinned one by one. ---

@pytest.mark.parametrize("pad", [1, 2, None])
def test_crop_offsets_are_uniform_over_all_positions(pad):
  """Row and column offsets uniform over {0, ..., 2·pad} (pad 4 by default): every one of the
  (2·pad + 1)² crops occurs, each offset about 1/(2·pad + 1) of the time."""
  size = 9
  grid = jnp.arange(1, size + 1, dtype=jnp.int32)
  images = jnp.broadcast_to(grid[None, :, None, None] * 10 + grid[None, None, :, None],
                            (600, size, size, 1))
  key = jax.random.PRNGKey(4)
  if pad is None:
    out, pad = augment.random_crop_flip(key, images, flip=False), 4
  else:
    out = augment.random_crop_flip(key, images, pad, flip=False)
  # Crop pixel (pad, pad) is image pixel (dy, dx) (never padding), whose value encodes it.
  value = np.asarray(out)[:, pad, pad, 0]
  dy, dx = value // 10 - 1, value % 10 - 1
  offsets = set(zip(dy.tolist(), dx.tolist()))
  positions = 2 * pad + 1
  assert offsets == {(a, b) for a in range(positions) for b in range(positions)}
  for d in (dy, dx):
    frequencies = np.bincount(d, minlength=positions) / len(d)
    assert np.all(np.abs(frequencies - 1 / positions) < 0.3 / positions), frequencies


def test_flip_is_on_by_default():
  images = _images(batch=32)
  out = augment.random_crop_flip(jax.random.PRNGKey(2), images, 0)
  flipped = sum(bool(jnp.array_equal(out[i], images[i, :, ::-1])) for i in range(32))
  assert 4 < flipped < 28


def test_shift_permutation_draws_every_shift():
  shifts = {int(augment.shift_permutation(jax.random.PRNGKey(seed), 4)[0])
            for seed in range(40)}
  assert shifts == {1, 2, 3}  # perm[0] = shift
  perm = np.asarray(augment.shift_permutation(jax.random.PRNGKey(0), 5))
  assert np.array_equal(perm, (np.arange(5) + perm[0]) % 5)  # a cyclic shift


def test_default_alpha_is_one_and_float_images_keep_their_dtype():
  images = _constant_images()
  key = jax.random.PRNGKey(11)
  for mix in (augment.mixup, augment.cutmix):
    default, explicit = mix(key, images), mix(key, images, 1.0)
    for a, b in zip(default, explicit):
      np.testing.assert_array_equal(a, b)
    lams = [(float(mix(k, images)[2]), float(mix(k, images, 0.2)[2]))
            for k in jax.random.split(key, 5)]
    assert any(a != b for a, b in lams)  # α is used
  mixed, _, _ = augment.mixup(key, images.astype(jnp.bfloat16))
  assert mixed.dtype == jnp.bfloat16
  mixed, _, _ = augment.cutmix(key, images.astype(jnp.uint8))
  assert mixed.dtype == jnp.uint8
  assert augment.normalize(jnp.zeros((1, 2, 2, 1), jnp.uint8), (0.5,), (0.5,),
                           jnp.bfloat16).dtype == jnp.bfloat16
  np.testing.assert_allclose(augment.normalize(jnp.full((1, 1, 1, 2), 51, jnp.uint8),
                                               (0.1, 0.2), (0.5, 0.25)), [[[[0.2, 0.0]]]],
                             atol=1e-6)
  flipped = augment.random_crop_flip(key, images[:, :, :3] * jnp.arange(1.0, 4.0)[:, None],
                                     pad=0)  # default flip=True
  assert flipped.shape == (8, 16, 3, 3)


@pytest.mark.parametrize("call, error, message", [
    (lambda: augment.random_crop_flip(jax.random.PRNGKey(0), jnp.zeros((8, 8, 3))), ValueError,
     r"^images must have shape \[batch, height, width, channels\]; got shape \(8, 8, 3\)\.$"),
    (lambda: augment.random_crop_flip(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), pad=2.0),
     ValueError, r"^pad must be an integer ≥ 0 \(a Python or NumPy int: it fixes shapes\); got 2\.0\.$"),
    (lambda: augment.mixup(jax.random.PRNGKey(0), jnp.zeros((2, 4, 4)), 1.0), ValueError,
     r"^images must have shape"),
    (lambda: augment.cutmix(jax.random.PRNGKey(0), jnp.zeros((2, 4, 4)), 1.0), ValueError,
     r"^images must have shape"),
    (lambda: augment.normalize(jnp.zeros((4, 4, 3)), (0.0,), (1.0,)), ValueError,
     r"^images must have shape"),
    (lambda: augment.cutmix(jax.random.PRNGKey(0), jnp.zeros((2, 4, 4, 1)), alpha=0.0),
     ValueError, r"^alpha must be > 0; got 0\.0\.$"),
    (lambda: augment.mixup(jax.random.PRNGKey(0), jnp.zeros((2, 4, 4, 1)), alpha=-1),
     ValueError, r"^alpha must be > 0; got -1\.$"),
    (lambda: augment.mixup(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1))), ValueError,
     r"^mixing needs a batch of at least 2 images; got 1\.$"),
    (lambda: augment.pick_top(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 1), ValueError,
     r"^scores must have shape \[pool\]; got \(2, 3\)\.$"),
    (lambda: augment.pick_top(jnp.zeros(4), jnp.zeros((3, 2)), 1), ValueError,
     r"^scores has 4 entries but images has 3\.$"),
    (lambda: augment.pick_top(jnp.zeros(4), jnp.zeros((4, 2)), 0), ValueError,
     r"^n_pick must be an integer in \[1, 4\] \(a Python or NumPy int: it fixes shapes\); "
     r"got 0\.$"),
    (lambda: augment.pick_top(jnp.zeros(4), jnp.zeros((4, 2)), 2.0), ValueError,
     r"^n_pick must be an integer in \[1, 4\] \(a Python or NumPy int: it fixes shapes\); "
     r"got 2\.0\.$"),
])
def test_augment_errors(call, error, message):
  with pytest.raises(error, match=message):
    call()


def test_pick_top_whole_pool_and_indices():
  scores = jnp.array([0.5, -2.0, 3.0, 1.0])
  np.testing.assert_array_equal(augment.pick_top_indices(scores, 4), [2, 3, 0, 1])
  np.testing.assert_array_equal(augment.pick_top_indices(scores, 1, 4), [2])
  np.testing.assert_array_equal(augment.pick_top(scores, jnp.arange(4) * 10, 2), [20, 30])
  # Traced alpha (a schedule value) is accepted.
  mixed, _, lam = jax.jit(augment.mixup)(jax.random.PRNGKey(0), _constant_images(),
                                         jnp.float32(0.7))
  assert 0.0 <= float(lam) <= 1.0 and mixed.shape == (8, 16, 16, 3)


def test_cutout_paints_one_clipped_square_per_image_or_per_batch():
  images = jnp.ones((32, 8, 8, 2), jnp.float32)
  out = np.asarray(augment.cutout(jax.random.PRNGKey(0), images, 4))
  assert out.shape == images.shape and out.dtype == np.float32
  zeroed = out[..., 0] == 0.0
  assert np.array_equal(zeroed, out[..., 1] == 0.0)  # every channel alike
  for mask in zeroed:  # a clipped square: rows × cols of at most 4 each, at least 2 each
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4
    assert mask.sum() == len(rows) * len(cols)
    assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
  assert len({m.tobytes() for m in zeroed}) > 5  # per image: different squares
  shared = np.asarray(augment.cutout(jax.random.PRNGKey(0), images, 4, per_image=False))
  assert len({m.tobytes() for m in shared[..., 0] == 0.0}) == 1
  # DeVries' rule by hand: centre (row 0, col 7) of a 4-pixel square keeps rows 0..1, cols 5..7.
  centre_key = next(jax.random.PRNGKey(s) for s in range(500)
                    if [int(v) for v in (jax.random.randint(jax.random.split(
                        jax.random.PRNGKey(s))[0], (1, 1, 1), 0, 8)[0, 0, 0],
                        jax.random.randint(jax.random.split(jax.random.PRNGKey(s))[1],
                                           (1, 1, 1), 0, 8)[0, 0, 0])] == [0, 7])
  one = np.asarray(augment.cutout(centre_key, images[:1], 4, per_image=False, fill=-1.0))
  expected = np.ones((8, 8))
  expected[0:2, 5:8] = -1.0
  np.testing.assert_array_equal(one[0, ..., 0], expected)
  np.testing.assert_array_equal(augment.cutout(jax.random.PRNGKey(0), images, 0), images)


def test_crop_flip_can_draw_once_for_the_batch():
  images = jnp.tile(jnp.arange(64, dtype=jnp.float32).reshape(1, 8, 8, 1), (16, 1, 1, 1))
  for seed in range(3):
    out = np.asarray(augment.random_crop_flip(jax.random.PRNGKey(seed), images, pad=2,
                                              per_image=False))
    assert all(np.array_equal(out[0], o) for o in out)  # one crop and one coin for all
  per_image = np.asarray(augment.random_crop_flip(jax.random.PRNGKey(0), images, pad=2))
  assert len({o.tobytes() for o in per_image}) > 4


# --- CutMix-pick as a pure function (cutmix_pool, pick_scores, cutmix_pick) ---

def _entropy(logits):
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return -(p * np.log(p)).sum(-1)


def test_cutmix_pool_is_r_cutmix_draws_with_their_indices():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 6, 2)), jnp.bfloat16)
  key = jax.random.PRNGKey(3)
  pool = augment.cutmix_pool(key, images, alpha=0.7, pool_rounds=3)
  assert pool.images.shape == (12, 6, 6, 2) and pool.images.dtype == jnp.bfloat16
  assert pool.source.tolist() == [0, 1, 2, 3] * 3 and pool.source.dtype == jnp.int32
  for r, round_key in enumerate(jax.random.split(key, 3)):  # round r is cutmix(key_r)
    mixed, perm, lam = augment.cutmix(round_key, images, 0.7)
    np.testing.assert_array_equal(pool.images[4 * r:4 * r + 4], mixed)
    np.testing.assert_array_equal(pool.partner[4 * r:4 * r + 4], perm)
    np.testing.assert_allclose(pool.lam[4 * r:4 * r + 4], np.full(4, float(lam)))
  with pytest.raises(ValueError, match="pool_rounds"):
    augment.cutmix_pool(key, images, pool_rounds=0)


def test_pick_scores_by_hand():
  teacher = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [1.0, 2.0, 0.0]], np.float32)
  student = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.0]], np.float32)
  np.testing.assert_allclose(augment.pick_scores("teacher_entropy", teacher_logits=teacher),
                             _entropy(teacher), rtol=1e-6)
  np.testing.assert_allclose(augment.pick_scores("student_entropy", student_logits=student),
                             _entropy(student), rtol=1e-6)
  # τ²·KL(p_T^τ ‖ p_S^τ) at τ = 2, written out; equal logits give 0.
  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  p_t, p_s = softmax(teacher / 2), softmax(student / 2)
  kl = 4 * (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)
  got = augment.pick_scores("kl", teacher_logits=teacher, student_logits=student,
                            temperature=2.0)
  np.testing.assert_allclose(got, kl, rtol=1e-5, atol=1e-7)
  assert float(got[2]) == 0.0
  with pytest.raises(ValueError, match=r"unknown pick score 'margin'; valid names: "
                     r"teacher_entropy, student_entropy, kl\."):
    augment.pick_scores("margin", teacher_logits=teacher)
  with pytest.raises(ValueError, match="the 'kl' pick score needs student_logits"):
    augment.pick_scores("kl", teacher_logits=teacher)


@pytest.mark.parametrize("score", ["teacher_entropy", "student_entropy", "kl"])
def test_cutmix_pick_keeps_the_highest_scored_pool_samples(score):
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(4, 6, 6, 2)), jnp.float32)
  w_t = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  w_s = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  teacher = lambda x: 3.0 * x.mean(axis=(1, 2)) @ w_t
  student = lambda x: 3.0 * x.mean(axis=(1, 2)) @ w_s
  key = jax.random.PRNGKey(5)
  picked = jax.jit(lambda k, x: augment.cutmix_pick(
      k, x, score=score, teacher_fn=teacher, student_fn=student, temperature=2.0,
      pool_rounds=3, n_pick=5))(key, images)
  # The same pool, scored by hand (NumPy), and its five highest.
  pool = augment.cutmix_pool(key, images, pool_rounds=3)
  z_t, z_s = np.asarray(teacher(pool.images)), np.asarray(student(pool.images))
  if score == "teacher_entropy":
    scores = _entropy(z_t)
  elif score == "student_entropy":
    scores = _entropy(z_s)
  else:
    scores = np.asarray(augment.pick_scores("kl", teacher_logits=z_t, student_logits=z_s,
                                            temperature=2.0))
  top = np.argsort(-scores, kind="stable")[:5]
  np.testing.assert_allclose(picked.images, np.asarray(pool.images)[top], rtol=1e-6)
  assert picked.source.tolist() == np.asarray(pool.source)[top].tolist()
  assert picked.partner.tolist() == np.asarray(pool.partner)[top].tolist()
  np.testing.assert_allclose(picked.lam, np.asarray(pool.lam)[top])
  np.testing.assert_allclose(picked.teacher_logits, z_t[top], rtol=1e-5, atol=1e-6)


def test_cutmix_pick_needs_the_functions_its_score_reads():
  images = jnp.zeros((2, 4, 4, 1))
  with pytest.raises(ValueError, match="the 'teacher_entropy' pick score needs teacher_fn"):
    augment.cutmix_pick(jax.random.PRNGKey(0), images)
  with pytest.raises(ValueError, match="the 'kl' pick score needs student_fn"):
    augment.cutmix_pick(jax.random.PRNGKey(0), images, score="kl", teacher_fn=lambda x: x)
  with pytest.raises(ValueError, match="n_pick"):
    augment.cutmix_pick(jax.random.PRNGKey(0), images, teacher_fn=lambda x: x[:, 0, 0],
                        n_pick=5)


def test_cutmix_pick_view_keeps_one_hot_labels_per_sample():
  """big_vision's one-hot labels through the view: ``[n, classes]``, not tiled on classes."""
  from kd_jax import methods
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.normal(size=(4, 6, 6, 2)), jnp.bfloat16)
  labels = jnp.array([0, 2, 1, 2])
  one_hot = jax.nn.one_hot(labels, 3)
  teacher = lambda x: x.astype(jnp.float32).mean(axis=(1, 2)) @ jnp.ones((2, 3))
  view_maker = methods.make_view("cutmix_pick", pool_rounds=3, label_mixing=True)
  hparams = {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "view_weight": 1.0}
  key = jax.random.PRNGKey(0)
  by_id = view_maker(key, images, labels, teacher, teacher, hparams)
  by_row = view_maker(key, images, one_hot, teacher, teacher, hparams)
  assert by_row.labels.shape == (4, 3) and by_row.lam.shape == (4,)
  assert by_row.inputs.dtype == jnp.bfloat16
  np.testing.assert_array_equal(by_row.labels, jax.nn.one_hot(by_id.labels, 3))
  np.testing.assert_array_equal(by_row.partner_labels, jax.nn.one_hot(by_id.partner_labels, 3))
  logits = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  np.testing.assert_allclose(view_maker.loss(logits, by_row, hparams),
                             view_maker.loss(logits, by_id, hparams), rtol=1e-6)


def test_the_pure_modules_docstring_examples_run():
  import doctest

  from kd_jax import backward, methods
  for module in (augment, backward, methods):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, module.__name__
