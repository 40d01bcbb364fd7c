"""Shared fixtures: small, fast configs on the embedded digits data."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from kd_jax.experiments.configs import digits  # noqa: E402


def tiny_config(role="scratch", **overrides):
  """The digits config, shortened: a few epochs of a tiny model, no progress bar."""
  config = digits.get_config(role)
  # cnn_tiny has BatchNorm (resume must restore its statistics); mlp_small learns fastest.
  config.model = "cnn_tiny" if role != "teacher" else "mlp_small"
  config.num_epochs = 2
  config.progress_bar = False
  config.checkpoint_every_steps = 0  # every epoch: the tests count on a checkpoint per epoch
  return override(config, overrides)


def override(config, overrides: dict):
  """Sets ``{"dotted.key": value}`` in ``config`` (as --config.dotted.key=value would)."""
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def image_step(student, optimizer, method, preprocess, teacher=None, view_options=None,
               mesh=None, **step_options):
  """The core step for Linen image modules, compiled for ``mesh`` (default: all devices):
  ``step(state, batch, teacher_variables, hparams)`` (kd_jax.train.setup.compiled_image_step
  without teacher constants)."""
  from kd_jax.train import setup, sharding
  compiled = setup.compiled_image_step(student, optimizer, method, preprocess,
                                       mesh or sharding.make_data_mesh(), teacher=teacher,
                                       view_options=view_options, **step_options)

  def step(state, batch, teacher_variables, hparams):
    return compiled(state, batch, teacher_variables, hparams, {})
  step.compiled = compiled
  return step


def sgd(**overrides):
  """SGD (kd_jax.train.optim.make_optimizer) without schedule or weight decay by default."""
  from kd_jax.train import optim
  options = dict(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.0,
                 lr_milestones=(), steps_per_epoch=10)
  options.update(overrides)
  return optim.make_optimizer(**options)[0]


@pytest.fixture
def make_config():
  return tiny_config


def run_script(module, *arguments, package="kd_jax.experiments"):
  """Runs ``python -m <package>.<module>`` from the root (package "experiments": the
  clone-only scripts)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, "-m", f"{package}.{module}", *arguments],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout
