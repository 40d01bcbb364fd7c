"""Shared fixtures: small, fast configs on the embedded digits data."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from experiments.configs import digits  # noqa: E402


def tiny_config(role="scratch", **overrides):
  """The digits config, shortened: a few epochs of a tiny model, no progress bar."""
  config = digits.get_config(role)
  # cnn_tiny has BatchNorm (resume must restore its statistics); mlp_small learns fastest.
  config.model = "cnn_tiny" if role != "teacher" else "mlp_small"
  config.num_epochs = 2
  config.progress_bar = False
  config.checkpoint_every_steps = 0  # every epoch: the tests count on a checkpoint per epoch
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


@pytest.fixture
def make_config():
  return tiny_config
