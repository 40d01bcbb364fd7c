"""What the suites share: settings, runners, compiling and timing one step, PyTorch's
peak memory, model-FLOPs utilisation, and the report (tables and chart).

The alternating timing itself is kd_jax.experiments.benchmark's; peak memory is counted as the
package docstring says.
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
import numpy as np

from kd_jax.experiments import benchmark
from kd_jax.experiments.configs import imagenet as imagenet_config

SUITES = ("images", "rolewise", "text", "imagenet")
# What runs without --suites: the imagenet suite (ResNet-34 → ResNet-18 at 224×224) is asked
# for by name, since on a CPU it takes minutes a step at its GPU batch.
DEFAULT_SUITES = ("images", "rolewise", "text")
# The methods' hyperparameters, the same on both sides (the text suite overrides KD's).
HPARAMS = dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9, view_weight=1.0, phi=0.5,
               psi=0.5, margin=0.1, dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup=1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to time (the command line's flags)."""
  suites: tuple[str, ...] = DEFAULT_SUITES
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
  gpu_precision: str = "tf32"  # "tf32" | "float32": matmuls and convolutions, both sides
  imagenet_teacher: str = imagenet_config.TEACHER_MODEL  # ResNet-34, torchvision's
  imagenet_student: str = imagenet_config.STUDENT_MODEL  # ResNet-18
  imagenet_batch: int = 256
  imagenet_image_size: int = 224
  peak_tflops: float = 0.0  # the accelerator's dense bf16 peak for MFU; 0: by device kind


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
  precision: str = "float32"  # what the steps compute in, for the report's first line
  # Model-FLOPs utilisation column (``mfu``): ``peak_flops`` in FLOP/s (None: '—') and
  # ``peak_source``, what that peak is or why there is none (bf16_peak).
  mfu: bool = False
  peak_flops: float | None = None
  peak_source: str = ""
  notes: tuple[str, ...] = ()  # paragraphs under the table


# Dense (no sparsity) bfloat16 peaks in FLOP/s by ``jax.devices()[0].device_kind`` exactly as
# JAX reports it: an NVIDIA GPU's CUDA device name (torch.cuda.get_device_name's too), a TPU's
# generation ("TPU v5 lite" is v5e, "TPU v5" v5p). From the vendors' data sheets.
BF16_PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H200": 989e12,  # H200 SXM
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5": 459e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def bf16_peak(platform: str, device_kind: str, peak_tflops: float = 0.0):
  """The accelerator's dense bf16 peak in FLOP/s and what it is, or None and why there is
  none: ``peak_tflops`` (> 0) overrides; a CPU and a device kind missing from
  BF16_PEAK_FLOPS have none. Raises ValueError for a negative ``peak_tflops``."""
  if peak_tflops < 0:
    raise ValueError(f"peak_tflops must be ≥ 0 (0: look the device kind up); got {peak_tflops}")
  if peak_tflops:
    return peak_tflops * 1e12, f"{peak_tflops:g} TFLOP/s, given by --peak_tflops"
  if platform == "cpu":
    return None, "a CPU has no bf16 peak in the table (--peak_tflops sets one)"
  if device_kind in BF16_PEAK_FLOPS:
    return (BF16_PEAK_FLOPS[device_kind],
            f"{BF16_PEAK_FLOPS[device_kind] / 1e12:g} TFLOP/s, {device_kind}'s dense bf16 peak")
  return None, (f"no dense bf16 peak known for device kind {device_kind!r} (--peak_tflops "
                "sets one)")


def mfu(flops: float | None, seconds: float, peak_flops: float | None) -> float | None:
  """Model-FLOPs utilisation: a step's FLOPs ÷ (its time × the peak); None without both."""
  if not flops or not peak_flops or not seconds > 0:
    return None
  return flops / (seconds * peak_flops)


def compile_jax(jitted, *args):
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


def jax_step_runner(compiled, state, *args) -> Callable[[], None]:
  """Calls the executable with a donated state carried from step to step."""
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], *args)
    jax.block_until_ready(metrics)

  return run


def jax_runner(jitted, state, *args) -> Runner:
  """Compiles a step ``(state, *args) -> (state, metrics)`` and makes its first call."""
  compiled, seconds, memory, flops = compile_jax(jitted, state, *args)
  run = jax_step_runner(compiled, state, *args)
  run()
  return Runner(run, seconds, memory, flops)


def torch_allocated(device) -> int:
  """Bytes the caching allocator holds in live tensors now (0 on CPU). A PyTorch runner
  reads it before it builds anything, so that its peak leaves out the runners built before
  it, which stay alive in their suite."""
  import torch
  return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def torch_timed(run, device, allocated_before: int = 0) -> Runner:
  """The first call (PyTorch's compile time under torch.compile), then the peak memory;
  ``allocated_before``: ``torch_allocated`` before the runner built its models."""
  seconds = benchmark.timed_call(run)
  return Runner(run, seconds, torch_peak_memory(run, device, allocated_before))


