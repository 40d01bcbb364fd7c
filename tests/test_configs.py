"""Every config file builds, names real models, and carries its launch command."""

import importlib

import pytest

from kd_jax import models
from kd_jax.data import DATASET_NAMES
from kd_jax import methods

CONFIG_ARGUMENTS = {
    "digits": ["teacher", "scratch", "kd"],
    "mnist": ["teacher", "scratch", "kd"],
    "cifar100_teacher": None,  # filled from the module's table below
    "cifar100_kd": None,
    "cifar100_strong_aug": [f"{pair},{method}" for pair in (
        "wrn_40_2-wrn_16_2", "resnet56-resnet20", "resnet32x4-resnet8x4", "vgg13-vgg8",
        "vgg13-mobilenetv2", "resnet50-vgg8", "resnet32x4-shufflenetv2")
        for method in ("kd", "kd_mixup", "kd_cutmix", "kd_cutmix_pick",
                       "kd_cutmix_pick,student_entropy", "kd_cutmix_pick,kl")],
    "cifar_continuation": [f"{dataset},{role}" for dataset in ("cifar10", "cifar100")
                           for role in ("teacher", "scratch", "kd", "annealing_kd",
                                        "continuation_kd")],
    "rolewise": ["digits", "mnist5k", "cifar100"],
    "imagenet": ["teacher", "scratch", "kd", "kd_cutmix", "kd_cutmix_pick"],
    "cifar100_logit_kd": [f"{pair},{recipe}" for pair in (
        "wrn_40_2-wrn_16_2", "resnet56-resnet20", "resnet32x4-resnet8x4", "vgg13-vgg8",
        "vgg13-mobilenetv2", "resnet32x4-shufflenetv2")
        for recipe in ("kd", "dkd", "mlkd", "mlkd_ls")],
}


# Expected top-1 (%) from the papers, written out: RepDistiller (Tian et al. 2020) Tables 1
# and 2 for CIFAR-100 teachers, students and KD; Wang et al. 2022 Table 3 for the stronger
# augmentations (mixup only for three pairs; -1 where the paper has no number); Jafari et
# al. 2022 for Continuation-KD. Every other config argument expects -1 (or has no target).
PAPER_TOP1 = {
    **{("cifar100_teacher", model): top1 for model, top1 in {
        "resnet56": 72.34, "resnet110": 74.31, "resnet32x4": 79.42, "wrn_40_2": 75.61,
        "vgg13": 74.64, "resnet20": 69.06, "resnet32": 71.14, "resnet8x4": 72.50,
        "wrn_16_2": 73.26, "wrn_40_1": 71.98, "vgg8": 70.36}.items()},
    **{("cifar100_kd", pair): top1 for pair, top1 in {
        "resnet56-resnet20": 70.66, "resnet110-resnet32": 73.08, "resnet32x4-resnet8x4": 73.33,
        "wrn_40_2-wrn_16_2": 74.92, "wrn_40_2-wrn_40_1": 73.54,
        "vgg13-vgg8": 72.98}.items()},
    **{("cifar100_strong_aug", f"{pair},{method}"): top1
       for pair, row in {  # kd, kd_cutmix, kd_cutmix_pick, kd_mixup
           "wrn_40_2-wrn_16_2": (74.92, 75.34, 75.59, 75.33),
           "resnet56-resnet20": (70.66, 70.77, 70.99, 71.00),
           "resnet32x4-resnet8x4": (73.33, 74.91, 74.78, -1.0),
           "vgg13-vgg8": (72.98, 74.16, 74.43, 73.79),
           "vgg13-mobilenetv2": (67.37, 68.79, 69.49, -1.0),
           "resnet50-vgg8": (73.81, 74.85, 74.95, -1.0),
           "resnet32x4-shufflenetv2": (74.45, 76.61, 76.90, -1.0)}.items()
       for method, top1 in zip(("kd", "kd_cutmix", "kd_cutmix_pick,kl", "kd_mixup"), row)},
    # ICLR'22 Table 2: the entropy pick criteria, three pairs (Table 3's pick is KL).
    **{("cifar100_strong_aug", f"{pair},kd_cutmix_pick{score}"): top1
       for pair, (teacher_entropy, student_entropy) in {
           "wrn_40_2-wrn_16_2": (75.46, 75.52), "resnet56-resnet20": (70.88, 70.84),
           "vgg13-vgg8": (74.16, 74.16)}.items()
       for score, top1 in (("", teacher_entropy), (",student_entropy", student_entropy))},
    # The strong-view logit-KD table of issue 29: KD (Wang et al. Table 3), DKD (mdistiller's
    # README), MLKD (Jin et al. 2023) and MLKD + logit standardisation (Sun et al. 2024).
    **{("cifar100_logit_kd", f"{pair},{recipe}"): top1
       for pair, row in {  # kd, dkd, mlkd, mlkd_ls
           "wrn_40_2-wrn_16_2": (74.92, 76.23, 76.63, 76.95),
           "resnet56-resnet20": (70.66, 71.97, 72.19, 72.33),
           "resnet32x4-resnet8x4": (73.33, 76.32, 77.08, 78.28),
           "vgg13-vgg8": (72.98, 74.68, 75.18, 75.22),
           "vgg13-mobilenetv2": (67.37, 69.71, 70.57, 70.94),
           "resnet32x4-shufflenetv2": (74.45, 77.07, 78.44, 78.76)}.items()
       for recipe, top1 in zip(("kd", "dkd", "mlkd", "mlkd_ls"), row)},
    **{("cifar_continuation", f"cifar10,{role}"): top1 for role, top1 in {
        "teacher": 93.8, "scratch": 88.44, "kd": 88.45, "annealing_kd": 89.44,
        "continuation_kd": 90.21}.items()},
    # Wang et al. 2022 Table 5 (ImageNet, torchvision's ResNet-34 → ResNet-18, 100 epochs).
    **{("imagenet", role): top1 for role, top1 in {
        "teacher": 73.31, "scratch": 69.75, "kd": 70.66, "kd_cutmix": 71.05,
        "kd_cutmix_pick": 70.78}.items()},
    **{("cifar_continuation", f"cifar100,{role}"): top1 for role, top1 in {
        "teacher": 71.92, "scratch": 61.37, "kd": 61.41, "annealing_kd": 63.1,
        "continuation_kd": 64.2}.items()},
}


