"""Grid sweeps of config values over seeds, with a mean ± std table.

  python -m experiments.sweep --config=experiments/configs/digits.py:kd \
      --config.method=continuation_kd --sweep=continuation.margin=0,0.01,0.1,1 \
      --seeds=0,1,2 --teacher_pattern=runs/demo/teacher_seed{seed} \
      --workdir=runs/sweeps/margin --out=results/sweep_margin_digits.md

Every combination of the --sweep values (several --sweep flags make a grid) runs once per
seed with the teacher of that seed; finished runs are read back, not retrained.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import launch, reporting
from kd_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base config (file.py:arg).",
                                          lock_config=True)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "key=v1,v2,... (values parsed as Python).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_TEACHER = flags.DEFINE_string("teacher_pattern", "", "Teacher run dir, with {seed}.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/sweep", "Where the runs go.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")
flags.mark_flags_as_required(["config"])


def _parse(text: str):
  import ast
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _set(config, dotted_key: str, value) -> None:
  *parents, leaf = dotted_key.split(".")
  target = config
  for parent in parents:
    target = target[parent]
  if leaf not in target:
    raise ValueError(f"unknown config key {dotted_key!r}.")
  target[leaf] = value


def main(argv):
  del argv
  launch.configure_logging()
  axes = []
  for spec in _SWEEP.value:
    key, _, values = spec.partition("=")
    axes.append((key, [_parse(v) for v in values.split(",")]))
  seeds = [int(s) for s in _SEEDS.value]
  base = _CONFIG.value
  rows = []
  for combination in itertools.product(*[values for _, values in axes]):
    label = ", ".join(f"{key}={value}" for (key, _), value in zip(axes, combination)) or "base"
    summaries = []
    for seed in seeds:
      config = base.copy_and_resolve_references()
      config.unlock()
      for (key, _), value in zip(axes, combination):
        _set(config, key, value)
      config.seed = seed
      config.progress_bar = False
      if _TEACHER.value:
        config.teacher_workdir = _TEACHER.value.format(seed=seed)
      run_dir = os.path.join(_WORKDIR.value, label.replace(", ", "_").replace("=", "-"),
                             f"seed{seed}")
      summaries.append(loop.train_and_evaluate(config, run_dir))
      print(f"{label} seed {seed}: last top-1 {summaries[-1]['last_top1']:.2f}", flush=True)
    rows.append((label, summaries))

  lines = [f"Base: {base.method} on {base.dataset}, {base.model}; seeds "
           f"{', '.join(map(str, seeds))} (mean ± std).", "",
           "| setting | top-1 last (%) | top-1 best (%) | agreement (%) | KL(T ‖ S) |",
           "|---|---|---|---|---|"]
  for label, summaries in rows:
    agreement = (reporting.mean_std([s["last_agreement"] for s in summaries])
                 if "last_agreement" in summaries[0] else "—")
    kl = (f"{np.mean([s['last_kl_teacher_student'] for s in summaries]):.3f}"
          if "last_kl_teacher_student" in summaries[0] else "—")
    lines.append(f"| {label} | {reporting.mean_std([s['last_top1'] for s in summaries])} | "
                 f"{reporting.mean_std([s['best_top1'] for s in summaries])} | {agreement} | {kl} |")
  reporting.finish_report(lines, "sweep", _OUT.value, None)


if __name__ == "__main__":
  app.run(main)