def torch_peak_memory(run, device, allocated_before: int = 0) -> int | None:
  """Peak bytes of one PyTorch step: on GPU the caching allocator's peak less what other
  runners held before this one was built (its models, optimiser state and batch count, as
  they do in JAX's figure); on CPU the peak of the profiler's memory timeline (None where
  its data-flow analysis gives up)."""
  import torch
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
    run()
    return torch.cuda.max_memory_allocated(device) - allocated_before
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


def synchronize(device):
  """Waits for the device's queued PyTorch work (a no-op on CPU)."""
  import torch
  if device.type == "cuda":
    torch.cuda.synchronize()


def reset_torch_compile(side):
  """Before building a torch.compile runner: its compiled graphs start from a clean cache."""
  if side == "torch.compile":
    import torch
    torch._dynamo.reset()


# --- The report. ---

# A step whose slowest timed round took over this many times its fastest is named under its
# table (on a shared machine, other work slows some rounds).
UNEVEN = 3


def suite_lines(suite: Suite, sides, times: dict) -> list[str]:
  """A suite's two tables from its runners' times ({(label, side): benchmark.Timing})."""
  median = {key: timing.median for key, timing in times.items()}
  mfu_column = " MFU |" if suite.mfu else ""
  lines = [f"### {suite.title}", "",
           f"| method | implementation | step (ms) | {suite.unit}/s | JAX speed ÷ this | "
           "÷ own KD step | compile (s) | peak memory (MiB) |" + mfu_column,
           "|---|---|---|---|---|---|---|---|" + "---|" * suite.mfu]
  kd = suite.labels[0]
  for label in suite.labels:
    for side in sides:
      if (label, side) not in suite.runners:
        lines.append(f"| {label} | {side} | failed | — | — | — | — | — |"
                     + " — |" * suite.mfu)
        continue
      runner, seconds = suite.runners[label, side], median[label, side]
      own_kd = seconds / median[kd, side] if (kd, side) in median else float("nan")
      memory = mebibytes(runner.memory)
      # Every side's MFU counts the JAX step's FLOPs: the same models doing the same work.
      utilisation = mfu(suite.runners[label, "JAX"].flops, seconds, suite.peak_flops)
      lines.append(f"| {label} | {side} | {times[label, side].ms()} | "
                   f"{suite.batch / seconds:.0f} | "
                   f"{seconds / median[label, 'JAX']:.2f} | {own_kd:.2f} | "
                   f"{runner.compile_seconds:.1f} | {memory} |"
                   + (f" {percent(utilisation)} |" if suite.mfu else ""))
  if suite.mfu:
    flops = ", ".join(f"{label} {teraflop(suite.runners[label, 'JAX'].flops)}"
                      for label in suite.labels)
    lines += ["", f"MFU: the compiled JAX step's FLOPs (XLA cost analysis: {flops} a step) "
              "÷ (median step time × the accelerator's peak), every implementation counted "
              "with the JAX step's FLOPs (the same models doing the same work). Peak: "
              + (suite.peak_source + "." if suite.peak_flops else
                 f"none, so MFU '—': {suite.peak_source}.")]
  for note in suite.notes:
    lines += ["", note]
  uneven = [f"{label} {side} {times[label, side].max / times[label, side].min:.0f}×"
            for label in suite.labels for side in sides if (label, side) in times
            and times[label, side].max > UNEVEN * times[label, side].min]
  if uneven:
    lines += ["", f"Uneven rounds (slowest ÷ fastest over {UNEVEN}×): {', '.join(uneven)}. "
              "Such spreads usually come from rounds slowed by something outside the step "
              "(other work on a shared machine), so these medians may overstate what a step "
              "costs; the minima come closer."]
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


def percent(fraction: float | None) -> str:
  return "—" if fraction is None else f"{100 * fraction:.1f} %"


def teraflop(flops: float | None) -> str:
  return "—" if not flops else f"{flops / 1e12:.3g} TFLOP"


def mebibytes(size: int | None) -> str:
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


def chart_beside(report_path: str, suites, sides, times) -> str:
  """Writes the chart as a .png beside the report; the report's line naming it."""
  chart = os.path.splitext(report_path)[0] + ".png"
  os.makedirs(os.path.dirname(chart) or ".", exist_ok=True)
  write_chart(chart, suites, sides, {key: timing.median for (_, key), timing in times.items()})
  return f"Chart: {os.path.basename(chart)}."
