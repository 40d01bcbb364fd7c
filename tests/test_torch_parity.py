"""The Flax models against their PyTorch twins (experiments/torch_reference).

Skipped when torch is not installed (pip install -e '.[torch]'); CI installs it.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments.torch_reference import convert  # noqa: E402
from experiments.torch_reference import models as torch_models  # noqa: E402
from kd_jax import models  # noqa: E402
from tests.test_models import CIFAR100_PARAMETER_COUNTS, DIGITS_PARAMETER_COUNTS  # noqa: E402


@pytest.mark.parametrize("name", sorted(CIFAR100_PARAMETER_COUNTS))
def test_pytorch_twin_has_the_listed_parameter_count(name):
  model = torch_models.create_torch_model(name, 100)
  assert torch_models.count_parameters(model) == CIFAR100_PARAMETER_COUNTS[name]


def _pair(name, num_classes, image_shape, seed=0):
  flax_model = models.create_model(name, num_classes)
  variables = models.init_variables(flax_model, jax.random.PRNGKey(seed), image_shape)
  torch_model = torch_models.create_torch_model(name, num_classes, image_shape[-1],
                                                image_shape[0])
  convert.flax_to_torch(variables, torch_model)
  return flax_model, variables, torch_model


@pytest.mark.parametrize("name, image_shape, num_classes", [
    ("resnet8", (32, 32, 3), 100), ("resnet8x4", (32, 32, 3), 100),
    ("wrn_16_2", (32, 32, 3), 100), ("vgg8", (32, 32, 3), 100),
    ("mobilenetv2", (32, 32, 3), 100), ("shufflenetv2", (32, 32, 3), 100),
    ("resnet18_narrow", (16, 16, 3), 10), ("resnet18_narrow_w2a2", (16, 16, 3), 10),
    ("resnet18_narrow_w2a2_fp_shortcut", (16, 16, 3), 10),
    ("cnn_tiny", (8, 8, 1), 10), ("mlp_tiny", (8, 8, 1), 10),
])
def test_same_weights_give_same_logits_and_batchnorm_updates(name, image_shape, num_classes):
  flax_model, variables, torch_model = _pair(name, num_classes, image_shape)
  x = np.random.default_rng(0).normal(size=(4, *image_shape)).astype(np.float32)
  x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

  torch_model.eval()
  with torch.no_grad():
    expected = torch_model(x_torch).numpy()
  np.testing.assert_allclose(flax_model.apply(variables, x, train=False), expected,
                             rtol=1e-4, atol=1e-4 * np.abs(expected).max())

  torch_model.train()
  with torch.no_grad():
    expected_train = torch_model(x_torch).numpy()
  logits, updated = flax_model.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(logits, expected_train, rtol=1e-4, atol=1e-4)
  if variables["batch_stats"]:
    back = convert.torch_to_flax(torch_model, variables)
    for ours, theirs in zip(jax.tree.leaves(updated["batch_stats"]),
                            jax.tree.leaves(back["batch_stats"])):
      np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_torch_to_flax_round_trip():
  _, variables, torch_model = _pair("wrn_16_1", 10, (32, 32, 3))
  back = convert.torch_to_flax(torch_model, variables)
  for ours, theirs in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(ours), theirs)


def test_digits_counts_match_too():
  for name, count in DIGITS_PARAMETER_COUNTS.items():
    assert torch_models.count_parameters(torch_models.create_torch_model(name, 10, 1, 8)) == count


# --- Losses, input gradients and one optimiser step against the PyTorch computations. ---

from experiments.torch_reference import steps as torch_steps  # noqa: E402
import ml_collections  # noqa: E402

from kd_jax import backward, losses  # noqa: E402


def test_losses_match_pytorch():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 8, 10)).astype(np.float32) * 3
  ours = float(jax.numpy.mean(losses.kd_kl(s, t, 4.0)))
  theirs = float(torch_steps.kd_loss(torch.from_numpy(s), torch.from_numpy(t), 4.0))
  assert ours == pytest.approx(theirs, rel=1e-5)
  # Logit standardisation and decoupled KD against the official codes' formulas.
  ours = float(jax.numpy.mean(losses.kd_kl(s, t, 2.0, standardize=True)))
  theirs = float(torch_steps.standardized_kd_loss(torch.from_numpy(s), torch.from_numpy(t),
                                                  2.0))
  assert ours == pytest.approx(theirs, rel=1e-5)
  labels = rng.integers(0, 10, 8)
  ours = float(jax.numpy.mean(losses.dkd(s, t, labels, alpha=1.0, beta=8.0, temperature=4.0)))
  theirs = float(torch_steps.dkd_loss(torch.from_numpy(s), torch.from_numpy(t),
                                      torch.from_numpy(labels), 1.0, 8.0, 4.0))
  assert ours == pytest.approx(theirs, rel=1e-5)
  # Multi-level KD (its official masks' effect, and with standardised instance terms): the
  # value and the gradient with respect to the student's logits.
  temperatures = (4.0, 3.0, 5.0, 2.0, 6.0)
  for stand in (False, True):
    ours, our_grad = jax.value_and_grad(lambda z: jax.numpy.mean(
        losses.mlkd(z, t, temperatures, standardize=stand)))(s)
    student = torch.from_numpy(s.copy()).requires_grad_(True)
    theirs = torch_steps.mlkd_loss(student, torch.from_numpy(t), temperatures, stand)
    theirs.backward()
    assert float(ours) == pytest.approx(theirs.item(), rel=1e-5)
    np.testing.assert_allclose(our_grad, student.grad.numpy(), rtol=1e-4, atol=1e-6)
  for reduction in ("sum", "mean"):
    np.testing.assert_allclose(
        losses.continuation_hinge(s, t, 0.3, 0.5, reduction),
        torch_steps.continuation_hinge(torch.from_numpy(s), torch.from_numpy(t), 0.3, 0.5,
                                       reduction).numpy(),
        rtol=1e-5, atol=1e-6)


def test_divergence_input_gradient_matches_pytorch():
  _, teacher_vars, teacher_t = _pair("cnn_small", 10, (8, 8, 1), seed=1)
  student, student_vars, student_t = _pair("cnn_tiny", 10, (8, 8, 1), seed=2)
  teacher = models.create_model("cnn_small", 10)
  x = np.random.default_rng(3).normal(size=(4, 8, 8, 1)).astype(np.float32)
  ours = backward.divergence_input_grad(
      lambda v: teacher.apply(teacher_vars, v, train=False),
      lambda v: student.apply(student_vars, v, train=False), x, temperature=2.0)
  theirs = torch_steps.divergence_input_grad(teacher_t, student_t,
                                             torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                             2.0).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def _view_options(view_name, **overrides):
  """The config block of ``view_name`` (kd_jax/experiments/configs/common.py), with overrides; an
  empty block for methods without a view."""
  import ml_collections
  from kd_jax.experiments.configs import common
  config = common.base_config()
  block = config[view_name] if view_name else ml_collections.ConfigDict()
  block.update(overrides)
  return block


def _jax_draws(view_name, key, images, options):
  """The mixing draws the JAX step makes from its view key, as torch_steps.MixDraw."""
  from kd_jax import augment

  def cutmix_draw(draw_key):
    lam_key, perm_key, box_key = jax.random.split(draw_key, 3)
    lam = jax.random.beta(lam_key, options.alpha, options.alpha)
    perm = augment.shift_permutation(perm_key, images.shape[0])
    box = np.asarray(augment.cutmix_box(box_key, images.shape[1], images.shape[2], lam))
    rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
    corners = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if box.any() else (0, 0, 0, 0)
    return torch_steps.MixDraw(torch.from_numpy(np.array(perm)).long(),
                               1.0 - box.mean(), tuple(int(c) for c in corners))

  if view_name == "mixup":
    _, perm, lam = augment.mixup(key, images, options.alpha)
    return [torch_steps.MixDraw(torch.from_numpy(np.array(perm)).long(), float(lam))]
  if view_name == "cutmix":
    return [cutmix_draw(key)]
  if view_name == "cutmix_pick":
    return [cutmix_draw(k) for k in jax.random.split(key, options.pool_rounds)]
  return None


# Each method's full step, both sides from the same weights, batch and random draws; two
# steps so that SGD momentum and BatchNorm statistics carried over from step one matter.
METHOD_CASES = [
    ("kd", {}),
    ("kd_mixup", {}),
    ("kd_cutmix", {}),
    ("kd_cutmix_pick", dict(score="teacher_entropy", pool_rounds=3)),
    ("kd_cutmix_pick", dict(score="student_entropy", pool_rounds=2, n_pick=8)),
    ("kd_cutmix_pick", dict(score="kl", pool_rounds=2)),
    ("backward_kd", dict(steps=2, step_size=20.0, epsilon=30.0, clip=True)),
    ("backward_kd", dict(steps=1, step_size=5.0, normalize="l2", divergence="mse",
                         clip=False)),
    ("continuation_kd", {}),
    ("annealing_kd", {}),
]


def _assert_same_state(state, torch_model, variables_template):
  """Parameters and BatchNorm statistics of a JAX train state equal the PyTorch model's."""
  back = convert.torch_to_flax(torch_model, variables_template)
  for ours, theirs in zip(jax.tree.leaves({"params": state["params"],
                                           "batch_stats": state["batch_stats"]}),
                          jax.tree.leaves(back)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def _steps_match_pytorch(method_name, view_overrides, teacher_name, student_name,
                         image_shape, batch=16, num_classes=10, pixel_max=16, mean=0.0,
                         std=1.0 / 255.0):
  """Two steps of ``method_name`` in kd_jax and in PyTorch from the same weights, batch and
  random draws: the losses and then the student's parameters and statistics agree. Pixels
  are normalised with ``mean`` and ``std`` (of [0, 1] images) on both sides; the default
  leaves them in [0, ``pixel_max``]."""
  from kd_jax import methods
  from kd_jax.train import preprocess as preprocess_lib, sharding, state as state_lib
  from tests.conftest import image_step, sgd
  teacher, teacher_vars, teacher_t = _pair(teacher_name, num_classes, image_shape, seed=1)
  student, student_vars, student_t = _pair(student_name, num_classes, image_shape, seed=2)
  method = methods.get_method(method_name)
  options = _view_options(method.view, **view_overrides)
  optimizer = sgd(learning_rate=0.05, weight_decay=5e-4)
  mesh = sharding.make_data_mesh()
  # No crop/flip: both sides see the same float inputs.
  preprocess = preprocess_lib.image_preprocess((mean,) * image_shape[-1],
                                               (std,) * image_shape[-1])
  rng = np.random.default_rng(4)
  images = rng.integers(0, pixel_max + 1, (batch, *image_shape)).astype(np.uint8)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  hparams = dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9, view_weight=0.7, phi=0.6,
                 psi=0.3, margin=0.2)

  state = state_lib.create_train_state(student, optimizer, image_shape, seed=0)
  state["params"], state["batch_stats"] = student_vars["params"], student_vars["batch_stats"]
  step = image_step(student, optimizer, method, preprocess, teacher, options)
  jax_losses, all_draws = [], []
  for _ in range(2):
    view_key = jax.random.fold_in(jax.random.fold_in(state["rng"], state["step"]), 1)
    all_draws.append(_jax_draws(method.view, view_key, images.astype(np.float32), options))
    state, metrics = step(state, sharding.global_batch({"image": images, "label": labels}, mesh),
                          teacher_vars, {k: jax.numpy.float32(v) for k, v in hparams.items()})
    jax_losses.append(float(metrics["loss"]))

  torch_options = dict(options.to_dict())
  torch_options["clip"] = ((torch.tensor(0.0), torch.tensor(255.0)) if options.get("clip")
                           else None)
  torch_optimizer = torch.optim.SGD(student_t.parameters(), lr=0.05, momentum=0.9,
                                    weight_decay=5e-4)
  x = torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2).copy())
  x = (x / 255.0 - mean) / std
  for draws, jax_loss in zip(all_draws, jax_losses):
    loss = torch_steps.distill_step(student_t, teacher_t, torch_optimizer, x,
                                    torch.from_numpy(labels).long(),
                                    objective=torch_steps.OBJECTIVE_OF_METHOD[method_name],
                                    view=method.view or "none", draws=draws, options=torch_options,
                                    hparams=hparams)
    assert jax_loss == pytest.approx(loss, rel=1e-4)
  _assert_same_state(state, student_t, student_vars)


