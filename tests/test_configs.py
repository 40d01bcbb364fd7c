"""Every config file builds, names real models, and carries its launch command."""

import importlib

import pytest

from kd_jax import models
from kd_jax.data import DATASET_NAMES
from kd_jax.train import objectives

CONFIG_ARGUMENTS = {
    "digits": ["teacher", "scratch", "kd"],
    "cifar100_teacher": None,  # filled from the module's table below
    "cifar100_kd": None,
}


def _cases():
  for name, arguments in CONFIG_ARGUMENTS.items():
    module = importlib.import_module(f"experiments.configs.{name}")
    for argument in arguments or module.EXPECTED_TOP1:
      yield name, argument


@pytest.mark.parametrize("name, argument", list(_cases()))
def test_config_builds_with_valid_names(name, argument):
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config(argument)
  assert config.model in models.MODEL_NAMES
  assert config.dataset in DATASET_NAMES
  assert objectives.get_method(config.method)
  assert f"experiments/configs/{name}.py" in module.__doc__  # its launch command
  if hasattr(module, "EXPECTED_TOP1"):
    assert config.expected_top1 == module.EXPECTED_TOP1[argument]
  if name == "cifar100_kd":
    teacher = argument.split("-")[0]
    assert teacher in models.MODEL_NAMES and teacher in config.teacher_workdir


def test_bad_config_arguments():
  from experiments.configs import cifar100_kd, digits
  with pytest.raises(ValueError, match="teacher-student"):
    cifar100_kd.get_config("resnet56")
  with pytest.raises(ValueError, match="valid roles"):
    digits.get_config("student")
