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
    "cifar100_strong_aug": [f"{pair},{method}" for pair in (
        "wrn_40_2-wrn_16_2", "resnet56-resnet20", "resnet32x4-resnet8x4", "vgg13-vgg8",
        "vgg13-mobilenetv2", "resnet50-vgg8", "resnet32x4-shufflenetv2")
        for method in ("kd", "kd_mixup", "kd_cutmix", "kd_cutmix_pick")],
    "cifar_continuation": [f"{dataset},{role}" for dataset in ("cifar10", "cifar100")
                           for role in ("teacher", "scratch", "kd", "annealing_kd",
                                        "continuation_kd")],
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
  if hasattr(module, "EXPECTED_TOP1") and name != "cifar_continuation":
    assert config.expected_top1 == module.EXPECTED_TOP1[argument]
  if name == "cifar_continuation":
    dataset, role = argument.split(",")
    assert config.expected_top1 == module.EXPECTED_TOP1[dataset][role]
    assert (config.num_epochs, config.batch_size, config.optimizer.learning_rate,
            config.continuation.t_max) == (200, 32, 0.2, 20)
  if name in ("cifar100_kd", "cifar100_strong_aug"):
    teacher = argument.split("-")[0]
    assert teacher in models.MODEL_NAMES and teacher in config.teacher_workdir


def test_strong_aug_targets_are_table_3():
  from experiments.configs import cifar100_strong_aug as wang
  assert wang.get_config("resnet32x4-shufflenetv2,kd_cutmix_pick").expected_top1 == 76.90
  assert wang.expected_top1("resnet32x4-shufflenetv2", "kd_cutmix_pick", 4) == 77.90
  assert wang.get_config("vgg13-vgg8,kd_mixup").expected_top1 == 73.79
  assert wang.get_config("resnet50-vgg8,kd_mixup").expected_top1 == -1.0  # not in the table
  assert wang.get_config("vgg13-mobilenetv2,kd").optimizer.learning_rate == 0.01
  with pytest.raises(ValueError, match="teacher-student,method"):
    wang.get_config("vgg13-vgg8,kd_cutout")


def test_bad_config_arguments():
  from experiments.configs import cifar100_kd, digits
  with pytest.raises(ValueError, match="teacher-student"):
    cifar100_kd.get_config("resnet56")
  with pytest.raises(ValueError, match="valid roles"):
    digits.get_config("student")