@pytest.mark.parametrize("method_name, view_overrides", METHOD_CASES)
def test_each_method_step_matches_pytorch(method_name, view_overrides):
  _steps_match_pytorch(method_name, view_overrides, "cnn_small", "cnn_tiny", (8, 8, 1))


def test_imagenet_resnet_kd_steps_match_pytorch():
  """Two KD steps of torchvision's ResNet-18 (as student and, other weights, as teacher)
  against its twin: the stem's explicit paddings, max pool, strided blocks and BatchNorm
  updates in training. 64 × 64, batch 8 and normalised pixels keep it small yet well
  conditioned: with batch 4, the last stage's BatchNorm normalises over 16 values per
  channel and float32 rounding alone (max-pool near-ties decided differently) moves the
  second step's loss by 3e-3."""
  _steps_match_pytorch("kd", {}, "imagenet_resnet18", "imagenet_resnet18", (64, 64, 3),
                       batch=8, pixel_max=255, mean=0.5, std=0.25)


def test_auxiliary_samples_match_pytorch():
  _, teacher_vars, teacher_t = _pair("cnn_small", 10, (8, 8, 1), seed=1)
  student, student_vars, student_t = _pair("cnn_tiny", 10, (8, 8, 1), seed=2)
  teacher = models.create_model("cnn_small", 10)
  x = np.random.default_rng(3).normal(size=(4, 8, 8, 1)).astype(np.float32)
  options = dict(steps=3, step_size=0.1, normalize="l2", epsilon=0.15, divergence="kl",
                 temperature=2.0)
  ours = backward.auxiliary_samples(
      lambda v: teacher.apply(teacher_vars, v, train=False),
      lambda v: student.apply(student_vars, v, train=False), x, clip=(-1.0, 1.0), **options)
  theirs = torch_steps.auxiliary_samples(
      teacher_t, student_t, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
      clip=(torch.tensor(-1.0), torch.tensor(1.0)), **options).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_quantized_convolution_gradients_match_pytorch():
  """DoReFa's straight-through gradients (input and weight) in the 2-bit convolution twins,
  on post-ReLU inputs with exact zeros and values above the clip."""
  from kd_jax.models import resnet18
  rng = np.random.default_rng(0)
  x = (np.maximum(rng.normal(size=(4, 6, 6, 8)), 0) * 0.8).astype(np.float32)
  upstream = rng.normal(size=(4, 6, 6, 16)).astype(np.float32)
  conv = resnet18.QuantConv(16, 3, 1, weight_bits=2, activation_bits=2)
  variables = conv.init(jax.random.PRNGKey(0), x)
  grad_x, grad_params = jax.grad(
      lambda x, p: jax.numpy.sum(conv.apply({"params": p}, x) * upstream), argnums=(0, 1))(
          x, variables["params"])
  twin = torch_models.QuantConv2d(8, 16, 3, 1, weight_bits=2, activation_bits=2)
  with torch.no_grad():
    twin.weight.copy_(torch.from_numpy(
        np.asarray(variables["params"]["kernel"]).transpose(3, 2, 0, 1).copy()))
  x_torch = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
  (twin(x_torch) * torch.from_numpy(upstream.transpose(0, 3, 1, 2).copy())).sum().backward()
  np.testing.assert_allclose(grad_x, x_torch.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(grad_params["kernel"],
                             twin.weight.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("quantised_shortcut", [True, False])
def test_quantised_block_shortcut_matches_pytorch(quantised_shortcut):
  """One 2-bit identity-shortcut block on inputs below 0, inside [0, 1] and above 1 (where
  the two shortcut forms differ), both forms: output and input gradient. Planted bug
  caught: a twin whose shortcut form differs from the Flax block's."""
  from kd_jax.models import resnet18
  rng = np.random.default_rng(3)
  x = (rng.normal(size=(2, 6, 6, 8)) * 0.8 + 0.4).astype(np.float32)
  block = resnet18.QuantBasicBlock(8, 1, 2, 2, quantised_shortcut=quantised_shortcut)
  variables = block.init(jax.random.PRNGKey(0), x, train=False)
  twin = torch_models.ResNet18((8, 8, 8, 8), 10, 2, 2, quantised_shortcut).layer1_0
  with torch.no_grad():
    for name in ("conv1", "conv2"):
      getattr(twin, name).weight.copy_(torch.from_numpy(np.asarray(
          variables["params"][name]["kernel"]).transpose(3, 2, 0, 1).copy()))
  twin.eval()
  out, grad = jax.value_and_grad(lambda v: jax.numpy.sum(
      block.apply(variables, v, train=False) ** 2))(x)
  x_torch = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
  expected = (twin(x_torch) ** 2).sum()
  expected.backward()
  assert float(out) == pytest.approx(expected.item(), rel=1e-5)
  np.testing.assert_allclose(grad, x_torch.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4,
                             atol=1e-5)


def test_rolewise_student_step_matches_pytorch():
  """Role-wise KD's stage-2 step (the core step with the policy preprocess: policy
  augmentation, frozen teacher on the
  augmented images, KD, SGD with momentum) against the PyTorch twin, for two steps. The zero
  policy without crop/flip/cutout leaves the images as they are, so both sides see the same
  inputs (the augmentation is checked against PIL in test_policies).

  The student is the full-precision ResNet-18: a 2-bit network's convolutions output a few
  discrete values, some equal to their batch mean, and whether BatchNorm then yields exactly
  0 or ±1 ulp (the frameworks sum the mean in different orders) decides the ReLU's gradient
  there; its logits and its convolutions' straight-through gradients are compared above."""
  import optax
  from kd_jax import methods, policies
  from kd_jax.methods import rolewise
  from kd_jax.models import adapters
  from kd_jax.train import state as state_lib, step as step_lib
  teacher, teacher_vars, teacher_t = _pair("resnet18_narrow", 10, (8, 8, 3), seed=1)
  student, student_vars, student_t = _pair("resnet18_narrow", 10, (8, 8, 3), seed=2)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  optimizer = optax.sgd(0.05, momentum=0.9)
  preprocess = rolewise.PolicyPreprocess(mean, std, (0, 0, 0), pad=0, flip=False,
                                         cutout_size=0)
  step = jax.jit(step_lib.make_train_step(
      adapters.LinenImageModel(student), optimizer, methods.get_method("kd"), preprocess,
      teacher=adapters.LinenImageModel(teacher)))
  state = state_lib.new_train_state(student_vars, optimizer, jax.random.PRNGKey(0))
  rng = np.random.default_rng(5)
  images = rng.integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)
  labels = rng.integers(0, 10, 8).astype(np.int32)
  hparams = dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9)
  jax_losses = []
  for _ in range(2):
    state, metrics = step(state, {"image": images, "label": labels}, teacher_vars,
                          {**{k: jax.numpy.float32(v) for k, v in hparams.items()},
                           "view_weight": jax.numpy.float32(1.0),
                           **rolewise.policy_values(policies.zero_policy())}, {})
    jax_losses.append(float(metrics["loss"]))

  torch_optimizer = torch.optim.SGD(student_t.parameters(), lr=0.05, momentum=0.9)
  x = (images.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
  x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  for jax_loss in jax_losses:
    loss = torch_steps.distill_step(student_t, teacher_t, torch_optimizer, x,
                                    torch.from_numpy(labels).long(), objective="kd",
                                    hparams=hparams)
    assert jax_loss == pytest.approx(loss, rel=1e-4)
  _assert_same_state(state, student_t, student_vars)


# --- CutMix's box, independently of kd_jax: the official rule, re-expressed in NumPy. ---

def _official_rand_bbox(height, width, lam, cy, cx):
  """The box of the CutMix paper's code (as in Wang et al.'s Good-DA-in-KD, rand_bbox), given
  its draws: each side is the integer part of the image side times sqrt(1 − λ); the box
  reaches half of that (rounded down) to either side of the centre (row cy from [0, H),
  column cx from [0, W)) and is cut at the image border. Returns (x1, y1, x2, y2)."""
  ratio = np.sqrt(1.0 - lam)
  cut_w, cut_h = int(width * ratio), int(height * ratio)
  x1, x2 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
  y1, y2 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
  return int(x1), int(y1), int(x2), int(y2)


def _official_cutmix(images_nchw, perm, lam, cy, cx):
  """Their mixing on an NCHW torch batch: a mask that is 1 outside the box and 0 inside
  keeps each image outside it and takes the partner's pixels inside; λ becomes the kept
  area fraction."""
  _, _, height, width = images_nchw.shape
  x1, y1, x2, y2 = _official_rand_bbox(height, width, lam, cy, cx)
  mask = torch.ones((height, width))
  mask[y1:y2, x1:x2] = 0
  mixed = images_nchw * mask + images_nchw[perm] * (1 - mask)
  return mixed, 1 - (x2 - x1) * (y2 - y1) / (height * width), (x1, y1, x2, y2)


@pytest.mark.parametrize("seed, alpha", [(0, 1.0), (1, 1.0), (2, 0.3), (3, 2.0), (4, 1.0),
                                         (5, 0.5)])
def test_cutmix_box_matches_the_official_rule(seed, alpha):
  """kd_jax.augment.cutmix against the official box rule fed with the same λ and centre
  draws (and partner permutation), on a non-square batch so rows and columns cannot swap."""
  from kd_jax import augment
  height, width = 12, 20
  images = np.random.default_rng(seed).integers(0, 256, (4, height, width, 3)).astype(np.float32)
  key = jax.random.PRNGKey(seed)
  mixed, perm, kept = augment.cutmix(key, jax.numpy.asarray(images), alpha)
  # The draws cutmix makes from its key: λ ~ Beta(α, α), the shift, the box centre.
  lam_key, _, box_key = jax.random.split(key, 3)
  lam = float(jax.random.beta(lam_key, alpha, alpha))
  cy_key, cx_key = jax.random.split(box_key)
  cy = int(jax.random.randint(cy_key, (), 0, height))
  cx = int(jax.random.randint(cx_key, (), 0, width))
  theirs, their_lam, (x1, y1, x2, y2) = _official_cutmix(
      torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
      torch.from_numpy(np.asarray(perm)).long(), lam, cy, cx)
  box = np.zeros((height, width), bool)
  box[y1:y2, x1:x2] = True
  np.testing.assert_array_equal(
      augment.cutmix_box(box_key, height, width, jax.numpy.float32(lam)), box)
  np.testing.assert_array_equal(np.asarray(mixed), theirs.numpy().transpose(0, 2, 3, 1))
  assert float(kept) == pytest.approx(their_lam, abs=1e-6)


# --- torchvision's ImageNet ResNets: the twins carry torchvision's state-dict keys, loaded
# through kd_jax.models.pytorch (no torch on the kd_jax side). ---

from tests.test_models import IMAGENET_PARAMETER_COUNTS  # noqa: E402


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMETER_COUNTS))
def test_torchvision_twin_has_torchvisions_parameter_count(name):
  model = torch_models.create_torch_model(name, 1000)
  assert torch_models.count_parameters(model) == IMAGENET_PARAMETER_COUNTS[name]
  assert "layer1.0.conv1.weight" in model.state_dict()


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMETER_COUNTS))
def test_torchvision_weights_give_the_same_logits(name):
  from kd_jax.models import pytorch
  torch.manual_seed(0)
  torch_model = torch_models.create_torch_model(name, 10)
  torch_model.train()
  with torch.no_grad():  # running statistics away from 0 and 1, so that they matter
    torch_model(torch.randn(8, 3, 64, 64))
  torch_model.eval()
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  flax_model = models.create_model(name, 10)
  template = jax.eval_shape(lambda: models.init_variables(flax_model, jax.random.PRNGKey(0),
                                                          (64, 64, 3)))
  variables = pytorch.variables_from_state_dict(state, template,
                                                pytorch.torchvision_resnet_key)
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  actual = np.asarray(flax_model.apply(variables, x, train=False))
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # A class count that differs is named, with both shapes.
  other = jax.eval_shape(lambda: models.init_variables(models.create_model(name, 7),
                                                       jax.random.PRNGKey(0), (64, 64, 3)))
  with pytest.raises(ValueError, match=r"fc.weight: \(10, \d+\) in the file, \(7, \d+\) in "
                                       r"the model.*has 10 classes, the model 7"):
    pytorch.variables_from_state_dict(state, other, pytorch.torchvision_resnet_key)
  del state["layer1.0.bn1.running_var"]
  state["head.weight"] = state["fc.weight"]
  with pytest.raises(ValueError, match=r"missing \['layer1_0.bn1.var'\], unexpected "
                                       r"\['head.weight'\]"):
    pytorch.variables_from_state_dict(state, template, pytorch.torchvision_resnet_key)