def _cases():
  for name, arguments in CONFIG_ARGUMENTS.items():
    module = importlib.import_module(f"kd_jax.experiments.configs.{name}")
    for argument in arguments or module.EXPECTED_TOP1:
      yield name, argument


@pytest.mark.parametrize("name, argument", list(_cases()))
def test_config_builds_with_valid_names(name, argument):
  module = importlib.import_module(f"kd_jax.experiments.configs.{name}")
  config = module.get_config(argument)
  assert config.model in models.MODEL_NAMES
  assert config.dataset in DATASET_NAMES
  assert methods.get_method(config.method)
  assert f"kd_jax/experiments/configs/{name}.py" in module.__doc__  # its launch command
  # Against the papers' tables copied here by hand, not the module's own dictionary.
  assert config.get("expected_top1", -1.0) == PAPER_TOP1.get((name, argument), -1.0), (name, argument)
  if name == "cifar_continuation":
    assert (config.num_epochs, config.batch_size, config.optimizer.learning_rate,
            config.continuation.t_max) == (200, 32, 0.2, 20)
  if name in ("cifar100_kd", "cifar100_strong_aug", "cifar100_logit_kd"):
    teacher = argument.split("-")[0]
    assert teacher in models.MODEL_NAMES and teacher in config.teacher_workdir


