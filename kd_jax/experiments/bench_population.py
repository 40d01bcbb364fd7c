"""A PBA population of P trials: one vmapped step against P single steps and P processes.

  python -m kd_jax.experiments.bench_population [--population=8 --model=resnet18_narrow_w2a2
      --teacher=resnet18_narrow --batch=50 --image_size=8 --repeats=10
      --out=results/bench_population_cpu.md]

Each trial's step is role-wise KD's stage-2 step (policy augmentation, frozen teacher on the
augmented images, student update). Three ways to run the P trials:
  population   one compiled step, ``vmap`` over the trials (kd_jax.pba)
  sequential   the single-trial step compiled once and called P times, one after another
  processes    P separate Python processes, each running its trial's steps (the official
               PBA design, one Ray process per trial), started together
plus ``unroll``: the P single-trial steps placed side by side in one compiled program. The
in-process ways alternate round by round in this process after a warm-up
(kd_jax.experiments.benchmark); the processes run afterwards on the same machine, all stepping at
once (a round's time: the slowest process's time for that step). Reported: the median
(min–max) round time, trial-steps per second (images/s = that × batch), the speed ratio to
the population step, and for the processes the wall time including their start-up and
compilation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from kd_jax import models, pba
from kd_jax.experiments import benchmark, reporting

_POPULATION = flags.DEFINE_integer("population", 8, "Trials P.")
_MODEL = flags.DEFINE_string("model", "resnet18_narrow_w2a2", "Student model of every trial.")
_TEACHER = flags.DEFINE_string("teacher", "resnet18_narrow", "Frozen teacher ('' for none).")
_BATCH = flags.DEFINE_integer("batch", 50, "Batch per trial.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 8, "Square image side.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Image channels.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed rounds after the first (compiling) one.")
_WORKER = flags.DEFINE_integer("worker", -1, "Internal: run as trial process N.")
_GO_FILE = flags.DEFINE_string("go_file", "", "Internal: workers start timing when it exists.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")
INTERNAL_FLAGS = ("worker", "go_file")
CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every way of running the trials shares (the script's flags)."""

  population: int = 8
  model: str = "resnet18_narrow_w2a2"
  teacher: str = "resnet18_narrow"
  batch: int = 50
  image_size: int = 8
  channels: int = 1
  repeats: int = 10
  warmup: int = 2


def _setup_and_inputs(settings: Settings, population: int):
  shape = (settings.image_size, settings.image_size, settings.channels)
  teacher = models.create_model(settings.teacher, CLASSES) if settings.teacher else None
  teacher_vars = models.init_variables(teacher, jax.random.PRNGKey(99), shape) if teacher else {}
  setup = pba.MemberSetup(
    models.create_model(settings.model, CLASSES),
    optax.sgd(0.01, momentum=0.9),
    (0.5,) * shape[-1],
    (0.25,) * shape[-1],
    (128,) * shape[-1],
    pad=1,
    flip=False,
    cutout_size=2,
    teacher_model=teacher,
  )
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (population, settings.batch, *shape), dtype=np.uint8)
  labels = rng.integers(0, CLASSES, (population, settings.batch)).astype(np.int32)
  pop_policies = jax.random.randint(jax.random.PRNGKey(1), (population, 30, 2), 0, 10)
  hparams = {
    "temperature": jnp.float32(4.0),
    "ce_weight": jnp.float32(0.1),
    "kd_weight": jnp.float32(0.9),
    "view_weight": jnp.float32(1.0),
  }
  return setup, shape, teacher_vars, images, labels, pop_policies, hparams


def worker(settings: Settings, index: int, go_file: str) -> dict:
  """One trial in its own process: compile, warm up, wait for ``go_file``, time each step."""
  started = time.perf_counter()
  setup, shape, teacher_vars, images, labels, pop_policies, hparams = _setup_and_inputs(settings, 1)
  holder = {
    "state": jax.tree.map(
      lambda x: x[0], pba.init_population(setup.model, setup.optimizer, shape, [index])
    )
  }
  step = jax.jit(pba.make_member_step(setup), donate_argnums=(0,))

  def run():
    holder["state"], metrics = step(
      holder["state"],
      {"image": images[0], "label": labels[0]},
      teacher_vars,
      {**hparams, "policy": pop_policies[0]},
      {},
    )
    return metrics

  for _ in range(1 + settings.warmup):
    jax.block_until_ready(run())
  setup_seconds = time.perf_counter() - started
  print("READY", flush=True)
  while not os.path.exists(go_file):  # all processes step at the same time
    time.sleep(0.01)
  begin = time.time()
  steps = [benchmark.timed_call(run) for _ in range(settings.repeats)]
  return {"setup_seconds": setup_seconds, "begin": begin, "end": time.time(), "steps": steps}


