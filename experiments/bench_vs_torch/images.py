"""The images suite: every image method's step, kd_jax against the PyTorch twins.

KD, mixup, CutMix, CutMix-pick, backward-pass KD (K = 1), Continuation-KD and Annealing-KD,
teacher → student on random uint8 images. Each step crops, flips and normalises the raw
batch, runs the frozen teacher and the method's extra view, and updates the student with SGD
(momentum 0.9, weight decay 5e-4). The PyTorch side is experiments/torch_reference's step,
from the Flax initial weights.

The runners and ``build_suite`` serve any image pair: an ``ImagePair`` also says how its
steps see and compute (normalisation, the step's crop padding, float32 or bfloat16 compute,
PyTorch tuned for speed or not), so the imagenet suite (imagenet.py) is this suite's
machinery with ImageNet's models and settings.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.bench_vs_torch import harness
from experiments.bench_vs_torch.harness import HPARAMS, Runner, Settings, Suite
from kd_jax.experiments.configs import common
from kd_jax import methods, models
from kd_jax.train import optim, preprocess as preprocess_lib, setup, sharding
from kd_jax.train import state as state_lib

# (label, method, view options) — otherwise the options of the view's own config block
# (common.base_config: config.cutmix, config.backward, ...). "method+view" names another
# view ("none": the objective alone).
IMAGE_CASES = (
    ("kd", "kd", {}),
    ("kd_mixup", "kd_mixup", {}),
    ("kd_cutmix", "kd_cutmix", {}),
    ("kd_cutmix_pick", "kd_cutmix_pick", {}),
    ("backward_kd (K = 1)", "backward_kd", {}),
    ("continuation_kd", "continuation_kd", {}),
    ("annealing_kd", "annealing_kd", {}),
    ("dkd", "dkd", {}),
    ("mlkd (objective on x)", "mlkd+none", {}),
)
MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


def case_method(name: str) -> methods.Method:
  """The method of a case's ``"method"`` or ``"method+view"``."""
  method, _, view = name.partition("+")
  return methods.get_method(method, view or None)


def check_methods(names) -> None:
  """Raises ValueError for a name that is none of the image methods."""
  unknown = set(names or ()) - {c[1] for c in IMAGE_CASES}
  if unknown:
    raise ValueError(f"unknown methods {sorted(unknown)}; valid: "
                     f"{', '.join(c[1] for c in IMAGE_CASES)}")


@dataclasses.dataclass
class ImagePair:
  """A teacher and a student (Flax modules and initial variables), the batch they see, and
  how a step treats it: the normalisation, the crop padding of the step's random crop (0:
  flip only, the crop made on the host as for ImageNet), the compute ``dtype`` ("float32",
  or "bfloat16": kd_jax's models and preprocessing compute in it with float32 parameters,
  optimiser state and losses, as config.dtype does; PyTorch under ``torch.autocast``), and
  ``torch_tuned``: PyTorch set up for speed as its users do (model and input in
  ``channels_last`` memory format, on a GPU ``cudnn.benchmark``)."""
  teacher_name: str
  student_name: str
  batch: int
  image_shape: tuple
  classes: int
  mean: tuple = MEAN
  std: tuple = STD
  crop_pad: int = 4
  dtype: str = "float32"
  torch_tuned: bool = False

  def __post_init__(self):
    compute_dtype = setup.dtype_of(self.dtype)
    self.teacher = models.create_model(self.teacher_name, self.classes, compute_dtype)
    self.student = models.create_model(self.student_name, self.classes, compute_dtype)
    # Host copies: every runner puts its own on the device (the JAX steps donate theirs).
    self.teacher_variables = jax.device_get(models.init_variables(
        self.teacher, jax.random.PRNGKey(0), self.image_shape))
    self.student_variables = jax.device_get(models.init_variables(
        self.student, jax.random.PRNGKey(1), self.image_shape))
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (self.batch, *self.image_shape), dtype=np.uint8)
    self.labels = rng.integers(0, self.classes, self.batch).astype(np.int32)

  def torch_twins(self, device, compile_models: bool):
    import torch
    from experiments.torch_reference import convert, models as torch_models

    def twin(name, variables):
      model = torch_models.create_torch_model(name, self.classes, self.image_shape[-1],
                                              self.image_shape[0])
      convert.flax_to_torch(variables, model)
      model = model.to(device)
      if self.torch_tuned:
        model = model.to(memory_format=torch.channels_last)
      return torch.compile(model) if compile_models else model

    return (twin(self.student_name, self.student_variables),
            twin(self.teacher_name, self.teacher_variables))


def view_config(method_name: str, overrides=None) -> ml_collections.ConfigDict:
  """A copy of the method's view block in common.base_config with ``overrides`` (empty for a
  method without a view)."""
  view = case_method(method_name).view
  options = setup.view_block(common.base_config(), view).to_dict() if view else {}
  return ml_collections.ConfigDict({**options, **(overrides or {})})


def sgd_optimizer():
  """kd_jax's image optimiser: SGD, momentum 0.9, weight decay 5e-4 (common.base_config)."""
  optimizer, _ = optim.make_optimizer(**common.base_config().optimizer.to_dict(),
                                      steps_per_epoch=100)
  return optimizer


