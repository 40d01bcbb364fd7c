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


# --- Losses, input gradients and one optimiser step against the PyTorch computations. ---

from experiments.torch_reference import steps as torch_steps  # noqa: E402
from kd_jax import backward, losses  # noqa: E402


def test_losses_match_pytorch():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 8, 10)).astype(np.float32) * 3
  ours = float(jax.numpy.mean(losses.kd_kl(s, t, 4.0)))
  theirs = float(torch_steps.kd_loss(torch.from_numpy(s), torch.from_numpy(t), 4.0))
  assert ours == pytest.approx(theirs, rel=1e-5)
  np.testing.assert_allclose(
      losses.continuation_hinge(s, t, 0.3, 0.5),
      torch_steps.continuation_hinge(torch.from_numpy(s), torch.from_numpy(t), 0.3, 0.5).numpy(),
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


def test_one_kd_step_matches_pytorch_sgd():
  import ml_collections
  from kd_jax.train import objectives, optim, sharding, state as state_lib, steps
  teacher, teacher_vars, teacher_t = _pair("cnn_small", 10, (8, 8, 1), seed=1)
  student, student_vars, student_t = _pair("cnn_tiny", 10, (8, 8, 1), seed=2)
  sgd = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.05, momentum=0.9,
                                       nesterov=False, weight_decay=5e-4, lr_milestones=(),
                                       lr_decay=0.1))
  optimizer, _ = optim.make_optimizer(sgd, 10)
  mesh = sharding.make_data_mesh()
  # Identity normalisation and no augmentation: both sides see the same float inputs.
  preprocess = steps.make_preprocess((0.0,), (1.0 / 255.0,), 0, False, jax.numpy.float32)
  rng = np.random.default_rng(4)
  images = rng.integers(0, 3, (16, 8, 8, 1)).astype(np.uint8)
  labels = rng.integers(0, 10, 16).astype(np.int32)
  state = state_lib.create_train_state(student, optimizer, (8, 8, 1), seed=0)
  state["params"], state["batch_stats"] = student_vars["params"], student_vars["batch_stats"]
  step = steps.make_train_step(student, optimizer, objectives.get_method("kd"), mesh, preprocess,
                               teacher)
  hparams = {k: jax.numpy.float32(v) for k, v in dict(temperature=4.0, ce_weight=0.1,
                                                       kd_weight=0.9, view_weight=1.0).items()}
  for _ in range(2):  # two steps, so the momentum buffer matters
    state, metrics = step(state, sharding.global_batch({"image": images, "label": labels}, mesh),
                          teacher_vars, hparams)

  torch_optimizer = torch.optim.SGD(student_t.parameters(), lr=0.05, momentum=0.9,
                                    weight_decay=5e-4)
  x = torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2).copy())
  for _ in range(2):
    loss = torch_steps.kd_train_step(student_t, teacher_t, torch_optimizer, x,
                                     torch.from_numpy(labels).long(), temperature=4.0,
                                     ce_weight=0.1, kd_weight=0.9)
  assert float(metrics["loss"]) == pytest.approx(loss, rel=1e-4)
  back = convert.torch_to_flax(student_t, student_vars)
  for ours, theirs in zip(jax.tree.leaves({"params": state["params"],
                                           "batch_stats": state["batch_stats"]}),
                          jax.tree.leaves(back)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
