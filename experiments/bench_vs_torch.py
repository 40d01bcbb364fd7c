"""Each method's training step in kd_jax against the same step in PyTorch, side by side.

  python -m experiments.bench_vs_torch [--suites=images,rolewise,text --batch=64
      --repeats=20 --torch_compile --out=results/bench_vs_torch_cpu.md]

Three tables, all timed in one process:
  images    every image method (KD, mixup, CutMix, CutMix-pick, backward-pass KD,
            Continuation-KD, Annealing-KD), teacher ``--teacher`` → student ``--student``;
  rolewise  role-wise KD's stage-2 step (PBA policy augmentation, frozen full-precision
            teacher, 2-bit student) beside plain KD with crop/flip on the same two networks.
            kd_jax applies the policy on device inside the compiled step; the PyTorch side
            applies it the way PBA's data pipeline does, image by image with PIL on the host
            (experiments/torch_reference/pil_policy.py);
  text      BERT-style KD, token-level backward-pass KD and Continuation-KD on MiniLM-shaped
            encoders (6 × 384 teacher, 3-layer student; random weights: speed does not
            depend on them) against Hugging Face's BertForSequenceClassification.

Same models (the PyTorch twins get the Flax initial weights), same batch, dtype (float32)
and thread count on both sides. Each step does the whole job from raw inputs (uint8 images /
token ids): augmentation, the frozen teacher, the method's extra view, the student's
forward/backward and the update (SGD with momentum 0.9 and weight decay 5e-4 for images,
AdamW for text). PyTorch runs eagerly and, with ``--torch_compile``, with the networks
wrapped in ``torch.compile``. After a warm-up, all implementations take turns step by step,
round after round, so that drifts in machine load hit all of them alike
(experiments.benchmark). Reported: median (min–max) step time, examples/s, JAX ÷ PyTorch
speed, compile time (JAX: lowering + XLA compilation; PyTorch: the first call), peak
memory, each step's time ÷ its side's plain KD step, and — what the method's extra passes
predict — the compiled JAX step's FLOPs ÷ the KD step's (XLA's cost analysis).

Peak memory: JAX — XLA's buffer plan of the compiled step (arguments + outputs + temporaries
− donated aliases, ``Compiled.memory_analysis``); PyTorch — on GPU the caching allocator's
peak during one step (``torch.cuda.max_memory_allocated``), on CPU the peak of the profiler's
memory timeline over one step. Both count parameters, optimiser state, the batch and every
intermediate, not the runtime's own code and caches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from experiments import benchmark, reporting
from experiments.configs import common, text_common
from kd_jax import models, pba
from kd_jax.models import bert
from kd_jax import methods
from kd_jax.methods import backward_kd
from kd_jax.models import adapters
from kd_jax.train import optim, preprocess as preprocess_lib, setup, sharding
from kd_jax.train import state as state_lib, step as step_lib

SUITES = ("images", "rolewise", "text")
_SUITES = flags.DEFINE_list("suites", list(SUITES), f"Tables to time: {', '.join(SUITES)}.")
_TEACHER = flags.DEFINE_string("teacher", "resnet20", "Image teacher.")
_STUDENT = flags.DEFINE_string("student", "resnet8", "Image student.")
_ROLEWISE_TEACHER = flags.DEFINE_string("rolewise_teacher", "resnet18_narrow",
                                        "Role-wise: full-precision teacher.")
_ROLEWISE_STUDENT = flags.DEFINE_string("rolewise_student", "resnet18_narrow_w2a2",
                                        "Role-wise: low-bit student.")
_BATCH = flags.DEFINE_integer("batch", 64, "Image batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Square image side (3 channels).")
_CLASSES = flags.DEFINE_integer("classes", 100, "Number of image classes.")
_TEXT_SIZE = flags.DEFINE_enum("text_size", "minilm", ["minilm", "tiny"],
                               "minilm: 6 layers × 384, 30,522-token vocabulary (student: "
                               "layers 0, 2, 4); tiny: 2 × 16, 100 tokens (for tests).")
_TEXT_BATCH = flags.DEFINE_integer("text_batch", 16, "Text batch size (sequences).")
_TEXT_LENGTH = flags.DEFINE_integer("text_length", 64, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed rounds (each runs every step once).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed rounds after the first (compiling) call.")
_METHODS = flags.DEFINE_list("methods", None, "Subset of the image methods (default: all).")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile'd models.")
_THREADS = flags.DEFINE_integer("threads", 0, "CPU threads for PyTorch (0: all cores, as "
                                "XLA uses).")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown tables here (and a .png beside it).")

# (label, method, view options) — the views' default options otherwise (common.base_config).
IMAGE_CASES = (
    ("kd", "kd", {}),
    ("kd_mixup", "kd_mixup", {}),
    ("kd_cutmix", "kd_cutmix", {}),
    ("kd_cutmix_pick", "kd_cutmix_pick", {}),
    ("backward_kd (K = 1)", "backward_kd", {}),
    ("continuation_kd", "continuation_kd", {}),
    ("annealing_kd", "annealing_kd", {}),
)
TEXT_CASES = (("text kd", "kd"), ("text backward_kd (K = 1)", "backward_kd"),
              ("text continuation_kd", "continuation_kd"))
ROLEWISE_KD, ROLEWISE = "kd, crop/flip", "role-wise stage 2, PBA policy"
HPARAMS = dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9, view_weight=1.0, phi=0.5,
               psi=0.5, margin=0.1)
MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)
FILL = tuple(int(round(255 * m)) for m in MEAN)  # PBA fills with the dataset mean
ROLEWISE_CUTOUT = 8  # role-wise KD's CIFAR-100 pipeline
SPECIAL_IDS = (0, 101, 102)  # [PAD], [CLS], [SEP] in BERT's vocabulary
TEXT_TOTAL_STEPS = 10_000  # the learning-rate schedule's length (both sides)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to time (the script's flags)."""
  suites: tuple[str, ...] = SUITES
  teacher: str = "resnet20"
  student: str = "resnet8"
  rolewise_teacher: str = "resnet18_narrow"
  rolewise_student: str = "resnet18_narrow_w2a2"
  batch: int = 64
  image_size: int = 32
  classes: int = 100
  text_size: str = "minilm"
  text_batch: int = 16
  text_length: int = 64
  repeats: int = 20
  warmup: int = 3
  methods: tuple[str, ...] | None = None
  torch_compile: bool = True
  threads: int = 0


