"""View makers and their place in the step: the teacher sees x', pick keeps the top scores."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import losses, methods, models
from kd_jax.data import load_dataset
from kd_jax.methods import strong_aug
from kd_jax.train import preprocess as preprocess_lib, setup, sharding, state as state_lib
from tests.conftest import image_step, sgd


def _view_options(view="cutmix_pick", **overrides):
  """The view's config block (each view takes only its own options)."""
  options = dict(alpha=1.0, pool_rounds=3, score="teacher_entropy", n_pick=0,
                 label_mixing=False)
  options.update(overrides)
  return ml_collections.ConfigDict(
      {k: v for k, v in options.items() if k in methods.view_options(view)})


def _maker(name, options):
  return methods.make_view(name, "image", **setup.view_keywords(options))


@pytest.fixture(scope="module")
def nets():
  data = load_dataset("digits", "train")
  teacher = models.create_model("mlp_small", 10)
  student = models.create_model("mlp_tiny", 10)
  teacher_variables = models.init_variables(teacher, jax.random.PRNGKey(1), (8, 8, 1))
  student_variables = models.init_variables(student, jax.random.PRNGKey(2), (8, 8, 1))
  teacher_fn = lambda x: teacher.apply(teacher_variables, x, train=False)
  student_fn = lambda x: student.apply(student_variables, x, train=False)
  images = (data.images[:16].astype(np.float32) - 80.0) / 90.0
  return data, teacher, student, teacher_variables, teacher_fn, student_fn, images, \
      jnp.asarray(data.labels[:16])


HPARAMS = {"temperature": jnp.float32(4.0), "ce_weight": jnp.float32(0.1),
           "kd_weight": jnp.float32(0.9), "view_weight": jnp.float32(1.0)}


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_teacher_is_rerun_on_the_mixed_view(nets, name):
  *_, teacher_fn, student_fn, images, labels = nets
  maker = _maker(name, _view_options(name))
  view = maker(jax.random.PRNGKey(0), images, labels, teacher_fn, student_fn, HPARAMS)
  assert view.inputs.shape == images.shape
  assert not np.allclose(view.inputs, images)
  np.testing.assert_allclose(view.teacher_logits, teacher_fn(view.inputs), rtol=1e-6)
  np.testing.assert_array_equal(view.labels, labels)