def test_strong_aug_targets_follow_the_pick_criterion():
  from kd_jax.experiments.configs import cifar100_strong_aug as wang
  kl = wang.get_config("resnet32x4-shufflenetv2,kd_cutmix_pick,kl")
  assert kl.cutmix_pick.score == "kl" and kl.expected_top1 == 76.90
  default = wang.get_config("resnet32x4-shufflenetv2,kd_cutmix_pick")
  assert default.cutmix_pick.score == "teacher_entropy" and default.expected_top1 == -1.0
  assert wang.get_config("vgg13-vgg8,kd_cutmix_pick").expected_top1 == 74.16
  assert wang.expected_top1("resnet32x4-shufflenetv2", "kd_cutmix_pick", 4, "kl") == 77.90
  assert wang.expected_top1("resnet32x4-shufflenetv2", "kd_cutmix_pick", 4) == -1.0
  assert wang.get_config("vgg13-vgg8,kd_mixup").expected_top1 == 73.79
  assert wang.get_config("resnet50-vgg8,kd_mixup").expected_top1 == -1.0  # not in the table
  assert wang.get_config("vgg13-mobilenetv2,kd").optimizer.learning_rate == 0.01
  with pytest.raises(ValueError, match="teacher-student,method"):
    wang.get_config("vgg13-vgg8,kd_cutout")
  with pytest.raises(ValueError, match="for kd_cutmix_pick only"):
    wang.get_config("vgg13-vgg8,kd_cutmix,kl")
  with pytest.raises(ValueError, match="score among"):
    wang.get_config("vgg13-vgg8,kd_cutmix_pick,entropy")


def test_logit_kd_recipes_follow_the_official_settings():
  from kd_jax.experiments.configs import cifar100_logit_kd as recipes
  from kd_jax.train import setup
  dkd = recipes.get_config("resnet56-resnet20,dkd")
  assert (dkd.method, dkd.dkd.beta, dkd.dkd.alpha, dkd.dkd.ce_weight, dkd.num_epochs) == (
      "dkd", 2.0, 1.0, 1.0, 240)
  mlkd = recipes.get_config("resnet32x4-shufflenetv2,mlkd")
  assert (mlkd.method, mlkd.num_epochs, mlkd.optimizer.learning_rate, mlkd.kd.standardize,
          mlkd.view.joint_pass) == ("mlkd", 960, 0.01, False, False)
  ls = recipes.get_config("vgg13-vgg8,mlkd_ls")
  assert (ls.kd.standardize, ls.kd.temperature, ls.kd.kd_weight, ls.optimizer.learning_rate,
          ls.num_epochs) == (True, 2.0, 6.0, 0.01, 480)
  assert recipes.get_config("resnet32x4-resnet8x4,mlkd_ls").kd.kd_weight == 9.0
  # Every option passes (the dual view's strong view included) up to the teacher's run
  # directory, checked last, which does not exist here.
  with pytest.raises(Exception, match="config.teacher_workdir: runs/cifar100/vgg13/seed0 does "
                     "not exist"):
    setup.check_config(ls)
  with pytest.raises(ValueError, match="a recipe among kd, dkd, mlkd, mlkd_ls"):
    recipes.get_config("vgg13-vgg8,mlkd+ls")


def test_bad_config_arguments():
  from kd_jax.experiments.configs import cifar100_kd, digits, mnist
  with pytest.raises(ValueError, match="teacher-student"):
    cifar100_kd.get_config("resnet56")
  for module in (digits, mnist):
    with pytest.raises(ValueError, match="valid roles"):
      module.get_config("student")
  from kd_jax.experiments.configs import rolewise
  with pytest.raises(ValueError, match="valid: digits, mnist5k, cifar100"):
    rolewise.get_config("mnist")


