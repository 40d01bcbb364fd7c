"""A PBA population of P trials: one vmapped step against P single steps and P processes.

  python -m experiments.bench_population [--population=8 --model=resnet18_narrow_w2a2
      --teacher=resnet18_narrow --batch=50 --image_size=8 --repeats=10
      --out=results/bench_population_cpu.md]

Each trial's step is role-wise KD's stage-2 step (policy augmentation, frozen teacher on the
augmented images, student update). Three ways to run the P trials:
  population   one compiled step, ``vmap`` over the trials (kd_jax.pba)
  sequential   the single-trial step compiled once and called P times, one after another
  processes    P separate Python processes, each running its trial's steps (the official
               PBA design, one Ray process per trial), started together
plus ``unroll``: the P single-trial steps placed side by side in one compiled program. The
in-process ways alternate round by round in this process after a warm-up; the processes run
afterwards on the same machine. Reported: trial-steps per second (images/s = that × batch),
the speed ratio to the population step, and for the processes the wall time including their
start-up and compilation.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import reporting
from kd_jax import models, pba

_POPULATION = flags.DEFINE_integer("population", 8, "Trials P.")
_MODEL = flags.DEFINE_string("model", "resnet18_narrow_w2a2", "Student model of every trial.")
_TEACHER = flags.DEFINE_string("teacher", "resnet18_narrow", "Frozen teacher ('' for none).")
_BATCH = flags.DEFINE_integer("batch", 50, "Batch per trial.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 8, "Square image side.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Image channels.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed rounds.")
_WORKER = flags.DEFINE_integer("worker", -1, "Internal: run as trial process N.")
_GO_FILE = flags.DEFINE_string("go_file", "", "Internal: workers start timing when it exists.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")
CLASSES = 10


def _setup_and_inputs(population):
  shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, _CHANNELS.value)
  teacher = models.create_model(_TEACHER.value, CLASSES) if _TEACHER.value else None
  teacher_vars = (models.init_variables(teacher, jax.random.PRNGKey(99), shape)
                  if teacher else {})
  setup = pba.MemberSetup(models.create_model(_MODEL.value, CLASSES),
                          optax.sgd(0.01, momentum=0.9), (0.5,) * shape[-1],
                          (0.25,) * shape[-1], (128,) * shape[-1], pad=1, flip=False,
                          cutout_size=2, teacher_model=teacher)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (population, _BATCH.value, *shape), dtype=np.uint8)
  labels = rng.integers(0, CLASSES, (population, _BATCH.value)).astype(np.int32)
  pop_policies = jax.random.randint(jax.random.PRNGKey(1), (population, 30, 2), 0, 10)
  hparams = {"temperature": jnp.float32(4.0), "ce_weight": jnp.float32(0.1),
             "kd_weight": jnp.float32(0.9)}
  return setup, shape, teacher_vars, images, labels, pop_policies, hparams


def _worker(index):
  """One trial in its own process: compile, warm up, time the steps; print JSON."""
  started = time.perf_counter()
  setup, shape, teacher_vars, images, labels, pop_policies, hparams = _setup_and_inputs(1)
  state = jax.tree.map(lambda x: x[0], pba.init_population(setup.model, setup.optimizer, shape,
                                                           [index]))
  step = jax.jit(pba.make_member_step(setup), donate_argnums=(0,))
  for _ in range(2):
    state, metrics = step(state, pop_policies[0], images[0], labels[0], teacher_vars, hparams)
  jax.block_until_ready(metrics)
  setup_seconds = time.perf_counter() - started
  print("READY", flush=True)
  while not os.path.exists(_GO_FILE.value):  # all processes step at the same time
    time.sleep(0.01)
  begin = time.time()
  for _ in range(_REPEATS.value):
    state, metrics = step(state, pop_policies[0], images[0], labels[0], teacher_vars, hparams)
  jax.block_until_ready(metrics)
  print("RESULT " + json.dumps({"setup_seconds": setup_seconds, "begin": begin,
                                "end": time.time()}), flush=True)


def main(argv):
  del argv
  if _WORKER.value >= 0:
    _worker(_WORKER.value)
    return
  population = _POPULATION.value
  setup, shape, teacher_vars, images, labels, pop_policies, hparams = _setup_and_inputs(
      population)
  seeds = list(range(population))
  mesh = pba.make_population_mesh(population)
  population_step = pba.make_population_step(setup, mesh)
  unrolled_step = pba.make_population_step(setup, mesh, mode="unroll")
  member_step = jax.jit(pba.make_member_step(setup), donate_argnums=(0,))
  together = pba.init_population(setup.model, setup.optimizer, shape, seeds)
  apart = [jax.tree.map(lambda x, i=i: x[i], together) for i in range(population)]
  unrolled = jax.tree.map(jnp.copy, together)

  def run_population():
    nonlocal together
    together, metrics = population_step(together, pop_policies, images, labels, teacher_vars,
                                        hparams)
    jax.block_until_ready(metrics)

  def run_unrolled():
    nonlocal unrolled
    unrolled, metrics = unrolled_step(unrolled, pop_policies, images, labels, teacher_vars,
                                      hparams)
    jax.block_until_ready(metrics)

  def run_sequential():
    for i in range(population):
      apart[i], metrics = member_step(apart[i], pop_policies[i], images[i], labels[i],
                                      teacher_vars, hparams)
    jax.block_until_ready(metrics)

  compile_seconds = {}
  runs = (("population", run_population), ("unrolled", run_unrolled),
          ("sequential", run_sequential))
  for name, fn in runs:
    start = time.perf_counter()
    fn()
    compile_seconds[name] = time.perf_counter() - start
  for _ in range(2):
    for _, fn in runs:
      fn()
  times = {name: [] for name, _ in runs}
  for _ in range(_REPEATS.value):
    for name, fn in runs:
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  per_round = {k: statistics.median(v) for k, v in times.items()}

  command = [sys.executable, "-m", "experiments.bench_population"] + [
      a for a in sys.argv[1:] if not a.startswith("--out")]
  import tempfile
  go_file = os.path.join(tempfile.mkdtemp(), "go")
  launched = time.perf_counter()
  workers = [subprocess.Popen(command + [f"--worker={i}", f"--go_file={go_file}"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i in range(population)]
  for worker in workers:  # wait until every process has compiled and warmed up
    while worker.stdout.readline().strip() != "READY":
      if worker.poll() is not None:
        raise RuntimeError("a trial process failed; rerun it alone with --worker=0 to see why.")
  open(go_file, "w").close()
  results = []
  for worker in workers:
    out, _ = worker.communicate(timeout=3600)
    results.append(json.loads(next(l for l in out.splitlines()
                                   if l.startswith("RESULT"))[len("RESULT "):]))
  wall = time.perf_counter() - launched
  # All processes step at once: a round of P trial-steps takes the span from the first
  # start to the last finish, divided by the number of rounds.
  per_round["processes"] = (max(r["end"] for r in results)
                            - min(r["begin"] for r in results)) / _REPEATS.value

  device = jax.devices()[0]
  lines = [f"P = {population} trials of {_MODEL.value}"
           + (f" distilled from {_TEACHER.value}" if _TEACHER.value else "")
           + f", batch {_BATCH.value} per trial, {shape[0]}×{shape[1]}×{shape[2]} uint8 with "
           f"PBA policy augmentation; {jax.device_count()} {device.platform.upper()} device(s),"
           f" {os.cpu_count()} CPU cores, JAX {jax.__version__}; median of "
           f"{_REPEATS.value} rounds (one round = one step of every trial).", "",
           "| how the P trials run | round (ms) | trial-steps/s | images/s | "
           "population speed ÷ this | start-up + compile (s) |", "|---|---|---|---|---|---|"]
  for name, setup_text in (("population", f"{compile_seconds['population']:.1f}"),
                           ("unrolled", f"{compile_seconds['unrolled']:.1f}"),
                           ("sequential", f"{compile_seconds['sequential']:.1f}"),
                           ("processes", f"{max(r['setup_seconds'] for r in results):.1f} "
                                         f"(each; {wall:.0f} s wall in all)")):
    seconds = per_round[name]
    label = {"population": "one vmapped step (kd_jax.pba, mode vmap)",
             "unrolled": "P single steps unrolled in one program (mode unroll)",
             "sequential": "P single steps, one after another",
             "processes": "P processes, one trial each"}[name]
    lines.append(f"| {label} | {1000 * seconds:.1f} | {population / seconds:.1f} | "
                 f"{population * _BATCH.value / seconds:.0f} | "
                 f"{seconds / per_round['population']:.2f} | {setup_text} |")
  arguments = [f"--{f}={v}" for f, v in (
      ("population", population), ("model", _MODEL.value), ("teacher", _TEACHER.value),
      ("batch", _BATCH.value), ("image_size", _IMAGE_SIZE.value),
      ("channels", _CHANNELS.value), ("repeats", _REPEATS.value))] + (
          [f"--out={_OUT.value}"] if _OUT.value else [])
  reporting.finish_report(lines, "bench_population", _OUT.value, arguments)


if __name__ == "__main__":
  app.run(main)
