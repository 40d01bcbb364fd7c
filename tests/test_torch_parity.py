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