def test_rolewise_scales_jitter_in_proportion_and_search_inside_the_training_split():
  """Pad 1/8 and cutout 1/4 of the side on digits and CIFAR-100 (PBA's 4 and 8 of 32 px),
  mnist5k's usual 2 and 6 of 28; the search's training images leave most of the training
  split for its validation; no flips of digits."""
  from kd_jax.experiments.configs import rolewise
  sides_and_train = {"digits": (8, 1438), "mnist5k": (28, 4000), "cifar100": (32, 50000)}
  for scale, (side, train) in sides_and_train.items():
    config = rolewise.get_config(scale)
    pad, cutout = config.augment.crop_pad, config.augment.cutout_size
    assert (pad, cutout) == ((2, 6) if scale == "mnist5k" else (side // 8, side // 4)), scale
    assert config.augment.flip == (scale == "cifar100")
    assert 0 < config.search.train_examples < train // 2, scale
  small = rolewise.get_config("mnist5k")
  assert (small.model, small.teacher_model) == ("resnet18_narrow_w2a2", "resnet18_narrow")
  assert (small.optimizer.name, small.num_epochs) == ("sgd", 30)


@pytest.mark.parametrize("role", ["teacher", "student", "kd", "annealing_kd",
                                  "continuation_kd"])
def test_glue_schedule_values_per_epoch(role):
  """The paper's GLUE protocol, epoch by epoch: T_max 10 over 30 epochs steps T down every
  3 epochs (T = 1 from epoch 27); Continuation-KD's ψ = i/40 up to epoch 20, then 1;
  Annealing-KD distils (ψ = 0) until T reaches 1, then trains on labels."""
  from kd_jax.experiments.configs import glue_continuation
  from kd_jax.train import loop
  config = glue_continuation.get_config(f"sst2,{role}")
  method = methods.get_method(config.method)
  for epoch in range(1, 31):
    values = loop.epoch_hparams(config, method, epoch, config.num_epochs)
    temperature = max(1, 10 - epoch // 3)
    if role in ("teacher", "student", "kd"):
      assert (values["phi"], values["psi"]) == (1.0, 1.0)
      continue
    assert values["continuation_temperature"] == temperature, epoch
    assert values["phi"] == pytest.approx(1 - (temperature - 1) / 10), epoch
    if role == "continuation_kd":
      assert values["psi"] == pytest.approx(epoch / 40 if epoch <= 20 else 1.0), epoch
      assert values["margin"] == config.continuation.margin
    else:
      assert values["psi"] == (0.0 if epoch <= 27 else 1.0), epoch
      assert values["margin"] == 0.0
      if epoch == 27:
        assert values["phi"] == 1.0  # the unscaled teacher before the switch


def test_tpu_pod_example_command_parses_and_passes_the_config_checks(tmp_path):
  """experiments/launch_tpu_pod.sh's training command, its shell variables filled in: every
  --config.KEY is a key of imagenet.py's config (values typed as the config's), and the
  config passes the checks run before a job loads anything (the lr scaled to the global
  batch: 0.1 per 256)."""
  import os
  import re
  from kd_jax.experiments.configs import imagenet
  from kd_jax.train import optim, setup
  from tests.conftest import ROOT, override
  with open(os.path.join(ROOT, "experiments", "launch_tpu_pod.sh")) as f:
    script = f.read()
  command = re.search(r"python -m kd_jax\.experiments\.distill(.*?)>", script, re.S).group(1)
  teacher = tmp_path / "resnet34.pth"
  teacher.write_bytes(b"")
  shell = {"$DATA": str(tmp_path), "$TEACHER": str(teacher), "$BATCH": "1024",
           "$WORKDIR": str(tmp_path / "run")}
  flags = dict(word.split("=", 1) for word in command.replace("\\", " ").split())
  assert flags.pop("--config") == "kd_jax/experiments/configs/imagenet.py:kd_cutmix_pick"
  assert flags.pop("--workdir") == "$WORKDIR"
  config = imagenet.get_config("kd_cutmix_pick")
  typed = {}
  for flag, value in flags.items():
    key = flag[len("--config."):]
    node = config
    for part in key.split("."):
      node = node[part]  # KeyError: not a key of the config
    value = shell.get(value, value)
    if isinstance(node, bool):
      typed[key] = value == "True"
    else:  # None: a placeholder (data_dir), a string
      typed[key] = value if node is None else type(node)(value)
  config = override(config, typed)
  assert config.multihost and config.batch_size == 1024 and config.dtype == "bfloat16"
  for devices in (8, 16, 32):  # 8 GPUs, a v4-32's or a v5e-32's chips; 4 or 8 hosts
    assert config.batch_size % devices == 0 and config.eval_batch_size % devices == 0
  setup.check_config(config)
  _, schedule = optim.make_optimizer(**config.optimizer.to_dict(), steps_per_epoch=1,
                                     global_batch=config.batch_size)
  assert abs(float(schedule(0)) - 0.4) < 1e-7