def test_from_pytorch_reads_pth_checkpoints_and_safetensors_and_refuses_code(tmp_path):
  import os
  from safetensors.numpy import save_file
  torch.manual_seed(1)
  torch_model = torch_models.create_torch_model("imagenet_resnet18", 5)
  torch_model.train()
  with torch.no_grad():
    torch_model(torch.randn(4, 3, 64, 64))
  torch_model.eval()
  x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  state = torch_model.state_dict()
  torch.save(state, tmp_path / "bare.pth")
  optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
  torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(71.5),
              "optimizer": optimizer.state_dict()}, tmp_path / "repdistiller.pth")
  save_file({k: v.numpy() for k, v in state.items()}, str(tmp_path / "weights.safetensors"))
  flax_model = models.create_model("imagenet_resnet18", 5)
  for name in ("bare.pth", "repdistiller.pth", "weights.safetensors"):
    variables = models.from_pytorch("imagenet_resnet18", str(tmp_path / name))
    actual = np.asarray(flax_model.apply(variables, x, train=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max(), err_msg=name)

  marker = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  torch.save({"model": Payload()}, tmp_path / "evil.pth")
  from kd_jax.models import pytorch
  with pytest.raises(pytorch.UnsafeCheckpointError, match=r"refusing to load posix.system"):
    models.from_pytorch("imagenet_resnet18", str(tmp_path / "evil.pth"))
  assert not marker.exists()


# --- RepDistiller's CIFAR-100 checkpoints: twins with RepDistiller's module tree and keys
# (experiments/torch_reference/repdistiller.py), loaded through kd_jax.models.from_pytorch. ---

from experiments.torch_reference import repdistiller  # noqa: E402

# One model a family; vgg13 has two convolutions a block (Sequential positions 3 and 4 read),
# resnet8x4 a projection in its first stage, wrn_16_2 in each.
REPDISTILLER_FAMILIES = ["resnet8x4", "wrn_16_2", "vgg13", "resnet50", "mobilenetv2",
                         "shufflenetv2"]


def _randomised_repdistiller_twin(name, num_classes, seed=0):
  """The twin in eval mode, BatchNorm scales, shifts and running statistics away from 1 and
  0 so that a misplaced one shows."""
  torch.manual_seed(seed)
  model = repdistiller.create_repdistiller_model(name, num_classes)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.2)
        module.running_mean.normal_(0.0, 0.2)
        module.running_var.uniform_(0.5, 2.0)
  return model.eval()