def in_process(settings: Settings) -> tuple[dict, dict]:
  """Round times (benchmark.Timing) and compile seconds of the vmapped, unrolled and
  sequential programs, taking turns."""
  population = settings.population
  setup, shape, teacher_vars, images, labels, pop_policies, hparams = _setup_and_inputs(
    settings, population
  )
  mesh = pba.make_population_mesh(population)
  population_step = pba.make_population_step(setup, mesh)
  unrolled_step = pba.make_population_step(setup, mesh, mode="unroll")
  member_step = jax.jit(pba.make_member_step(setup), donate_argnums=(0,))
  together = pba.init_population(setup.model, setup.optimizer, shape, list(range(population)))
  states = {
    "population": together,
    "unrolled": jax.tree.map(jnp.copy, together),
    "apart": [jax.tree.map(lambda x, i=i: x[i], together) for i in range(population)],
  }

  def run_population():
    states["population"], metrics = population_step(
      states["population"],
      {"image": images, "label": labels},
      teacher_vars,
      {**hparams, "policy": pop_policies},
      {},
    )
    return metrics

  def run_unrolled():
    states["unrolled"], metrics = unrolled_step(
      states["unrolled"],
      {"image": images, "label": labels},
      teacher_vars,
      {**hparams, "policy": pop_policies},
      {},
    )
    return metrics

  def run_sequential():
    apart = states["apart"]
    metrics = None
    for i in range(population):
      apart[i], metrics = member_step(
        apart[i],
        {"image": images[i], "label": labels[i]},
        teacher_vars,
        {**hparams, "policy": pop_policies[i]},
        {},
      )
    return metrics

  runs = {"population": run_population, "unrolled": run_unrolled, "sequential": run_sequential}
  compile_seconds = {name: benchmark.timed_call(fn) for name, fn in runs.items()}
  times = benchmark.time_alternating(runs, warmup=settings.warmup, repeats=settings.repeats)
  return times, compile_seconds


def in_processes(settings: Settings, command: list[str]) -> tuple[benchmark.Timing, float, float]:
  """P processes (``command`` plus ``--worker=i --go_file=...``) stepping at once: the round
  times, the slowest start-up + compile, and the wall time from launch to the last exit."""
  go_file = os.path.join(tempfile.mkdtemp(), "go")
  launched = time.perf_counter()
  workers = [
    subprocess.Popen(
      [*command, f"--worker={i}", f"--go_file={go_file}"],
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
    )
    for i in range(settings.population)
  ]
  for process in workers:  # wait until every process has compiled and warmed up
    assert process.stdout is not None  # stdout=PIPE
    while process.stdout.readline().strip() != "READY":
      if process.poll() is not None:
        raise RuntimeError("a trial process failed; rerun it alone with --worker=0 to see why.")
  open(go_file, "w").close()
  results = []
  for process in workers:
    out, _ = process.communicate(timeout=3600)
    results.append(
      json.loads(
        next(line for line in out.splitlines() if line.startswith("RESULT"))[len("RESULT ") :]
      )
    )
  wall = time.perf_counter() - launched
  # All processes step at once: round i of P trial-steps lasts as long as its slowest step.
  rounds = benchmark.from_samples(
    [max(r["steps"][i] for r in results) for i in range(settings.repeats)]
  )
  return rounds, max(r["setup_seconds"] for r in results), wall


LABELS = {
  "population": "one vmapped step (kd_jax.pba, mode vmap)",
  "unrolled": "P single steps unrolled in one program (mode unroll)",
  "sequential": "P single steps, one after another",
  "processes": "P processes, one trial each",
}


def report_lines(settings: Settings, times: dict, setup_text: dict) -> list[str]:
  population, batch = settings.population, settings.batch
  shape = (settings.image_size, settings.image_size, settings.channels)
  device = jax.devices()[0]
  lines = [
    f"P = {population} trials of {settings.model}"
    + (f" distilled from {settings.teacher}" if settings.teacher else "")
    + f", batch {batch} per trial, {shape[0]}×{shape[1]}×{shape[2]} uint8 with "
    f"PBA policy augmentation; {jax.device_count()} {device.platform.upper()} device(s),"
    f" {os.cpu_count()} CPU cores, JAX {jax.__version__}; "
    f"{benchmark.protocol(settings.warmup, settings.repeats)} (one round = one step of "
    "every trial; the processes: their own rounds, run afterwards). Rates and ratios "
    "are of medians.",
    "",
    "| how the P trials run | round (ms) | trial-steps/s | images/s | "
    "population speed ÷ this | start-up + compile (s) |",
    "|---|---|---|---|---|---|",
  ]
  base = times["population"].median
  for name, label in LABELS.items():
    seconds = times[name].median
    lines.append(
      f"| {label} | {times[name].ms()} | {population / seconds:.1f} | "
      f"{population * batch / seconds:.0f} | {seconds / base:.2f} | "
      f"{setup_text[name]} |"
    )
  return lines


def main(argv: Sequence[str]) -> None:
  del argv
  settings = Settings(
    _POPULATION.value,
    _MODEL.value,
    _TEACHER.value,
    _BATCH.value,
    _IMAGE_SIZE.value,
    _CHANNELS.value,
    _REPEATS.value,
    _WARMUP.value,
  )
  if _WORKER.value >= 0:
    print("RESULT " + json.dumps(worker(settings, _WORKER.value, _GO_FILE.value)), flush=True)
    return
  times, compile_seconds = in_process(settings)
  command = [
    sys.executable,
    "-m",
    "kd_jax.experiments.bench_population",
    *reporting.script_arguments("bench_population", exclude=(*INTERNAL_FLAGS, "out")),
  ]
  times["processes"], setup_seconds, wall = in_processes(settings, command)
  setup_text = {name: f"{seconds:.1f}" for name, seconds in compile_seconds.items()}
  setup_text["processes"] = f"{setup_seconds:.1f} (each; {wall:.0f} s wall in all)"
  reporting.finish_report(
    report_lines(settings, times, setup_text),
    "bench_population",
    _OUT.value,
    exclude=INTERNAL_FLAGS,
  )


if __name__ == "__main__":
  app.run(main)