def jax_image_runner(pair: ImagePair, method_name, view_options, mesh) -> Runner:
  """kd_jax's compiled image step for the method, from the pair's initial weights."""
  optimizer = sgd_optimizer()
  preprocess = preprocess_lib.image_preprocess(pair.mean, pair.std, pair.crop_pad, True,
                                               setup.dtype_of(pair.dtype))
  step = setup.compiled_image_step(pair.student, optimizer, case_method(method_name),
                                   preprocess, mesh, teacher=pair.teacher,
                                   view_options=view_options)
  batch = sharding.global_batch({"image": pair.images, "label": pair.labels}, mesh)
  hparams = sharding.replicate({k: jnp.float32(v) for k, v in HPARAMS.items()}, mesh)
  # From the pair's student weights (the PyTorch twin's), with create_train_state's key
  # for seed 0.
  _, step_key = jax.random.split(jax.random.PRNGKey(0))
  state = sharding.replicate(state_lib.new_train_state(pair.student_variables, optimizer,
                                                       step_key), mesh)
  teacher_variables = sharding.replicate(pair.teacher_variables, mesh)
  return harness.jax_runner(step, state, batch, teacher_variables, hparams, {})


def torch_image_runner(pair: ImagePair, method_name, view_options, device,
                       compile_models) -> Runner:
  """The same step in PyTorch (experiments/torch_reference), from the same initial
  weights."""
  import torch
  from experiments.torch_reference import steps as torch_steps
  method = case_method(method_name)
  objective = torch_steps.OBJECTIVE_OF_METHOD[method_name.partition("+")[0]]
  view = method.view or "none"
  allocated_before = harness.torch_allocated(device)
  student, teacher = pair.torch_twins(device, compile_models)
  optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  images = torch.from_numpy(pair.images).to(device)
  labels = torch.from_numpy(pair.labels).long().to(device)
  rng = np.random.default_rng(0)
  generator = torch.Generator().manual_seed(0)
  options = dict(view_options.to_dict())
  mean, std = torch.tensor(pair.mean), torch.tensor(pair.std)
  low, high = (0.0 - mean) / std, (1.0 - mean) / std
  options["clip"] = (low.view(1, -1, 1, 1).to(device), high.view(1, -1, 1, 1).to(device))

  def run():
    with torch_speed_context(pair, device):
      x = torch_steps.crop_flip_normalize(images, generator, pad=pair.crop_pad,
                                          mean=pair.mean, std=pair.std)
      if pair.torch_tuned:
        x = x.contiguous(memory_format=torch.channels_last)
      torch_steps.distill_step(student, teacher, optimizer, x, labels, objective=objective,
                               view=view, options=options, hparams=HPARAMS,
                               draws=torch_steps.draw_view(view, rng, x, options),
                               forward_context=torch_forward_context(pair, device))
    harness.synchronize(device)

  return harness.torch_timed(run, device, allocated_before)


def torch_forward_context(pair: ImagePair, device):
  """What a PyTorch step's forward passes run under: ``torch.autocast`` to bfloat16 for a
  bfloat16 pair (the backward pass and the optimiser step outside it, as PyTorch advises)."""
  import torch
  if pair.dtype == "bfloat16":
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
  return contextlib.nullcontext


@contextlib.contextmanager
def torch_speed_context(pair: ImagePair, device):
  """Around a PyTorch step, for a tuned pair on a GPU: ``cudnn.benchmark`` (restored after,
  so that other suites' steps keep PyTorch's defaults)."""
  import torch
  with contextlib.ExitStack() as stack:
    if pair.torch_tuned and device.type == "cuda":
      saved = torch.backends.cudnn.benchmark
      torch.backends.cudnn.benchmark = True
      stack.callback(setattr, torch.backends.cudnn, "benchmark", saved)
    yield


def select_cases(methods_asked, available=IMAGE_CASES) -> list:
  """The ``available`` cases among ``methods_asked`` (None: all), plain KD always first:
  the per-method ratios need the plain KD step."""
  check_methods(methods_asked)
  cases = [c for c in available if not methods_asked or c[1] in methods_asked]
  if not cases or cases[0][1] != "kd":
    cases.insert(0, IMAGE_CASES[0])
  return cases


def build_suite(title: str, pair: ImagePair, cases, sides, device, mesh, **suite_fields) -> Suite:
  """Every case's step on every side, for ``pair``; ``suite_fields``: Suite's optional
  fields (precision, MFU)."""
  runners = {}
  for label, method, overrides in cases:
    view = view_config(method, overrides)
    runners[label, "JAX"] = jax_image_runner(pair, method, view, mesh)
    for side in sides[1:]:
      harness.reset_torch_compile(side)
      runners[label, side] = torch_image_runner(pair, method, view, device,
                                                side == "torch.compile")
    print(f"{label}: built", flush=True)
  return Suite(title, "images", pair.batch, [c[0] for c in cases], runners, **suite_fields)


def image_suite(settings: Settings, sides, device, mesh) -> Suite:
  """Every image method (or ``settings.methods``, plain KD always first) on every side."""
  cases = select_cases(settings.methods)
  shape = (settings.image_size, settings.image_size, 3)
  pair = ImagePair(settings.teacher, settings.student, settings.batch, shape, settings.classes)
  title = (f"Images: teacher {pair.teacher_name} → student {pair.student_name}, batch "
           f"{pair.batch}, {shape[0]}×{shape[1]}×3 uint8 → float32, {pair.classes} classes.")
  return build_suite(title, pair, cases, sides, device, mesh)
