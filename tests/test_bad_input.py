"""Bad input that used to pass silently: each is now a clear error naming what is wrong and
what would be right, or is handled (issue: a user's first hour)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from kd_jax import augment, backward, losses, quant, validation
from kd_jax.data import text as text_data


def test_nchw_images_are_refused_with_the_transpose_to_use():
  key = jax.random.PRNGKey(0)
  nchw = jnp.zeros((4, 3, 8, 8))
  for call in (lambda: augment.cutmix(key, nchw), lambda: augment.mixup(key, nchw),
               lambda: augment.random_crop_flip(key, nchw),
               lambda: augment.normalize(nchw.astype(jnp.uint8), (0.5,), (0.2,))):
    with pytest.raises(ValueError, match=r"looks like \[batch, channels, height, width\] "
                                         r"\(NCHW\).*transpose\(0, 2, 3, 1\)"):
      call()
  # NHWC images of any size, and 1- or 3-channel NCHW-like shapes that are also valid NHWC
  # ([B, 3, W, 3]: three rows of RGB pixels), still pass.
  assert augment.cutmix(key, jnp.zeros((4, 8, 8, 3)))[0].shape == (4, 8, 8, 3)
  assert augment.cutmix(key, jnp.zeros((4, 3, 8, 3)))[0].shape == (4, 3, 8, 3)


def test_normalize_checks_channels_and_the_pixel_scale():
  gray = jnp.full((1, 2, 2, 1), 255, jnp.uint8)
  with pytest.raises(ValueError, match=r"^mean has 3 values for images with 1 channel\(s\)"):
    augment.normalize(gray, (0.5, 0.5, 0.5), (0.2,))
  with pytest.raises(ValueError, match=r"^std has 2 values for images with 1 channel\(s\)"):
    augment.normalize(gray, (0.5,), (0.2, 0.2))
  with pytest.raises(TypeError, match=r"float32 images: say their scale with max_value"):
    augment.normalize(jnp.full((1, 2, 2, 1), 0.5), (0.5,), (0.25,))
  # White is 255 for uint8 (default) and for max_value=255.0, 1.0 for images in [0, 1].
  np.testing.assert_allclose(augment.normalize(gray, (0.5,), (0.25,)), 2.0)
  np.testing.assert_allclose(augment.normalize(jnp.full((1, 2, 2, 1), 1.0), (0.5,), (0.25,),
                                               max_value=1.0), 2.0)
  np.testing.assert_allclose(augment.normalize(jnp.full((1, 2, 2, 1), 255.0), (0.5,),
                                               (0.25,), max_value=255.0), 2.0)


@pytest.mark.parametrize("label", [3, -1])
def test_out_of_range_labels(label):
  logits, labels = jnp.zeros((2, 3)), jnp.array([0, label])
  message = rf"labels must be class ids in \[0, 3\); got values from {min(0, label)} to " \
            rf"{max(0, label)}\."
  # Concrete labels: checked at once (for the losses and for KD's objective).
  with pytest.raises(ValueError, match=message):
    losses.cross_entropy(logits, labels)
  with pytest.raises(ValueError, match=message):
    losses.kd_objective(logits, logits, np.asarray(labels), temperature=2.0, ce_weight=0.5,
                        kd_weight=0.5)
  # Traced labels: unchecked inside jit (documented); checked_labels under checkify.
  def loss_fn(logits, labels):
    return losses.cross_entropy(logits, validation.checked_labels(labels, logits.shape[-1]))

  error, _ = checkify.checkify(jax.jit(loss_fn))(logits, labels)
  with pytest.raises(checkify.JaxRuntimeError, match=r"labels must be class ids in \[0, 3\)"):
    error.throw()
  error, values = checkify.checkify(jax.jit(loss_fn))(logits, jnp.array([0, 2]))
  error.throw()  # valid labels: no error
  np.testing.assert_allclose(values, np.log(3.0), rtol=1e-6)
  with pytest.raises(ValueError, match=message):  # concrete: checked without checkify
    validation.checked_labels(np.asarray(labels), 3)


def test_text_dataset_labels_are_checked_when_loaded():
  def split(labels):
    ids = np.zeros((len(labels), 4), np.int32)
    return text_data.TextSplit(ids, ids, ids, np.asarray(labels))
  with pytest.raises(ValueError, match=r"toy train: labels must be integer class ids in "
                                       r"\[0, 2\); got int64 values from 0 to 2\."):
    text_data.TextDataset("toy", split([0, 2]), split([0, 1]), 2)
  with pytest.raises(ValueError, match=r"toy test: .* from -1 to 1\."):
    text_data.TextDataset("toy", split([0, 1]), split([-1, 1]), 2)
  text_data.TextDataset("toy", split([0, 1]), split([1, 1]), 2)
  text_data.TextDataset("toy", split([0.3, 4.5]), split([1.0]), 1)  # regression: any score


@pytest.mark.parametrize("temperature", [np.float32(0.0), np.float64(-1.0), np.int64(0),
                                         np.array(-2.0), jnp.float32(0.0)])
def test_non_positive_temperatures_of_any_number_type(temperature):
  logits = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"^temperature must be > 0; got "):
    losses.kd_kl(logits, logits, temperature)
  with pytest.raises(ValueError, match=r"^temperature must be > 0; got "):
    losses.entropy(logits, temperature)
  # Traced temperatures are checked under checkify, where the caller asks for checks.
  assert jax.jit(losses.kd_kl)(logits, logits, jnp.float32(2.0)).shape == (2,)


def test_traced_temperatures_and_alphas_are_checked_under_checkify():
  """Issue 25, finding 8: a traced τ ≤ 0 gave NaN with no way to catch it. Under checkify
  (documented in kd_jax.losses) it raises naming the value; without it, the documented
  NaN."""
  logits = jnp.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
  checked = checkify.checkify(jax.jit(losses.kd_kl), errors=checkify.user_checks)
  error, _ = checked(logits, logits * 2, jnp.float32(-1.0))
  with pytest.raises(checkify.JaxRuntimeError, match=r"temperature must be > 0; got -1\.0"):
    error.throw()
  error, values = checked(logits, logits * 2, jnp.float32(2.0))
  error.throw()  # a valid τ: no error, the same values
  np.testing.assert_allclose(values, losses.kd_kl(logits, logits * 2, 2.0), rtol=1e-6)
  assert np.isnan(jax.jit(losses.kd_kl)(logits, logits * 2, jnp.float32(0.0))).all()
  images = jnp.zeros((4, 8, 8, 1))
  mix = checkify.checkify(jax.jit(augment.mixup), errors=checkify.user_checks)
  error, _ = mix(jax.random.PRNGKey(0), images, jnp.float32(0.0))
  with pytest.raises(checkify.JaxRuntimeError, match=r"alpha must be > 0; got 0\.0"):
    error.throw()


@pytest.mark.parametrize("alpha", [np.float32(0.0), jnp.array(0.0), float("nan"), -1])
def test_mixing_alphas_of_any_number_type_are_checked(alpha):
  """np.float32(0), jnp.array(0.) and NaN used to slip past ``alpha <= 0`` and return
  all-NaN images."""
  key, images = jax.random.PRNGKey(0), jnp.ones((4, 8, 8, 1))
  for mix in (augment.mixup, augment.cutmix):
    with pytest.raises(ValueError, match=r"^alpha must be > 0; got "):
      mix(key, images, alpha)
  from kd_jax import methods
  for view in ("mixup", "cutmix", "cutmix_pick"):
    with pytest.raises(ValueError, match=rf"^{view} alpha must be > 0"):
      methods.make_view(view, alpha=alpha)


def test_strings_are_not_numbers():
  logits = jnp.zeros((2, 3))
  with pytest.raises(TypeError, match=r"^temperature must be a number or a numeric array; "
                                      r"got '-4' \(str\)"):
    losses.kd_kl(logits, logits, "-4")
  with pytest.raises(TypeError, match=r"^temperature must be a number"):
    losses.entropy(logits, "4")
  with pytest.raises(TypeError, match=r"^alpha must be a number"):
    augment.mixup(jax.random.PRNGKey(0), jnp.ones((4, 8, 8, 1)), "1.0")
  with pytest.raises(TypeError, match=r"^margin must be a number"):
    losses.continuation_hinge(logits, logits, 1.0, "3")


def test_python_lists_of_labels_and_a_teacher_that_returns_a_tuple():
  from kd_jax import methods
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]))
  np.testing.assert_allclose(losses.cross_entropy(logits, [0, 1]), np.log(2.0) * np.ones(2),
                             rtol=1e-6)
  images = jnp.ones((4, 8, 8, 1))
  head = lambda x: x.reshape(4, -1)[:, :3]
  view = methods.make_view("mixup")(jax.random.PRNGKey(0), images, [0, 1, 2, 0], head, head,
                                    {})
  assert view.labels.shape == (4,) and view.teacher_logits.shape == (4, 3)
  with pytest.raises(TypeError, match=r"^teacher_fn must return the logits array \[batch, "
                                      r"classes\]; it returned a tuple of 2 items\. Return the "
                                      r"logits alone"):
    methods.make_view("mixup")(jax.random.PRNGKey(0), images, [0, 1, 2, 0],
                               lambda x: (head(x), x), head, {})
  with pytest.raises(TypeError, match=r"^student_fn must return the logits array"):
    backward.auxiliary_samples(head, lambda x: [head(x)], images, step_size=0.1)


def test_policies_refuse_float_images_in_0_1_and_policies_of_a_wrong_shape():
  from kd_jax import policies
  image = np.full((8, 8, 3), 0.5, np.float32)  # a [0, 1] image: every operation gave zeros
  with pytest.raises(TypeError, match=r"^image must be uint8 pixel levels 0\.\.255; got "
                                      r"dtype float32: for images in \[0, 1\] pass"):
    policies.apply_operation("Invert", image, 5)
  key, policy = jax.random.PRNGKey(0), policies.zero_policy()
  with pytest.raises(TypeError, match=r"^images must be uint8 pixel levels"):
    policies.augment_batch(key, image[None], policy, fill=0)
  with pytest.raises(ValueError, match=r"^images must hold pixel levels 0\.\.255; these "
                                      r"float32 values all lie in \[0, 1\]"):
    policies.autoaugment_batch(key, image[None])
  uint8 = np.full((2, 8, 8, 3), 128, np.uint8)
  for bad in (jnp.zeros((30,), jnp.int32), jnp.zeros((4, 30, 2), jnp.int32),
              jnp.zeros((15, 2), jnp.int32)):
    with pytest.raises(ValueError, match=r"^a policy has shape \[30, 2\] \(probability, "
                                         r"magnitude\) per tuple; got"):
      policies.augment_batch(key, uint8, bad, fill=0)
    with pytest.raises(ValueError, match=r"^a policy has shape \[30, 2\]"):
      policies.apply_policy(key, uint8[0].astype(np.float32), bad, jnp.zeros(3))
  assert policies.augment_batch(key, uint8, policy, fill=0).dtype == np.uint8


def test_static_integer_arguments_take_numpy_integers():
  key, images = jax.random.PRNGKey(0), jnp.zeros((4, 8, 8, 1))
  assert augment.random_crop_flip(key, images, np.int64(2)).shape == images.shape
  assert augment.pick_top(jnp.arange(4.0), images, np.int32(2)).shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(quant.dorefa_weights(jnp.ones(3), np.int64(2)),
                                quant.dorefa_weights(jnp.ones(3), 2))
  logits = lambda x: x.reshape(x.shape[0], -1)[:, :3]
  teacher = lambda x: logits(x) * 2.0
  a = backward.auxiliary_samples(teacher, logits, images + 0.5, steps=np.int64(2),
                                 step_size=0.1)
  b = backward.auxiliary_samples(teacher, logits, images + 0.5, steps=2, step_size=0.1)
  np.testing.assert_array_equal(a, b)
  for bad in (True, 2.0, "2"):
    with pytest.raises(ValueError, match=r"^pad must be an integer ≥ 0"):
      augment.random_crop_flip(key, images, bad)



def test_bench_vs_torch_names_the_valid_suites_and_gpu_precisions():
  pytest.importorskip("torch")
  from experiments.bench_vs_torch import Settings, measure
  with pytest.raises(ValueError, match=r"unknown suites \['video'\]; valid: images, rolewise"):
    measure(Settings(suites=("images", "video")))
  with pytest.raises(ValueError, match="unknown gpu_precision 'fp16'; valid: tf32, float32"):
    measure(Settings(gpu_precision="fp16"))


def test_label_smoothing_is_refused_where_it_would_be_ignored():
  """The role-wise stages train with role-kd's losses, which have no smoothed labels:
  setting it there is an error, not a no-op."""
  from kd_jax.experiments import rolewise
  from kd_jax.experiments.configs import rolewise as rolewise_configs
  config = rolewise_configs.get_config("digits")
  rolewise.check_config(config)
  config.label_smoothing = 0.1
  with pytest.raises(ValueError, match="label_smoothing is not supported by the role-wise"):
    rolewise.check_config(config)
  config.label_smoothing = 0.0
  config.augment.randaugment_ops = 2  # the PBA policy is the role-wise augmentation
  with pytest.raises(ValueError, match="autoaugment and randaugment_ops are not used by the "
                     "role-wise stages"):
    rolewise.check_config(config)
