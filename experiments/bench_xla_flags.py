"""XLA:CPU flags against the CPU gap to PyTorch: one run that tries every flag setting itself.

  python -m experiments.bench_xla_flags [--xla_flags=,--xla_cpu_use_onednn=true,...
      --runs=2 --repeats=10 --out=results/bench_vs_torch_xla_flags_cpu.md]

XLA reads ``XLA_FLAGS`` once, when the backend starts, so each setting needs its own
process: for each of ``--runs`` rounds, every setting in turn runs
``python -m experiments.bench_vs_torch --suites=images --methods=kd --torch_compile=false``
(plus the image flags below) with that ``XLA_FLAGS``, and its plain-KD table row is read
back: the JAX step and the PyTorch eager step of the same process. Settings alternate round
by round, so that drifts in machine load hit all of them alike. Reported: every process's
times in the order run, and per setting the median (min–max) over its processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from kd_jax.experiments import reporting

# bench_vs_torch is a clone-only script (it imports torch): its processes start in the root.
_CLONE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_SETTINGS = ("", "--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true",
                    "--xla_cpu_enable_fast_math=true")
_SETTINGS = flags.DEFINE_list("xla_flags", list(DEFAULT_SETTINGS),
                              "XLA_FLAGS settings to try, comma-separated ('' = none); use "
                              "spaces inside one setting for several flags.")
_RUNS = flags.DEFINE_integer("runs", 2, "Rounds; each runs one process per setting.")
_TEACHER = flags.DEFINE_string("teacher", "resnet20", "Image teacher.")
_STUDENT = flags.DEFINE_string("student", "resnet8", "Image student.")
_BATCH = flags.DEFINE_integer("batch", 64, "Image batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Square image side (3 channels).")
_CLASSES = flags.DEFINE_integer("classes", 100, "Number of image classes.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed rounds inside each process.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Warm-up rounds inside each process.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")


def step_ms(report: str, label: str, side: str) -> float:
  """The median step time (ms) of one row of a bench_vs_torch report."""
  prefix = f"| {label} | {side} | "
  row = next(line for line in report.splitlines() if line.startswith(prefix))
  return float(row[len(prefix):].split()[0])


def run_once(xla_flags: str, bench_arguments: list[str]) -> dict:
  """One bench_vs_torch process under ``XLA_FLAGS=xla_flags``: its JAX and PyTorch eager
  plain-KD step (median ms)."""
  with tempfile.TemporaryDirectory() as folder:
    out = os.path.join(folder, "bench.md")
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    result = subprocess.run([sys.executable, "-m", "experiments.bench_vs_torch",
                             *bench_arguments, f"--out={out}"], env=env, cwd=_CLONE_ROOT,
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
      raise RuntimeError(f"XLA_FLAGS={xla_flags!r}: bench_vs_torch failed:\n"
                         f"{result.stderr[-2000:]}")
    with open(out) as f:
      report = f.read()
  return {"flags": xla_flags, "jax_ms": step_ms(report, "kd", "JAX"),
          "torch_ms": step_ms(report, "kd", "PyTorch eager")}


def bench_arguments(teacher="resnet20", student="resnet8", batch=64, image_size=32,
                    classes=100, repeats=10, warmup=3) -> list[str]:
  return ["--suites=images", "--methods=kd", "--torch_compile=false", f"--teacher={teacher}",
          f"--student={student}", f"--batch={batch}", f"--image_size={image_size}",
          f"--classes={classes}", f"--repeats={repeats}", f"--warmup={warmup}"]


def measure(settings, runs: int, arguments: list[str]) -> list[dict]:
  """Every setting once per round, in turn; the processes' results in the order run."""
  results = []
  for round_index in range(runs):
    for xla_flags in settings:
      results.append(run_once(xla_flags, arguments))
      r = results[-1]
      print(f"round {round_index} XLA_FLAGS={xla_flags or '(none)'}: JAX {r['jax_ms']:.1f} ms, "
            f"PyTorch eager {r['torch_ms']:.1f} ms", flush=True)
  return results


def _spread(values, digits=1) -> str:
  return (f"{np.median(values):.{digits}f} ({np.min(values):.{digits}f}–"
          f"{np.max(values):.{digits}f})")


def report_lines(results: list[dict], settings, runs: int, arguments: list[str]) -> list[str]:
  name = lambda flags_: flags_ or "(none)"
  lines = [f"XLA:CPU flags tried against the CPU gap to PyTorch: plain KD step, one "
           f"bench_vs_torch process per setting and round ({' '.join(arguments)}), "
           f"{runs} rounds, the settings taking turns in each; {os.cpu_count()} CPU cores. "
           "Each process reports the median of its own alternating rounds; 'JAX speed ÷ "
           "PyTorch eager' compares the two sides of the same process.", "",
           "| XLA_FLAGS | JAX step (ms) | PyTorch eager step (ms) | JAX speed ÷ PyTorch eager |",
           "|---|---|---|---|"]
  for settings_ in settings:
    mine = [r for r in results if r["flags"] == settings_]
    lines.append(f"| {name(settings_)} | {_spread([r['jax_ms'] for r in mine])} | "
                 f"{_spread([r['torch_ms'] for r in mine])} | "
                 f"{_spread([r['torch_ms'] / r['jax_ms'] for r in mine], 2)} |")
  lines += ["", f"Median (min–max) over the {runs} processes of each setting. Every process, "
            "in the order run:", "",
            "| run | XLA_FLAGS | JAX step (ms) | PyTorch eager step (ms) | "
            "JAX speed ÷ PyTorch eager |", "|---|---|---|---|---|"]
  for index, r in enumerate(results):
    lines.append(f"| {index + 1} | {name(r['flags'])} | {r['jax_ms']:.1f} | "
                 f"{r['torch_ms']:.1f} | {r['torch_ms'] / r['jax_ms']:.2f} |")
  return lines


def main(argv):
  del argv
  settings = [s.strip() for s in _SETTINGS.value]
  arguments = bench_arguments(_TEACHER.value, _STUDENT.value, _BATCH.value, _IMAGE_SIZE.value,
                              _CLASSES.value, _REPEATS.value, _WARMUP.value)
  results = measure(settings, _RUNS.value, arguments)
  reporting.finish_report(report_lines(results, settings, _RUNS.value, arguments),
                          "bench_xla_flags", _OUT.value, package=reporting.CLONE_SCRIPTS)


if __name__ == "__main__":
  app.run(main)