def _save_like_repdistiller(model, path):
  """A ``ckpt_epoch_240.pth`` as RepDistiller's train_teacher.py wrote it with the PyTorch 0.4
  to 1.5 it was made for: the legacy (non-zip) format, tensors saved from the GPU (storage
  classes ``torch.cuda.*``, location ``cuda:0``), the optimizer's momentum and the top-1 as a
  one-element tensor beside the state dict."""
  import io
  optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  for parameter in list(model.parameters())[:3]:
    optimizer.state[parameter]["momentum_buffer"] = torch.randn_like(parameter)
  checkpoint = {"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor([73.1]),
                "optimizer": optimizer.state_dict()}
  buffer = io.BytesIO()
  torch.save(checkpoint, buffer, _use_new_zipfile_serialization=False)
  data = buffer.getvalue()
  for cpu, gpu in ((b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n"),
                   (b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")):
    assert cpu in data
    data = data.replace(cpu, gpu)
  path.write_bytes(data)
  return checkpoint


@pytest.mark.parametrize("name", REPDISTILLER_FAMILIES)
def test_repdistiller_checkpoints_give_the_same_logits(name, tmp_path):
  """Each family's twin, its keys RepDistiller's, saved as RepDistiller's own checkpoint
  (and, for the two small ones, as safetensors and as a zip-format {'model': ...} .pth, which
  must give the same variables): from_pytorch takes the class count from the file's
  classifier, and kd_jax's model gives PyTorch's eval-mode logits."""
  twin = _randomised_repdistiller_twin(name, 10)
  checkpoint = _save_like_repdistiller(twin, tmp_path / "ckpt_epoch_240.pth")
  variables = models.from_pytorch(name, str(tmp_path / "ckpt_epoch_240.pth"))
  if name in ("resnet8x4", "wrn_16_2"):
    from kd_jax.models import pytorch
    from safetensors.numpy import save_file
    # The rest of the legacy file is read too: the top-1 and the optimizer's momentum.
    read = pytorch.read_pth(str(tmp_path / "ckpt_epoch_240.pth"))
    assert read["epoch"] == 240 and read["accuracy"].tolist() == [np.float32(73.1)]
    for index, buffers in checkpoint["optimizer"]["state"].items():
      np.testing.assert_array_equal(read["optimizer"]["state"][index]["momentum_buffer"],
                                    buffers["momentum_buffer"].numpy())
    state = twin.state_dict()
    save_file({k: v.numpy() for k, v in state.items()}, str(tmp_path / "weights.safetensors"))
    torch.save({"epoch": 240, "model": state}, tmp_path / "zip.pth")
    for file in ("weights.safetensors", "zip.pth"):
      jax.tree.map(np.testing.assert_array_equal, variables,
                   models.from_pytorch(name, str(tmp_path / file)))
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    expected = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  apply = jax.jit(models.create_model(name, 10).apply, static_argnames="train")
  actual = np.asarray(apply(variables, x, train=False))
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name", sorted(set(repdistiller.REPDISTILLER_NAMES)
                                        - set(REPDISTILLER_FAMILIES)))
def test_every_repdistiller_models_keys_map_completely(name):
  """The other depths and widths: every key of RepDistiller's model (the twin's, built
  without weights) lands on a kd_jax variable of its shape and every variable is filled."""
  from kd_jax.models import pytorch
  with torch.device("meta"):
    twin = repdistiller.create_repdistiller_model(name, 100)
  state = {key: np.broadcast_to(np.float32(0), value.shape)
           for key, value in twin.state_dict().items()}
  template = jax.eval_shape(lambda: models.init_variables(
      models.create_model(name, 100), jax.random.PRNGKey(0), (32, 32, 3)))
  variables = pytorch.variables_from_state_dict(state, template,
                                                pytorch.PYTORCH_LAYOUTS[name].rename)
  assert jax.tree.structure(variables) == jax.tree.structure(template)


def test_from_pytorch_supports_every_repdistiller_model_and_names_the_rest():
  from kd_jax.models import pytorch
  supported = set(pytorch.PYTORCH_LAYOUTS)
  assert supported <= set(models.MODEL_NAMES)
  assert supported == set(repdistiller.REPDISTILLER_NAMES) | {
      f"imagenet_resnet{depth}" for depth in (18, 34, 50)}
  with pytest.raises(ValueError, match=r"^reading PyTorch weights for 'resnet18' is not "
                                       r"supported; supported: imagenet_resnet18, .*, "
                                       r"wrn_40_2\.$"):
    models.from_pytorch("resnet18", "unread.pth")
  with pytest.raises(ValueError, match=r"RepDistiller's 'ResNet50' is kd_jax's 'resnet50'"):
    models.from_pytorch("ResNet50", "unread.pth")


@pytest.mark.parametrize("saved, loaded_as", [("wrn_16_1", "resnet8"), ("vgg8", "wrn_16_1")])
def test_a_file_of_another_model_names_its_missing_and_unexpected_keys(saved, loaded_as,
                                                                       tmp_path):
  """Also when the file's classifier is not the one the model's family has (vgg's
  classifier.weight read for a wrn): its class count is taken, and the keys are compared."""
  from safetensors.numpy import save_file
  torch.manual_seed(0)
  state = repdistiller.create_repdistiller_model(saved, 10).state_dict()
  save_file({k: v.numpy() for k, v in state.items()}, str(tmp_path / "other.safetensors"))
  expected = {("wrn_16_1", "resnet8"): r"missing \['layer1_0\.bn1\.bias', .*\] …, unexpected "
                                       r"\['block1\.layer\.0\.bn1\.bias', .*\] …",
              ("vgg8", "wrn_16_1"): r"missing \['block1_0\.bn1\.bias', .*\] …, unexpected "
                                    r"\['block0\.0\.bias', .*\] …"}[(saved, loaded_as)]
  with pytest.raises(ValueError, match=r"other\.safetensors does not fit the model: "
                                       + expected):
    models.from_pytorch(loaded_as, str(tmp_path / "other.safetensors"))
