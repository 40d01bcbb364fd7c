"""Grid sweeps of config values over seeds, with a mean ± std table.

  python -m kd_jax.experiments.sweep --config=kd_jax/experiments/configs/digits.py:kd \
      --config.method=continuation_kd --sweep=continuation.margin=0.0,0.3,1.0,3.0,10.0 \
      --seeds=0,1,2,3,4 '--teacher_pattern=runs/demo5/teacher_seed{seed}' \
      --workdir=runs/sweeps/margin_sum --out=results/sweep_continuation_margin_digits.md

(expected: results/sweep_continuation_margin_digits.md; every results/sweep_*.md ends with
its own command.)

Every combination of the --sweep values (several --sweep flags make a grid) runs once per
seed with the teacher of that seed; finished runs are read back, not retrained. Or, for
recipes that differ in several keys, one row per --setting ("label: key=value; key=value"),
as results/strong_view_recipes_digits.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import flags
from ml_collections import config_flags

from kd_jax.experiments import launch, reporting, shared

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Base config (file.py:arg).", lock_config=True
)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "key=v1,v2,... (values parsed as Python).")
_SETTING = flags.DEFINE_multi_string(
  "setting", [], "'label: key=value; key=value': one row (instead of --sweep's grid)."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_TEACHER = flags.DEFINE_string("teacher_pattern", "", "Teacher run dir, with {seed}.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/sweep", "Where the runs go.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")
flags.mark_flags_as_required(["config"])


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  axes = []
  for spec in _SWEEP.value:
    key, _, values = spec.partition("=")
    axes.append((key, [shared.parse_value(v) for v in values.split(",")]))
  seeds = [int(s) for s in _SEEDS.value]
  base = _CONFIG.value
  if _SETTING.value and axes:
    raise ValueError("give --sweep (a grid) or --setting (named rows), not both.")
  if _SETTING.value:
    settings = [shared.parse_setting(spec) for spec in _SETTING.value]
    rows = shared.run_settings(base, settings, seeds, _TEACHER.value, _WORKDIR.value)
  else:
    rows = shared.run_grid(base, axes, seeds, _TEACHER.value, _WORKDIR.value)

  lines = [
    f"Base: {base.method} on {base.dataset}, {base.model}; seeds "
    f"{', '.join(map(str, seeds))} (mean ± std).",
    "",
    "| setting | top-1 last (%) | top-1 best (%) | agreement (%) | KL(T ‖ S) |",
    "|---|---|---|---|---|",
  ]
  for label, summaries, _ in rows:
    agreement = (
      reporting.mean_std([s["last_agreement"] for s in summaries])
      if "last_agreement" in summaries[0]
      else "—"
    )
    kl = (
      f"{np.mean([s['last_kl_teacher_student'] for s in summaries]):.3f}"
      if "last_kl_teacher_student" in summaries[0]
      else "—"
    )
    lines.append(
      f"| {label} | {reporting.mean_std([s['last_top1'] for s in summaries])} | "
      f"{reporting.mean_std([s['best_top1'] for s in summaries])} | {agreement} | {kl} |"
    )
  reporting.finish_report(lines, "sweep", _OUT.value, None)


if __name__ == "__main__":
  launch.run_app(main)
