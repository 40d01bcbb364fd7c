"""Bundled models: registry, parameter counts of the PyTorch originals, BatchNorm semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import losses, models
from kd_jax.models import layers

# Trainable parameters with 100 classes, as counted by PyTorch on RepDistiller's definitions
# (models/resnet.py, wrn.py, vgg.py with BatchNorm); they round to the CRD paper's table
# (resnet20 0.28M, resnet32x4 7.43M, wrn_40_2 2.26M, vgg13 9.46M, MobileNetV2 0.81M,
# ShuffleV2 1.35M, ResNet50 23.71M, ...).
# tests/test_torch_parity.py recounts them on the PyTorch twins when torch is installed.
CIFAR100_PARAMETER_COUNTS = {
    # kuangliu's CIFAR ResNet-18 (role-wise KD); quantised students share the tree.
    "resnet18": 11_220_132, "resnet18_w2a2": 11_220_132, "resnet18_w4a4": 11_220_132,
    "resnet18_narrow": 713_076, "resnet18_narrow_w2a2": 713_076,
    "resnet18_w2a2_fp_shortcut": 11_220_132, "resnet18_narrow_w2a2_fp_shortcut": 713_076,
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "resnet50": 23_705_252, "mobilenetv2": 812_836, "shufflenetv2": 1_355_528,
}
# torchvision's ImageNet ResNets, 1,000 classes (torchvision.models.resnet18/34/50).
IMAGENET_PARAMETER_COUNTS = {"imagenet_resnet18": 11_689_512, "imagenet_resnet34": 21_797_672,
                             "imagenet_resnet50": 25_557_032}
# The small nets on 8x8x1 digits, 10 classes.
DIGITS_PARAMETER_COUNTS = {"cnn_tiny": 1_442, "cnn_small": 19_562, "cnn_medium": 223_690,
                           "mlp_tiny": 1_210, "mlp_small": 4_810}


def _count(name, num_classes, image_shape):
  model = models.create_model(name, num_classes)
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.PRNGKey(0),
                                                        image_shape))
  return models.count_parameters(shapes["params"])


@pytest.mark.parametrize("name", sorted(CIFAR100_PARAMETER_COUNTS))
def test_cifar_parameter_counts_equal_pytorch_originals(name):
  assert _count(name, 100, (32, 32, 3)) == CIFAR100_PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(DIGITS_PARAMETER_COUNTS))
def test_small_net_parameter_counts(name):
  assert _count(name, 10, (8, 8, 1)) == DIGITS_PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMETER_COUNTS))
def test_imagenet_parameter_counts_equal_torchvision(name):
  assert _count(name, 1000, (224, 224, 3)) == IMAGENET_PARAMETER_COUNTS[name]


def test_every_registered_model_is_counted():
  assert set(models.MODEL_NAMES) == (set(CIFAR100_PARAMETER_COUNTS)
                                     | set(DIGITS_PARAMETER_COUNTS)
                                     | set(IMAGENET_PARAMETER_COUNTS))


def test_forward_shapes_and_batch_stats_update():
  model = models.create_model("resnet8", 100)
  variables = models.init_variables(model, jax.random.PRNGKey(0), (32, 32, 3))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
  logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (4, 100)
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updated["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  assert model.apply(variables, x, train=False).shape == (4, 100)


# One model of each family (kd_jax.models.MODEL_FAMILIES), on small inputs to keep the
# compilations short.
BFLOAT16_MODELS = {"cnn_tiny": (8, 8, 1), "resnet8": (16, 16, 3),
                   "resnet18_narrow_w2a2": (16, 16, 3), "imagenet_resnet18": (32, 32, 3)}


@pytest.mark.parametrize("name", sorted(BFLOAT16_MODELS))
def test_bfloat16_compute_keeps_float32_parameters_statistics_gradients_and_loss(name):
  """dtype bfloat16: activations and logits in bfloat16, but parameters, BatchNorm running
  statistics, gradients, SGD's momentum and the loss stay float32, and the logits are the
  float32 model's to bfloat16 accuracy (same weights; not for the 2-bit model, whose
  quantisers round bfloat16 inputs to other levels)."""
  shape = BFLOAT16_MODELS[name]
  model16 = models.create_model(name, 10, dtype=jnp.bfloat16)
  model32 = models.create_model(name, 10)
  variables = models.init_variables(model16, jax.random.PRNGKey(0), shape)
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, *shape))
  labels = jnp.arange(4) % 10
  optimizer = optax.sgd(0.1, momentum=0.9)

  @jax.jit  # one compilation: the train step's pieces and both evaluations
  def run(variables):
    def loss_fn(params):
      logits, updated = model16.apply({**variables, "params": params}, x, train=True,
                                      mutable=["batch_stats"])
      return jnp.mean(losses.cross_entropy(logits, labels)), (logits, updated)
    (loss, (logits, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"])
    _, opt_state = optimizer.update(grads, optimizer.init(variables["params"]))
    return (loss, logits, updated, grads, opt_state,
            model16.apply(variables, x, train=False), model32.apply(variables, x, train=False))

  loss, logits, updated, grads, opt_state, eval16, eval32 = run(variables)
  assert logits.dtype == eval16.dtype == jnp.bfloat16
  assert loss.dtype == jnp.float32 and np.isfinite(loss)
  for tree in (variables["params"], grads, updated.get("batch_stats", {}), opt_state):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)} <= {jnp.dtype(jnp.float32)}
  if "_w2a2" not in name:
    scale = float(jnp.max(jnp.abs(eval32))) + 1e-3
    assert float(jnp.max(jnp.abs(eval16.astype(jnp.float32) - eval32))) < 0.05 * scale


def test_batchnorm_follows_pytorch_running_statistics():
  # x over 4 examples of one feature: mean 2.5, biased var 1.25, unbiased var 5/3.
  x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1)
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, train=False)
  y, updated = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2.5) / np.sqrt(1.25 + 1e-5), rtol=1e-6)
  np.testing.assert_allclose(updated["batch_stats"]["mean"], [0.9 * 0 + 0.1 * 2.5], rtol=1e-6)
  np.testing.assert_allclose(updated["batch_stats"]["var"], [0.9 * 1 + 0.1 * 5 / 3], rtol=1e-6)


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20"):
    models.create_model("resnet21", 10)


def test_every_model_has_one_family_and_help_lists_them_by_family():
  assert {models.model_family(name) for name in BFLOAT16_MODELS} == set(models.MODEL_FAMILIES)
  named = [name for _, names in models.MODEL_FAMILIES.values() for name in names]
  assert sorted(named) == sorted(models.MODEL_NAMES)  # each model in exactly one family
  assert models.model_family("resnet50") == "cifar"
  assert models.model_family("imagenet_resnet50") == "imagenet"
  assert models.model_family("resnet18_w2a2") == "rolewise"
  from kd_jax.experiments import launch
  text = launch.help_text()
  for description, names in models.MODEL_FAMILIES.values():
    assert description.split(" (")[0] in text and names[-1] in text


def test_cifar_stem_models_warn_on_large_images_naming_the_imagenet_model():
  warning = models.input_size_warning("resnet50", (224, 224, 3))
  assert "CIFAR network" in warning and "imagenet_resnet50" in warning
  assert "imagenet_resnet18" in models.input_size_warning("resnet18_narrow_w2a2", (96, 96, 3))
  assert models.input_size_warning("wrn_16_2", (64, 64, 3)) is None  # Tiny ImageNet: fine
  assert models.input_size_warning("imagenet_resnet18", (224, 224, 3)) is None
  assert models.input_size_warning("cnn_tiny", (224, 224, 3)) is None


def test_a_pth_tensor_reaching_outside_its_storage_is_refused():
  """A .pth says where each tensor lies in its storage; a layout past the storage's end (or
  with a negative offset or stride) would make as_strided read other memory."""
  from kd_jax.models import pytorch
  storage = np.arange(4, dtype=np.float32)
  np.testing.assert_array_equal(pytorch._rebuild_tensor(storage, 1, (3,), (1,)), [1, 2, 3])
  np.testing.assert_array_equal(pytorch._rebuild_tensor(storage, 0, (2, 2), (1, 2)),
                                [[0, 2], [1, 3]])
  assert pytorch._rebuild_tensor(storage, 0, (0, 5), (5, 1)).shape == (0, 5)
  for offset, size, stride in ((0, (12,), (1,)), (2, (2, 2), (2, 1)), (-1, (2,), (1,)),
                               (3, (2,), (-1,))):
    with pytest.raises(pytorch.UnsafeCheckpointError, match="damaged|invalid layout"):
      pytorch._rebuild_tensor(storage, offset, size, stride)