@pytest.mark.parametrize("score", strong_aug.SCORES)
def test_pick_keeps_the_top_scored_cutmix_samples(nets, score):
  *_, teacher_fn, student_fn, images, labels = nets
  key = jax.random.PRNGKey(5)
  maker = _maker("cutmix_pick", _view_options(score=score))
  view = jax.jit(lambda k, x, y: maker(k, x, y, teacher_fn, student_fn, HPARAMS))(
      key, images, labels)
  # Rebuild the pool of R = 3 CutMix draws with the same keys and score it here.
  from kd_jax import augment
  pool = jnp.concatenate([augment.cutmix(k, images, 1.0)[0]
                          for k in jax.random.split(key, 3)])
  if score == "teacher_entropy":
    scores = losses.entropy(teacher_fn(pool))
  elif score == "student_entropy":
    scores = losses.entropy(student_fn(pool))
  else:
    scores = losses.kd_kl(student_fn(pool), teacher_fn(pool), 4.0)
  top = np.sort(np.asarray(scores))[::-1][:16]
  assert view.inputs.shape == images.shape  # n_pick = batch size
  picked_scores = {"teacher_entropy": lambda v: losses.entropy(teacher_fn(v)),
                   "student_entropy": lambda v: losses.entropy(student_fn(v)),
                   "kl": lambda v: losses.kd_kl(student_fn(v), teacher_fn(v), 4.0)}[score]
  np.testing.assert_allclose(np.asarray(picked_scores(view.inputs)), top, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(view.teacher_logits, teacher_fn(view.inputs), rtol=1e-5, atol=1e-6)
  assert np.all((0 <= np.asarray(view.lam)) & (np.asarray(view.lam) <= 1))


def test_partner_labels_and_lambda_describe_the_mix(nets):
  *_, teacher_fn, student_fn, images, labels = nets
  from kd_jax import augment
  key = jax.random.PRNGKey(7)
  view = _maker("cutmix", _view_options("cutmix"))(key, images, labels, teacher_fn,
                                                          student_fn, HPARAMS)
  _, perm, lam = augment.cutmix(key, images, 1.0)
  np.testing.assert_array_equal(view.partner_labels, np.asarray(labels)[np.asarray(perm)])
  np.testing.assert_allclose(view.lam, np.full(16, float(lam)))


def test_unknown_view_and_score():
  with pytest.raises(ValueError, match="unknown image view .cutmixup."):
    _maker("cutmixup", _view_options())
  with pytest.raises(ValueError, match="unknown pick score 'margin'"):
    _maker("cutmix_pick", _view_options(score="margin"))


@pytest.mark.parametrize("label_mixing", [False, True])
def test_step_loss_is_objective_on_x_plus_kd_on_the_teacher_labelled_view(nets, label_mixing):
  data, teacher, student, teacher_variables, teacher_fn, _, _, _ = nets
  mesh = sharding.make_data_mesh()
  options = _view_options("cutmix", label_mixing=label_mixing)
  optimizer = sgd()
  preprocess = preprocess_lib.image_preprocess(data.mean, data.std)
  step = image_step(student, optimizer, methods.get_method("kd_cutmix"), preprocess, teacher,
                    options)
  state = state_lib.create_train_state(student, optimizer, (8, 8, 1), seed=3)
  batch = {"image": data.images[:16], "label": data.labels[:16]}
  # The same x, x' and teacher logits, built outside the step.
  x = preprocess(None, batch, None, train=False)
  y = jnp.asarray(batch["label"])
  view_key = jax.random.fold_in(jax.random.fold_in(state["rng"], 0), 1)
  view = _maker("cutmix", options)(view_key, x, y, teacher_fn, None, HPARAMS)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  s_x = student.apply(variables, x, train=True)
  s_v = student.apply(variables, view.inputs, train=True)
  expected = float(jnp.mean(losses.kd_objective(s_x, teacher_fn(x), y, temperature=4.0,
                                                ce_weight=0.1, kd_weight=0.9))
                   + 0.9 * jnp.mean(losses.kd_kl(s_v, teacher_fn(view.inputs), 4.0)))
  if label_mixing:
    expected += 0.1 * float(jnp.mean(view.lam * losses.cross_entropy(s_v, view.labels)
                                     + (1 - view.lam) * losses.cross_entropy(
                                         s_v, view.partner_labels)))
  _, metrics = step(sharding.replicate(state, mesh), sharding.global_batch(batch, mesh),
                    sharding.replicate(teacher_variables, mesh), sharding.replicate(HPARAMS, mesh))
  assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)


# --- The other schemes of Wang et al.'s study: identity, flip, crop+flip, Cutout, AutoAugment.

PIXEL_RANGE = (np.float32(-80.0 / 90.0), np.float32(175.0 / 90.0))  # pixels 0 and 255 of nets


def test_study_views_keep_labels_and_rerun_the_teacher(nets):
  *_, teacher_fn, student_fn, images, labels = nets
  images = jnp.asarray(images)
  for name, block in (("identity", {}), ("flip", {"per_image": True}),
                      ("crop_flip", {"pad": 2, "flip": False, "per_image": True}),
                      ("cutout", {"size": 4, "per_image": True}),
                      ("autoaugment", {"policy": "cifar10", "fill": 0.0, "per_image": True})):
    maker = methods.make_view(name, "image", **setup.view_keywords(block, PIXEL_RANGE))
    view = maker(jax.random.PRNGKey(1), images, labels, teacher_fn, student_fn, HPARAMS)
    assert view.inputs.shape == images.shape, name
    np.testing.assert_allclose(view.teacher_logits, teacher_fn(view.inputs), rtol=1e-5)
    np.testing.assert_array_equal(view.labels, labels)
    np.testing.assert_array_equal(view.partner_labels, labels)
    np.testing.assert_array_equal(view.lam, np.ones(16))
    if name == "identity":
      np.testing.assert_array_equal(view.inputs, images)
    else:
      assert not np.allclose(view.inputs, images), name


