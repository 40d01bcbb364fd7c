"""The images suite: every image method's step, kd_jax against the PyTorch twins.

KD, mixup, CutMix, CutMix-pick, backward-pass KD (K = 1), Continuation-KD and Annealing-KD,
teacher → student on random uint8 images. Each step crops, flips and normalises the raw
batch, runs the frozen teacher and the method's extra view, and updates the student with SGD
(momentum 0.9, weight decay 5e-4). The PyTorch side is experiments/torch_reference's step,
from the Flax initial weights.
"""

from __future__ import annotations

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
# (common.base_config: config.cutmix, config.backward, ...).
IMAGE_CASES = (
    ("kd", "kd", {}),
    ("kd_mixup", "kd_mixup", {}),
    ("kd_cutmix", "kd_cutmix", {}),
    ("kd_cutmix_pick", "kd_cutmix_pick", {}),
    ("backward_kd (K = 1)", "backward_kd", {}),
    ("continuation_kd", "continuation_kd", {}),
    ("annealing_kd", "annealing_kd", {}),
)
MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


def check_methods(names) -> None:
  """Raises ValueError for a name that is none of the image methods."""
  unknown = set(names or ()) - {c[1] for c in IMAGE_CASES}
  if unknown:
    raise ValueError(f"unknown methods {sorted(unknown)}; valid: "
                     f"{', '.join(c[1] for c in IMAGE_CASES)}")


@dataclasses.dataclass
class ImagePair:
  """A teacher and a student (Flax modules and initial variables) and the batch they see."""
  teacher_name: str
  student_name: str
  batch: int
  image_shape: tuple
  classes: int

  def __post_init__(self):
    self.teacher = models.create_model(self.teacher_name, self.classes)
    self.student = models.create_model(self.student_name, self.classes)
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
      return torch.compile(model) if compile_models else model

    return (twin(self.student_name, self.student_variables),
            twin(self.teacher_name, self.teacher_variables))


def view_config(method_name: str, overrides=None) -> ml_collections.ConfigDict:
  """A copy of the method's view block in common.base_config with ``overrides`` (empty for a
  method without a view)."""
  view = methods.get_method(method_name).view
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
  preprocess = preprocess_lib.image_preprocess(MEAN, STD, 4, True)
  step = setup.compiled_image_step(pair.student, optimizer, methods.get_method(method_name),
                                   preprocess, mesh, teacher=pair.teacher,
                                   view_options=view_options)
  batch = sharding.global_batch({"image": pair.images, "label": pair.labels}, mesh)
  hparams = sharding.replicate({k: jnp.float32(v) for k, v in HPARAMS.items()}, mesh)
  state = state_lib.create_train_state(pair.student, optimizer, pair.image_shape, 0)
  state["params"] = pair.student_variables["params"]  # the PyTorch twin's weights
  state["batch_stats"] = pair.student_variables["batch_stats"]
  state = sharding.replicate(state, mesh)
  teacher_variables = sharding.replicate(pair.teacher_variables, mesh)
  return harness.jax_runner(step, state, batch, teacher_variables, hparams, {})


def torch_image_runner(pair: ImagePair, method_name, view_options, device,
                       compile_models) -> Runner:
  """The same step in PyTorch (experiments/torch_reference), from the same initial
  weights."""
  import torch
  from experiments.torch_reference import steps as torch_steps
  method = methods.get_method(method_name)
  objective = torch_steps.OBJECTIVE_OF_METHOD[method_name]
  view = method.view or "none"
  allocated_before = harness.torch_allocated(device)
  student, teacher = pair.torch_twins(device, compile_models)
  optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  images = torch.from_numpy(pair.images).to(device)
  labels = torch.from_numpy(pair.labels).long().to(device)
  rng = np.random.default_rng(0)
  generator = torch.Generator().manual_seed(0)
  options = dict(view_options.to_dict())
  low = (torch.tensor(0.0) - torch.tensor(MEAN)) / torch.tensor(STD)
  high = (torch.tensor(1.0) - torch.tensor(MEAN)) / torch.tensor(STD)
  options["clip"] = (low.view(1, -1, 1, 1).to(device), high.view(1, -1, 1, 1).to(device))

  def run():
    x = torch_steps.crop_flip_normalize(images, generator, pad=4, mean=MEAN, std=STD)
    torch_steps.distill_step(student, teacher, optimizer, x, labels, objective=objective,
                             view=view, options=options, hparams=HPARAMS,
                             draws=torch_steps.draw_view(view, rng, x, options))
    harness.synchronize(device)

  return harness.torch_timed(run, device, allocated_before)


def image_suite(settings: Settings, sides, device, mesh) -> Suite:
  """Every image method (or ``settings.methods``, plain KD always first) on every side."""
  check_methods(settings.methods)
  cases = [c for c in IMAGE_CASES if not settings.methods or c[1] in settings.methods]
  if cases[0][1] != "kd":
    cases.insert(0, IMAGE_CASES[0])  # the per-method ratios need the plain KD step
  shape = (settings.image_size, settings.image_size, 3)
  pair = ImagePair(settings.teacher, settings.student, settings.batch, shape, settings.classes)
  runners = {}
  for label, method, overrides in cases:
    view = view_config(method, overrides)
    runners[label, "JAX"] = jax_image_runner(pair, method, view, mesh)
    for side in sides[1:]:
      harness.reset_torch_compile(side)
      runners[label, side] = torch_image_runner(pair, method, view, device,
                                                side == "torch.compile")
    print(f"{label}: built", flush=True)
  title = (f"Images: teacher {pair.teacher_name} → student {pair.student_name}, batch "
           f"{pair.batch}, {shape[0]}×{shape[1]}×3 uint8 → float32, {pair.classes} classes.")
  return Suite(title, "images", pair.batch, [c[0] for c in cases], runners)