@dataclasses.dataclass
class Runner:
  """One implementation of one step: ``run()`` does a step and waits for it."""
  run: Callable[[], None]
  compile_seconds: float
  memory: int | None
  flops: float | None = None


@dataclasses.dataclass
class Suite:
  title: str
  unit: str            # what one example is ("images", "sequences")
  batch: int
  labels: list[str]    # rows, the plain-KD baseline first
  runners: dict        # (label, side) -> Runner


def _compile_jax(jitted, *args):
  """Lower and compile for these arguments: the executable, seconds, peak bytes, FLOPs."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  memory = (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes) if stats else None
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return compiled, seconds, memory, (cost or {}).get("flops")


def _jax_step_runner(compiled, state, *args) -> Callable[[], None]:
  """Calls the executable with a donated state carried from step to step."""
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], *args)
    jax.block_until_ready(metrics)

  return run


def _torch_timed(run, device) -> Runner:
  """The first call (PyTorch's compile time under torch.compile), then the peak memory."""
  start = time.perf_counter()
  run()
  return Runner(run, time.perf_counter() - start, torch_peak_memory(run, device))


def torch_peak_memory(run, device) -> int | None:
  """Peak bytes of one PyTorch step (see the module docstring)."""
  import torch
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
    run()
    return torch.cuda.max_memory_allocated(device)
  from torch.profiler import ProfilerActivity, profile
  try:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as profiler:
      run()
    with tempfile.TemporaryDirectory() as folder:
      path = os.path.join(folder, "timeline.json")
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        profiler.export_memory_timeline(path, device="cpu")
      with open(path) as f:
        _, sizes = json.load(f)
    return int(max(sum(by_category) for by_category in sizes))
  except (AssertionError, RuntimeError) as error:  # its data-flow analysis gives up on some
    print(f"PyTorch memory timeline unavailable: {error!s:.80}", flush=True)
    return None


# --- Images: every method; role-wise KD's stage-2 step. ---

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


def _sgd_config():
  return common.base_config().optimizer  # SGD, momentum 0.9, weight decay 5e-4


def jax_image_runner(pair: ImagePair, method_name, view_options, mesh) -> Runner:
  optimizer, _ = optim.make_optimizer(**_sgd_config().to_dict(), steps_per_epoch=100)
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
  compiled, seconds, memory, flops = _compile_jax(step, state, batch, teacher_variables,
                                                  hparams, {})
  run = _jax_step_runner(compiled, state, batch, teacher_variables, hparams, {})
  run()
  return Runner(run, seconds, memory, flops)


def torch_image_runner(pair: ImagePair, method_name, view_options, device,
                       compile_models) -> Runner:
  """The same step in PyTorch (experiments/torch_reference), from the same initial weights."""
  import torch
  from experiments.torch_reference import steps as torch_steps
  method = methods.get_method(method_name)
  objective = torch_steps.OBJECTIVE_OF_METHOD[method_name]
  view = method.view or "none"
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
    _synchronize(device)

  return _torch_timed(run, device)


def _synchronize(device):
  import torch
  if device.type == "cuda":
    torch.cuda.synchronize()


def rolewise_policy() -> np.ndarray:
  """A fixed policy with every operation possible (probabilities 0..10, magnitudes 0..9)."""
  rng = np.random.default_rng(7)
  return np.stack([rng.integers(0, 11, 30), rng.integers(0, 10, 30)], axis=1).astype(np.int32)


def jax_rolewise_runner(pair: ImagePair) -> Runner:
  """kd_jax.pba's member step (the core step with the role-wise policy preprocess): policy,
  pad/crop/flip/cutout and KD in one compiled program."""
  optimizer, _ = optim.make_optimizer(**_sgd_config().to_dict(), steps_per_epoch=100)
  setup = pba.MemberSetup(pair.student, optimizer, MEAN, STD, FILL, pad=4, flip=True,
                          cutout_size=ROLEWISE_CUTOUT, teacher_model=pair.teacher)
  state = jax.tree.map(lambda x: x[0], pba.init_population(
      pair.student, optimizer, pair.image_shape, [0], init_variables=pair.student_variables))
  step = jax.jit(pba.make_member_step(setup), donate_argnums=(0,))
  args = ({"image": jnp.asarray(pair.images), "label": jnp.asarray(pair.labels)},
          pair.teacher_variables,
          {**{k: jnp.float32(HPARAMS[k])
              for k in ("temperature", "ce_weight", "kd_weight", "view_weight")},
           "policy": jnp.asarray(rolewise_policy())}, {})
  compiled, seconds, memory, flops = _compile_jax(step, state, *args)
  run = _jax_step_runner(compiled, state, *args)
  run()
  return Runner(run, seconds, memory, flops)


def torch_rolewise_runner(pair: ImagePair, device, compile_models) -> Runner:
  """PBA's host pipeline (PIL, image by image), then the KD step of the PyTorch twins."""
  import torch
  from experiments.torch_reference import pil_policy, steps as torch_steps
  student, teacher = pair.torch_twins(device, compile_models)
  optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  labels = torch.from_numpy(pair.labels).long().to(device)
  policy = rolewise_policy()
  rng = np.random.default_rng(0)
  mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
  std = torch.tensor(STD, device=device).view(1, -1, 1, 1)

  def run():
    augmented = pil_policy.augment_batch(rng, pair.images, policy, fill=FILL, pad=4,
                                         flip=True, cutout_size=ROLEWISE_CUTOUT)
    x = torch.from_numpy(augmented).to(device).permute(0, 3, 1, 2).float() / 255.0
    torch_steps.distill_step(student, teacher, optimizer, (x - mean) / std, labels,
                             objective="kd", hparams=HPARAMS)
    _synchronize(device)

  return _torch_timed(run, device)


def image_suite(settings: Settings, sides, device, mesh) -> Suite:
  cases = [c for c in IMAGE_CASES if not settings.methods or c[1] in settings.methods]
  if cases[0][1] != "kd":
    cases.insert(0, IMAGE_CASES[0])  # the per-method ratios need the plain KD step
  shape = (settings.image_size, settings.image_size, 3)
  pair = ImagePair(settings.teacher, settings.student, settings.batch, shape, settings.classes)
  runners = {}
  for label, method, overrides in cases:
    view = common.base_config().view
    view.update(overrides)
    view = ml_collections.ConfigDict(view.to_dict())
    runners[label, "JAX"] = jax_image_runner(pair, method, view, mesh)
    for side in sides[1:]:
      _reset_torch_compile(side)
      runners[label, side] = torch_image_runner(pair, method, view, device,
                                                side == "torch.compile")
    print(f"{label}: built", flush=True)
  title = (f"Images: teacher {pair.teacher_name} → student {pair.student_name}, batch "
           f"{pair.batch}, {shape[0]}×{shape[1]}×3 uint8 → float32, {pair.classes} classes.")
  return Suite(title, "images", pair.batch, [c[0] for c in cases], runners)


def rolewise_suite(settings: Settings, sides, device, mesh) -> Suite:
  shape = (settings.image_size, settings.image_size, 3)
  pair = ImagePair(settings.rolewise_teacher, settings.rolewise_student, settings.batch, shape,
                   settings.classes)
  kd_view = common.base_config().view
  runners = {(ROLEWISE_KD, "JAX"): jax_image_runner(pair, "kd", kd_view, mesh),
             (ROLEWISE, "JAX"): jax_rolewise_runner(pair)}
  for side in sides[1:]:
    _reset_torch_compile(side)
    runners[ROLEWISE_KD, side] = torch_image_runner(pair, "kd", kd_view, device,
                                                    side == "torch.compile")
    _reset_torch_compile(side)
    runners[ROLEWISE, side] = torch_rolewise_runner(pair, device, side == "torch.compile")
  print("role-wise: built", flush=True)
  title = (f"Role-wise KD, stage 2: teacher {pair.teacher_name} → student "
           f"{pair.student_name}, batch {pair.batch}, {shape[0]}×{shape[1]}×3, "
           f"{pair.classes} classes; policy + pad-crop/flip + cutout {ROLEWISE_CUTOUT} "
           "(kd_jax: on device in the step; PyTorch: PIL on the host, as PBA's pipeline).")
  return Suite(title, "images", pair.batch, [ROLEWISE_KD, ROLEWISE], runners)


def _reset_torch_compile(side):
  if side == "torch.compile":
    import torch
    torch._dynamo.reset()  # each step's compiled graphs start from a clean cache


# --- Text: BERT-style encoders. ---

def text_configs(text_size: str, length: int) -> tuple[bert.BertConfig, tuple[int, ...]]:
  """The teacher's shape and the teacher layers the student keeps."""
  if text_size == "minilm":
    return bert.BertConfig(), (0, 2, 4)
  return bert.BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=length), (0,)