def test_crop_flip_view_pads_black_and_autoaugment_round_trips_pixels(nets):
  *_, teacher_fn, student_fn, images, labels = nets
  images = jnp.asarray(images)
  low = PIXEL_RANGE[0]
  crop = methods.make_view("crop_flip", "image", pad=3, flip=False, per_image=False,
                           input_range=PIXEL_RANGE)
  for seed in range(4):
    view = crop(jax.random.PRNGKey(seed), images, labels, teacher_fn, student_fn, HPARAMS)
    shifted = np.asarray(view.inputs)
    # One offset for the batch; the uncovered border is black (pixel 0 = low), not 0.
    padded = np.pad(np.asarray(images) - low, ((0, 0), (3, 3), (3, 3), (0, 0))) + low
    matches = [(r, c) for r in range(7) for c in range(7)
               if np.allclose(padded[:, r:r + 8, c:c + 8], shifted, atol=1e-6)]
    assert matches, seed
  # AutoAugment with operations that never fire gives back x (pixels round-trip exactly).
  never = [(("Rotate", 0.0, 9), ("Invert", 0.0, None))]
  same = methods.make_view("autoaugment", "image", policy=never, input_range=PIXEL_RANGE)
  view = same(jax.random.PRNGKey(0), images, labels, teacher_fn, student_fn, HPARAMS)
  np.testing.assert_allclose(view.inputs, images, atol=1e-5)
  # Invert always: pixel p becomes 255 − p, i.e. x becomes low + high − x.
  invert = [(("Invert", 1.0, None), ("Invert", 0.0, None))]
  flipped = methods.make_view("autoaugment", "image", policy=invert, input_range=PIXEL_RANGE)
  view = flipped(jax.random.PRNGKey(0), images, labels, teacher_fn, student_fn, HPARAMS)
  np.testing.assert_allclose(view.inputs, sum(PIXEL_RANGE) - images, atol=1e-5)


def test_study_views_check_their_options():
  for name, options, message in (
      ("crop_flip", {}, "crop_flip view works on pixel values: it needs input_range"),
      ("autoaugment", {"policy": "svhn", "input_range": PIXEL_RANGE},
       "unknown AutoAugment policy 'svhn'"),
      ("cutout", {"size": 1}, r"cutout size must be ≥ 2 pixels \(the square is centre ± "
                              r"size//2\); got 1"),
      ("crop_flip", {"pad": -1, "input_range": PIXEL_RANGE}, "pad must be ≥ 0")):
    with pytest.raises(ValueError, match=message):
      methods.make_view(name, "image", **options)


