"""Each method's training step in kd_jax against the same step in PyTorch, side by side.

  python -m experiments.bench_vs_torch [--teacher=resnet20 --student=resnet8 --batch=64
      --repeats=20 --torch_compile --out=results/bench_vs_torch_cpu.md]

One process, same models (the PyTorch twins get the Flax initial weights), same batch, dtype
(float32) and thread count on both sides. Each side's step does the whole job from a uint8
batch: crop/flip/normalise, the frozen teacher, the method's extra view, the student's
forward/backward and an SGD update (momentum 0.9, weight decay 5e-4). PyTorch runs eagerly
and, with ``--torch_compile``, with both networks wrapped in ``torch.compile``. After a
warm-up, the implementations take turns step by step, round after round, so that drifts in
machine load hit all of them alike; reported: median step time, images/s, JAX ÷ PyTorch
speed, compile time (JAX: lowering + XLA compilation; PyTorch: the first
call), peak memory and each method's step time ÷ its side's
plain KD step.

Peak memory: JAX — XLA's buffer plan of the compiled step (arguments + outputs + temporaries
− donated aliases, ``Compiled.memory_analysis``); PyTorch — on GPU the caching allocator's
peak during one step (``torch.cuda.max_memory_allocated``), on CPU the peak of the profiler's
memory timeline over one step. Both count parameters, optimiser state, the batch and every
intermediate, not the runtime's own code and caches.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from experiments import reporting
from experiments.configs import common
from kd_jax import models
from kd_jax.train import objectives, optim, sharding, state as state_lib, steps

_TEACHER = flags.DEFINE_string("teacher", "resnet20", "Teacher model.")
_STUDENT = flags.DEFINE_string("student", "resnet8", "Student model.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size B.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Square image side (3 channels).")
_CLASSES = flags.DEFINE_integer("classes", 100, "Number of classes.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed rounds (each runs every step once).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed rounds after the first (compiling) call.")
_METHODS = flags.DEFINE_list("methods", None, "Subset of the methods below (default: all).")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile'd models.")
_THREADS = flags.DEFINE_integer("threads", 0, "CPU threads for PyTorch (0: all cores, as "
                                "XLA uses).")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here (and a .png beside it).")

# (label, method, view options) — the views' default options otherwise (common.base_config).
CASES = (
    ("kd", "kd", {}),
    ("kd_mixup", "kd_mixup", {}),
    ("kd_cutmix", "kd_cutmix", {}),
    ("kd_cutmix_pick", "kd_cutmix_pick", {}),
    ("backward_kd (K = 1)", "backward_kd", {}),
    ("continuation_kd", "continuation_kd", {}),
    ("annealing_kd", "annealing_kd", {}),
)
HPARAMS = dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9, view_weight=1.0, phi=0.5,
               psi=0.5, margin=0.1)
MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


def jax_runner(method_name, view_options, student, teacher_variables, teacher, image_shape,
               batch, mesh):
  """A zero-argument function that runs one JAX step, plus its compile time and memory."""
  optimizer, _ = optim.make_optimizer(common.base_config().optimizer, steps_per_epoch=100)
  preprocess = steps.make_preprocess(MEAN, STD, 4, True, jnp.float32)
  step = steps.make_train_step(student, optimizer, objectives.get_method(method_name), mesh,
                               preprocess, teacher, view_options)
  rng = np.random.default_rng(0)
  device_batch = sharding.global_batch(
      {"image": rng.integers(0, 256, (batch, *image_shape), dtype=np.uint8),
       "label": rng.integers(0, _CLASSES.value, batch).astype(np.int32)}, mesh)
  hparams = sharding.replicate({k: jnp.float32(v) for k, v in HPARAMS.items()}, mesh)
  holder = {"state": sharding.replicate(
      state_lib.create_train_state(student, optimizer, image_shape, 0), mesh)}
  start = time.perf_counter()
  stats = step.lower(holder["state"], device_batch, teacher_variables,
                     hparams).compile().memory_analysis()
  compile_seconds = time.perf_counter() - start
  memory = (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes) if stats else None

  def run():
    holder["state"], metrics = step(holder["state"], device_batch, teacher_variables, hparams)
    jax.block_until_ready(metrics)

  run()  # reuses the executable compiled above
  return run, compile_seconds, memory


def torch_runner(method_name, view_options, student_variables, teacher_variables, image_shape,
                 batch, device, compile_models):
  """The same step in PyTorch (experiments/torch_reference), from the same initial weights."""
  import torch
  from experiments.torch_reference import convert, models as torch_models, steps as torch_steps
  method = objectives.get_method(method_name)

  def twin(name, variables):
    model = torch_models.create_torch_model(name, _CLASSES.value, image_shape[-1],
                                            image_shape[0])
    convert.flax_to_torch(jax.device_get(variables), model)
    model = model.to(device)
    return torch.compile(model) if compile_models else model

  student = twin(_STUDENT.value, student_variables)
  teacher = twin(_TEACHER.value, teacher_variables)
  optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.integers(0, 256, (batch, *image_shape), dtype=np.uint8)).to(device)
  labels = torch.from_numpy(rng.integers(0, _CLASSES.value, batch)).long().to(device)
  generator = torch.Generator().manual_seed(0)
  options = dict(view_options.to_dict())
  low = (torch.tensor(0.0) - torch.tensor(MEAN)) / torch.tensor(STD)
  high = (torch.tensor(1.0) - torch.tensor(MEAN)) / torch.tensor(STD)
  options["clip"] = (low.view(1, -1, 1, 1).to(device), high.view(1, -1, 1, 1).to(device))

  def run():
    x = torch_steps.crop_flip_normalize(images, generator, pad=4, mean=MEAN, std=STD)
    torch_steps.distill_step(student, teacher, optimizer, x, labels, objective=method.objective,
                             view=method.view, options=options, hparams=HPARAMS,
                             draws=torch_steps.draw_view(method.view, rng, x, options))
    if device.type == "cuda":
      torch.cuda.synchronize()

  start = time.perf_counter()
  run()
  compile_seconds = time.perf_counter() - start
  return run, compile_seconds, torch_peak_memory(run, device)


def torch_peak_memory(run, device) -> int | None:
  """Peak bytes of one PyTorch step (see the module docstring)."""
  import torch
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
    run()
    return torch.cuda.max_memory_allocated(device)
  from torch.profiler import ProfilerActivity, profile
  try:
    return _profiled_cpu_peak(run, profile, ProfilerActivity)
  except AssertionError as error:  # the profiler's data-flow analysis gives up on some graphs
    print(f"PyTorch memory timeline unavailable: {error!s:.80}", flush=True)
    return None


def _profiled_cpu_peak(run, profile, ProfilerActivity) -> int:
  with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
               with_stack=True) as profiler:
    run()
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "timeline.json")
    import warnings
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", FutureWarning)
      profiler.export_memory_timeline(path, device="cpu")
    import json
    with open(path) as f:
      _, sizes = json.load(f)
  return int(max(sum(by_category) for by_category in sizes))


def write_chart(path, labels, columns, rates):
  """Grouped bars of images/s per method, one colour per implementation."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(10, 4))
  width = 0.8 / len(columns)
  for i, column in enumerate(columns):
    ax.bar(np.arange(len(labels)) + i * width, [rates[label][column] for label in labels],
           width, label=column)
  ax.set_xticks(np.arange(len(labels)) + width * (len(columns) - 1) / 2)
  ax.set_xticklabels(labels, rotation=20, ha="right")
  ax.set_ylabel("images / s (higher is better)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  import torch
  threads = _THREADS.value or os.cpu_count()
  torch.set_num_threads(threads)
  on_gpu = jax.default_backend() == "gpu"
  device = torch.device("cuda" if on_gpu and torch.cuda.is_available() else "cpu")
  image_shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, 3)
  batch = _BATCH.value
  mesh = sharding.make_data_mesh(jax.devices()[:1])  # one device each side
  teacher = models.create_model(_TEACHER.value, _CLASSES.value)
  student = models.create_model(_STUDENT.value, _CLASSES.value)
  teacher_variables = sharding.replicate(
      models.init_variables(teacher, jax.random.PRNGKey(0), image_shape), mesh)
  student_variables = models.init_variables(student, jax.random.PRNGKey(1), image_shape)
  cases = [c for c in CASES if not _METHODS.value or c[1] in _METHODS.value]
  unknown = set(_METHODS.value or ()) - {c[1] for c in CASES}
  if unknown:
    raise app.UsageError(f"unknown --methods {sorted(unknown)}; valid: "
                         f"{', '.join(c[1] for c in CASES)}")
  if cases[0][1] != "kd":
    cases.insert(0, CASES[0])  # the per-method ratios need the plain KD step

  sides = ["JAX", "PyTorch eager"] + (["torch.compile"] if _TORCH_COMPILE.value else [])
  runners = {}
  for label, method, overrides in cases:
    view = common.base_config().view
    view.update(overrides)
    view = ml_collections.ConfigDict(view.to_dict())
    runners[label, "JAX"] = jax_runner(method, view, student, teacher_variables, teacher,
                                       image_shape, batch, mesh)
    for side in sides[1:]:
      if side == "torch.compile":
        torch._dynamo.reset()  # each method's compiled graphs start from a clean cache
      runners[label, side] = torch_runner(method, view, student_variables, teacher_variables,
                                          image_shape, batch, device, side == "torch.compile")
    print(f"{label}: built", flush=True)
  for _ in range(_WARMUP.value):
    for run, _, _ in runners.values():
      run()
  times = {key: [] for key in runners}
  for _ in range(_REPEATS.value):  # implementations and methods take turns
    for key, (run, _, _) in runners.items():
      start = time.perf_counter()
      run()
      times[key].append(time.perf_counter() - start)
  median = {key: statistics.median(values) for key, values in times.items()}

  if on_gpu:
    where = f"1 GPU ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU cores"
  else:
    where = f"CPU only, {os.cpu_count()} cores ({threads} PyTorch threads, XLA all cores)"
  lines = [f"Teacher {_TEACHER.value} → student {_STUDENT.value}, batch {batch}, "
           f"{image_shape[0]}×{image_shape[1]}×3 uint8 → float32, {_CLASSES.value} classes; "
           f"{where}; JAX {jax.__version__}, PyTorch {torch.__version__}; median of "
           f"{_REPEATS.value} alternating rounds after {_WARMUP.value} warm-up rounds.", "",
           "| method | implementation | step (ms) | images/s | JAX speed ÷ this | "
           "÷ own KD step | compile (s) | peak memory (MiB) |",
           "|---|---|---|---|---|---|---|---|"]
  rates = {}
  for label, _, _ in cases:
    rates[label] = {}
    for side in sides:
      seconds = median[label, side]
      rates[label][side] = batch / seconds
      _, compile_seconds, memory = runners[label, side]
      memory_text = f"{memory / 2 ** 20:.0f}" if memory else "—"
      lines.append(f"| {label} | {side} | {1000 * seconds:.1f} | {batch / seconds:.0f} | "
                   f"{seconds / median[label, 'JAX']:.2f} | "
                   f"{seconds / median['kd', side]:.2f} | {compile_seconds:.1f} | "
                   f"{memory_text} |")
  lines += ["", "'JAX speed ÷ this' above 1 means JAX is faster than that implementation. "
            "Peak memory '—': PyTorch's CPU memory timeline (profiler data-flow analysis) "
            "failed on that step's input-gradient passes."]
  if _OUT.value:
    chart = os.path.splitext(_OUT.value)[0] + ".png"
    os.makedirs(os.path.dirname(chart) or ".", exist_ok=True)
    write_chart(chart, [label for label, _, _ in cases], sides, rates)
    lines.append(f"Chart: {os.path.basename(chart)}.")
  arguments = [f"--{f}={v}" for f, v in (
      ("teacher", _TEACHER.value), ("student", _STUDENT.value), ("batch", batch),
      ("image_size", image_shape[0]), ("repeats", _REPEATS.value),
      ("torch_compile", _TORCH_COMPILE.value))]
  if _METHODS.value:
    arguments.append(f"--methods={','.join(_METHODS.value)}")
  if _OUT.value:
    arguments.append(f"--out={_OUT.value}")
  reporting.finish_report(lines, "bench_vs_torch", _OUT.value, arguments)


if __name__ == "__main__":
  app.run(main)