@dataclasses.dataclass
class TextPair:
  batch: int
  length: int
  size: str = "minilm"

  def __post_init__(self):
    self.teacher_config, layers = text_configs(self.size, self.length)
    self.teacher = bert.BertClassifier(self.teacher_config)
    self.teacher_params = jax.device_get(bert.init_params(self.teacher, jax.random.PRNGKey(0)))
    self.student, self.student_params = bert.student_from_teacher(
        self.teacher_params, self.teacher_config, layers, key=jax.random.PRNGKey(1))
    self.student_config = self.student.config
    rng = np.random.default_rng(0)
    vocab = self.teacher_config.vocab_size
    ids = rng.integers(max(SPECIAL_IDS) + 1, vocab, (self.batch, self.length))
    lengths = rng.integers(self.length // 2, self.length + 1, self.batch)
    mask = np.arange(self.length)[None] < lengths[:, None]
    ids[:, 0] = SPECIAL_IDS[1]
    ids[np.arange(self.batch), lengths - 1] = SPECIAL_IDS[2]
    self.ids = np.where(mask, ids, SPECIAL_IDS[0]).astype(np.int32)
    self.mask = mask.astype(np.int32)
    self.types = np.zeros_like(self.ids)
    self.labels = rng.integers(0, self.teacher_config.num_labels, self.batch).astype(np.int32)
    self.perturb = self.mask.astype(bool) & ~np.isin(self.ids, SPECIAL_IDS)


def jax_text_runner(pair: TextPair, method_name, mesh) -> Runner:
  config = text_common.base_text_config()
  optimizer, _ = optim.make_optimizer(**config.optimizer.to_dict(),
                                      steps_per_epoch=TEXT_TOTAL_STEPS, num_epochs=1)
  method = methods.get_method(method_name)
  student, teacher = adapters.BertModel(pair.student), adapters.BertModel(pair.teacher)
  view = (methods.make_view("backward", "text", **setup.view_keywords(config.view),
                            special_ids=SPECIAL_IDS) if method.view else None)
  step = step_lib.jit_data_parallel(step_lib.make_train_step(
      student, optimizer, method, preprocess_lib.TextPreprocess(), teacher=teacher, view=view),
      mesh)
  teacher_variables = {"params": pair.teacher_params, "batch_stats": {}}
  # As the loop does: the frozen teacher's Gram matrix once, outside the step.
  constants = backward_kd.teacher_constants(teacher, teacher_variables) if view else {}
  state = sharding.replicate({"step": jnp.zeros((), jnp.int32), "params": pair.student_params,
                              "batch_stats": {}, "opt_state": optimizer.init(pair.student_params),
                              "rng": jax.random.PRNGKey(0)}, mesh)
  batch = sharding.global_batch({"input_ids": pair.ids, "token_type_ids": pair.types,
                                 "attention_mask": pair.mask, "label": pair.labels}, mesh)
  teacher_variables = sharding.replicate(teacher_variables, mesh)
  constants = sharding.replicate(constants, mesh)
  hparams = sharding.replicate({k: jnp.float32(v) for k, v in text_hparams().items()}, mesh)
  compiled, seconds, memory, flops = _compile_jax(step, state, batch, teacher_variables,
                                                  hparams, constants)
  run = _jax_step_runner(compiled, state, batch, teacher_variables, hparams, constants)
  run()
  return Runner(run, seconds, memory, flops)


def text_hparams() -> dict:
  kd = text_common.base_text_config().kd
  return {**HPARAMS, "temperature": kd.temperature, "ce_weight": kd.ce_weight,
          "kd_weight": kd.kd_weight}


def torch_text_runner(pair: TextPair, method_name, device, compile_models) -> Runner:
  """Hugging Face BERT twins, the explicit one-hot token backward KD, AdamW + LambdaLR."""
  import torch
  from experiments.torch_reference import text_steps
  from experiments.torch_reference import steps as torch_steps
  method = methods.get_method(method_name)
  config = text_common.base_text_config()

  def twin(params, bert_config):
    model = text_steps.hf_model_from_flax(params, bert_config).to(device)
    return torch.compile(model) if compile_models else model

  student = twin(pair.student_params, pair.student_config)
  teacher = twin(pair.teacher_params, pair.teacher_config)
  optimizer, scheduler = text_steps.make_adamw(
      student, learning_rate=config.optimizer.learning_rate,
      weight_decay=config.optimizer.weight_decay,
      warmup_fraction=config.optimizer.warmup_fraction, total_steps=TEXT_TOTAL_STEPS)
  tensors = [torch.from_numpy(a).long().to(device)
             for a in (pair.ids, pair.types, pair.mask, pair.labels)]
  perturb = torch.from_numpy(pair.perturb).float().to(device)
  hparams = text_hparams()
  backward_options = (dict(steps=config.view.steps, step_size=config.view.step_size,
                           normalize=config.view.normalize)
                      if method.view == "backward" else None)

  def run():
    text_steps.text_kd_step(student, teacher, optimizer, scheduler, *tensors[:3], tensors[3],
                            perturb, hparams=hparams,
                            objective=torch_steps.OBJECTIVE_OF_METHOD[method_name],
                            backward_options=backward_options)
    _synchronize(device)

  return _torch_timed(run, device)


def text_suite(settings: Settings, sides, device, mesh) -> Suite:
  pair = TextPair(settings.text_batch, settings.text_length, settings.text_size)
  runners = {}
  for label, method in TEXT_CASES:
    runners[label, "JAX"] = jax_text_runner(pair, method, mesh)
    for side in sides[1:]:
      _reset_torch_compile(side)
      try:
        runners[label, side] = torch_text_runner(pair, method, device, side == "torch.compile")
      except Exception as error:  # noqa: BLE001 - reported in the table, not fatal
        if side != "torch.compile":
          raise
        print(f"{label}: torch.compile failed: {error!s:.200}", flush=True)
    print(f"{label}: built", flush=True)
  t, s = pair.teacher_config, pair.student_config
  title = (f"Text: BERT teacher {t.num_hidden_layers} layers × {t.hidden_size} → student "
           f"{s.num_hidden_layers} layers (teacher layers), vocabulary {t.vocab_size}, batch "
           f"{pair.batch} × {pair.length} tokens (padded), dropout 0.1, AdamW; token-level "
           "backward KD: kd_jax via the embedding Gram matrix, PyTorch with the explicit "
           "one-hot (batch × length × vocabulary) tensor.")
  return Suite(title, "sequences", pair.batch, [c[0] for c in TEXT_CASES], runners)


# --- Timing and the report. ---

def suite_lines(suite: Suite, sides, times: dict) -> list[str]:
  """A suite's two tables from its runners' times ({(label, side): benchmark.Timing})."""
  median = {key: timing.median for key, timing in times.items()}
  lines = [f"### {suite.title}", "",
           f"| method | implementation | step (ms) | {suite.unit}/s | JAX speed ÷ this | "
           "÷ own KD step | compile (s) | peak memory (MiB) |",
           "|---|---|---|---|---|---|---|---|"]
  kd = suite.labels[0]
  for label in suite.labels:
    for side in sides:
      if (label, side) not in suite.runners:
        lines.append(f"| {label} | {side} | failed | — | — | — | — | — |")
        continue
      runner, seconds = suite.runners[label, side], median[label, side]
      own_kd = seconds / median[kd, side] if (kd, side) in median else float("nan")
      memory = _mebibytes(runner.memory)
      lines.append(f"| {label} | {side} | {times[label, side].ms()} | "
                   f"{suite.batch / seconds:.0f} | "
                   f"{seconds / median[label, 'JAX']:.2f} | {own_kd:.2f} | "
                   f"{runner.compile_seconds:.1f} | {memory} |")
  lines += ["", f"Cost over plain KD ({kd}) against what the extra passes predict (the "
            "compiled JAX step's FLOPs ÷ the KD step's, XLA cost analysis):", "",
            "| method | FLOPs ÷ KD | " + " | ".join(f"{side} time ÷ KD" for side in sides)
            + " | JAX time ratio ÷ FLOPs ratio |",
            "|---|---|" + "---|" * len(sides) + "---|"]
  base_flops = suite.runners[kd, "JAX"].flops
  for label in suite.labels[1:]:
    flops = suite.runners[label, "JAX"].flops
    predicted = flops / base_flops if flops and base_flops else float("nan")
    ratios = [median[label, side] / median[kd, side] if (label, side) in median
              and (kd, side) in median else float("nan") for side in sides]
    lines.append(f"| {label} | {predicted:.2f} | " + " | ".join(f"{r:.2f}" for r in ratios)
                 + f" | {ratios[0] / predicted:.2f} |")
  return lines + [""]


def _mebibytes(size: int | None) -> str:
  if not size:
    return "—"
  mib = size / 2 ** 20
  return f"{mib:.0f}" if mib >= 10 else f"{mib:.2g}"


def write_chart(path, suites, sides, median):
  """One panel per table: examples/s per step, one colour per implementation."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = sum(len(suite.labels) for suite in suites)
  fig, axes = plt.subplots(1, len(suites), figsize=(max(6.0, 1.3 * rows + 2), 4.5),
                           squeeze=False,
                           gridspec_kw={"width_ratios": [len(s.labels) for s in suites]})
  width = 0.8 / len(sides)
  for ax, suite in zip(axes[0], suites):
    for i, side in enumerate(sides):
      ax.bar(np.arange(len(suite.labels)) + i * width,
             [suite.batch / median[label, side] if (label, side) in median else 0
              for label in suite.labels], width, label=side)
    ax.set_xticks(np.arange(len(suite.labels)) + width * (len(sides) - 1) / 2)
    ax.set_xticklabels(suite.labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"{suite.unit} / s (higher is better)")
  axes[0][0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def measure(settings: Settings) -> tuple[list[str], list[Suite], list[str], dict]:
  """Builds the chosen suites and times all their steps in turns: the report's lines, the
  suites, the implementations and the times ({(suite title, (label, side)): Timing})."""
  import torch
  unknown = set(settings.suites) - set(SUITES)
  if unknown:
    raise ValueError(f"unknown suites {sorted(unknown)}; valid: {', '.join(SUITES)}")
  unknown = set(settings.methods or ()) - {c[1] for c in IMAGE_CASES}
  if unknown:
    raise ValueError(f"unknown methods {sorted(unknown)}; valid: "
                     f"{', '.join(c[1] for c in IMAGE_CASES)}")
  threads = settings.threads or os.cpu_count()
  torch.set_num_threads(threads)
  on_gpu = jax.default_backend() == "gpu"
  device = torch.device("cuda" if on_gpu and torch.cuda.is_available() else "cpu")
  mesh = sharding.make_data_mesh(jax.devices()[:1])  # one device each side
  sides = ["JAX", "PyTorch eager"] + (["torch.compile"] if settings.torch_compile else [])
  builders = {"images": image_suite, "rolewise": rolewise_suite, "text": text_suite}
  suites = [builders[name](settings, sides, device, mesh) for name in SUITES
            if name in settings.suites]
  times = benchmark.time_alternating(
      {(suite.title, key): runner.run for suite in suites for key, runner in suite.runners.items()},
      warmup=settings.warmup, repeats=settings.repeats)

  if on_gpu:
    where = f"1 GPU ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU cores"
  else:
    where = f"CPU only, {os.cpu_count()} cores ({threads} PyTorch threads, XLA all cores)"
  lines = [f"{where}; JAX {jax.__version__}, PyTorch {torch.__version__}; float32; step times "
           f"are the {benchmark.protocol(settings.warmup, settings.repeats)}, every step of "
           "every table taking turns in each round; rates and ratios are of medians.", ""]
  for suite in suites:
    lines += suite_lines(suite, sides, {key: timing for (title, key), timing in times.items()
                                        if title == suite.title})
  lines += ["'JAX speed ÷ this' above 1 means JAX is faster than that implementation. Peak "
            "memory '—': PyTorch's CPU memory timeline (profiler data-flow analysis) failed on "
            "that step."]
  return lines, suites, sides, times


def main(argv):
  del argv
  settings = Settings(tuple(_SUITES.value), _TEACHER.value, _STUDENT.value,
                      _ROLEWISE_TEACHER.value, _ROLEWISE_STUDENT.value, _BATCH.value,
                      _IMAGE_SIZE.value, _CLASSES.value, _TEXT_SIZE.value, _TEXT_BATCH.value,
                      _TEXT_LENGTH.value, _REPEATS.value, _WARMUP.value,
                      tuple(_METHODS.value) if _METHODS.value else None, _TORCH_COMPILE.value,
                      _THREADS.value)
  try:
    lines, suites, sides, times = measure(settings)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  if _OUT.value:
    chart = os.path.splitext(_OUT.value)[0] + ".png"
    os.makedirs(os.path.dirname(chart) or ".", exist_ok=True)
    write_chart(chart, suites, sides, {key: timing.median for (_, key), timing in times.items()})
    lines.append(f"Chart: {os.path.basename(chart)}.")
  reporting.finish_report(lines, "bench_vs_torch", _OUT.value)


if __name__ == "__main__":
  app.run(main)