def test_standard_augmentation_autoaugment_then_cutout_in_the_preprocess():
  data = load_dataset("digits", "train")
  batch = {"image": jnp.asarray(data.images[:32])}
  plain = preprocess_lib.image_preprocess(data.mean, data.std)
  key = jax.random.PRNGKey(0)
  # Cutout only: each image differs from its normalisation on one square, set to 0.
  cut = preprocess_lib.image_preprocess(data.mean, data.std, cutout_size=4)
  base, out = np.asarray(plain(key, batch, None, True)), np.asarray(cut(key, batch, None, True))
  changed = out != base
  assert np.all(out[changed] == 0.0) and 0 < changed.sum(axis=(1, 2, 3)).max() <= 16
  # AutoAugment "imagenet" changes the pixels before normalisation; evaluation is untouched.
  auto = preprocess_lib.image_preprocess(data.mean, data.std, autoaugment="imagenet")
  augmented = jax.jit(lambda k: auto(k, batch, None, True))(key)  # once, compiled
  assert not np.allclose(augmented, base)
  np.testing.assert_array_equal(auto(key, batch, None, False), plain(key, batch, None, False))
  # Crop/flip still draw from the step's key itself: runs without the new stages unchanged.
  crop = preprocess_lib.image_preprocess(data.mean, data.std, crop_pad=1)
  expected = (np.asarray(jax.jit(lambda k, x: __import__("kd_jax").augment.random_crop_flip(
      k, x, pad=1, flip=False))(key, batch["image"])).astype(np.float32) / 255.0
      - np.asarray(data.mean)) / np.asarray(data.std)
  np.testing.assert_allclose(crop(key, batch, None, True), expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown AutoAugment policy 'cifar'"):
    preprocess_lib.image_preprocess(data.mean, data.std, autoaugment="cifar")
  # AutoAugment in the preprocess does not draw with the keys the step gives the view
  # (fold_in(k, 1)) or dropout (fold_in(k, 0 | 2)): an autoaugment view would otherwise
  # repeat the preprocess's own draws.
  from kd_jax import policies
  pixels = np.asarray(augmented) * np.asarray(data.std) + np.asarray(data.mean)
  drawn = np.round(pixels * 255.0)
  draw = jax.jit(lambda k: policies.autoaugment_batch(k, batch["image"], "imagenet"))
  for index in (0, 1, 2):
    same_draws = np.asarray(draw(jax.random.fold_in(key, index)))
    assert not np.array_equal(drawn, same_draws), index


# --- RandAugment and the weak/strong dual view. ---

def test_randaugment_and_dual_views_keep_labels_and_rerun_the_teacher(nets):
  *_, teacher_fn, student_fn, images, labels = nets
  images = jnp.asarray(images)
  options = {"num_ops": 2, "magnitude": 9, "bins": 31, "random_magnitude": False, "fill": 0.0,
             "per_image": True}
  randaugment = methods.make_view("randaugment", "image", input_range=PIXEL_RANGE, **options)
  key = jax.random.PRNGKey(4)
  # Jitted: RandAugment's switch over 15 operations is slow op by op.
  strong = jax.jit(lambda k: randaugment(k, images, labels, teacher_fn, student_fn, HPARAMS))(key)
  np.testing.assert_allclose(strong.teacher_logits, teacher_fn(strong.inputs), rtol=1e-5)
  np.testing.assert_array_equal(strong.labels, labels)
  assert not np.allclose(strong.inputs, images)
  # The dual view: its strong view (drawn with the first half of its key), then Cutout of
  # 4 pixels set to 0 (the mean colour) on each image; the teacher labels the cut images.
  dual = methods.make_view("dual", "image", input_range=PIXEL_RANGE, strong_options=options,
                           cutout_size=4)
  assert (dual.name, dual.term, dual.label_mixing) == ("dual", "objective", False)
  view = jax.jit(lambda k: dual(k, images, labels, teacher_fn, student_fn, HPARAMS))(key)
  strong_key, _ = jax.random.split(key)
  uncut = jax.jit(lambda k: randaugment(k, images, labels, teacher_fn, student_fn, HPARAMS))(
      strong_key).inputs
  cut = np.asarray(view.inputs) != np.asarray(uncut)
  assert np.all(np.asarray(view.inputs)[cut] == 0.0)
  assert 0 < cut.sum(axis=(1, 2, 3)).max() <= 16
  np.testing.assert_allclose(view.teacher_logits, teacher_fn(view.inputs), rtol=1e-5)
  np.testing.assert_array_equal(view.labels, labels)
  # Any view maker as the strong view, and the KD-term form.
  flip = methods.make_view("flip", "image", per_image=True)
  by_maker = methods.make_view("dual", "image", strong=flip, term="kd")
  assert by_maker.term == "kd"
  flipped = by_maker(key, images, labels, teacher_fn, student_fn, HPARAMS)
  np.testing.assert_array_equal(flipped.inputs,
                                flip(strong_key, images, labels, teacher_fn, None, None).inputs)


def test_dual_view_checks_its_options():
  for options, message in (
      ({"term": "both"}, "unknown dual term 'both'; valid: objective, kd"),
      ({"cutout_size": 1}, "dual cutout_size must be 0 .none. or ≥ 2 pixels"),
      ({"strong": "dual"}, "cannot be another dual view"),
      ({"strong": "cutmix"}, "the cutmix view mixes two: use term='kd'"),
      ({"strong": "randaugment", "input_range": None}, "needs input_range"),
      ({"strong": methods.make_view("flip"), "strong_options": {"per_image": False}},
       "strong_options configure a strong view given by name"),
      ({"strong": "randaugment", "strong_options": {"magnitude": 40},
        "input_range": PIXEL_RANGE}, "magnitude must be an int bin in 0..30")):
    with pytest.raises(ValueError, match=message):
      methods.make_view("dual", "image", **options)


def test_step_applies_the_objective_on_both_views_with_the_dual_view(nets):
  """kd + dual (term "objective"): the loss is the KD objective on x plus view_weight × the
  KD objective (CE included) on x', on standardised logits when hparams say so."""
  data, teacher, student, teacher_variables, teacher_fn, _, _, _ = nets
  mesh = sharding.make_data_mesh()
  optimizer = sgd()
  preprocess = preprocess_lib.image_preprocess(data.mean, data.std)
  view_options = {"strong": "cutout", "strong_options": {"size": 4, "per_image": True},
                  "cutout_size": 0, "term": "objective"}
  method = methods.get_method("kd", "dual")
  step = image_step(student, optimizer, method, preprocess, teacher, view_options)
  state = state_lib.create_train_state(student, optimizer, (8, 8, 1), seed=3)
  batch = {"image": data.images[:16], "label": data.labels[:16]}
  x = preprocess(None, batch, None, train=False)
  y = jnp.asarray(batch["label"])
  view_key = jax.random.fold_in(jax.random.fold_in(state["rng"], 0), 1)
  hparams = {**HPARAMS, "view_weight": jnp.float32(0.5), "standardize": jnp.float32(1.0)}
  view = methods.make_view("dual", "image", **view_options)(view_key, x, y, teacher_fn, None,
                                                           hparams)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  both = student.apply(variables, jnp.concatenate([x, view.inputs]), train=True)
  s_x, s_v = both[:16], both[16:]

  def objective(s, t):
    return jnp.mean(losses.kd_objective(s, t, y, temperature=4.0, ce_weight=0.1, kd_weight=0.9,
                                        standardize=True))

  expected = float(objective(s_x, teacher_fn(x)) + 0.5 * objective(s_v, teacher_fn(view.inputs)))
  _, metrics = step(sharding.replicate(state, mesh), sharding.global_batch(batch, mesh),
                    sharding.replicate(teacher_variables, mesh), sharding.replicate(hparams, mesh))
  assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
  with pytest.raises(ValueError, match="applies the method's objective on x': pass objective="):
    methods.make_view("dual", "image", **view_options).loss(s_v, view, hparams)


def test_standard_augmentation_randaugment_in_the_preprocess():
  data = load_dataset("digits", "train")
  batch = {"image": jnp.asarray(data.images[:16])}
  key = jax.random.PRNGKey(0)
  plain = preprocess_lib.image_preprocess(data.mean, data.std)
  strong = preprocess_lib.image_preprocess(data.mean, data.std, randaugment_ops=2,
                                           randaugment_magnitude=30)
  assert not np.allclose(strong(key, batch, None, True), plain(key, batch, None, True))
  np.testing.assert_array_equal(strong(key, batch, None, False), plain(key, batch, None, False))
  with pytest.raises(ValueError, match="AutoAugment .'cifar10'. or RandAugment .2 ops., not both"):
    preprocess_lib.image_preprocess(data.mean, data.std, autoaugment="cifar10",
                                    randaugment_ops=2)
  with pytest.raises(ValueError, match="magnitude must be an int bin"):
    preprocess_lib.image_preprocess(data.mean, data.std, randaugment_ops=2,
                                    randaugment_magnitude=31)
