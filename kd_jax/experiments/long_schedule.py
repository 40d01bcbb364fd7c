"""Wang et al.'s motivating observation: with longer training, KD keeps improving while
cross-entropy does not, and more so with stronger augmentation.

  python -m kd_jax.experiments.long_schedule --dataset=digits --seeds=0,1,2,3,4 --factors=1,2,4 \
      --teacher_pattern=runs/demo5/teacher_seed{seed} --workdir=runs/long_digits \
      --out=results/long_schedule_digits.md

For each epoch factor k (``config.epoch_factor``: the epochs and the lr milestones times k,
as the paper's 240 → 960 epochs) and each seed, trains the dataset config's student with
cross-entropy only, with KD, and with KD + CutMix-pick (teacher entropy), and reports the
test top-1 at the last and the best epoch (mean ± std over seeds) with a plot of top-1
against k. Finished runs are read back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import flags

from kd_jax.experiments import launch, reporting, shared

# (label, method): the paper's three rows.
ROWS = (("CE (no teacher)", "ce"), ("KD", "kd"), ("KD + CutMix-pick", "kd_cutmix_pick"))

_DATASET = flags.DEFINE_enum("dataset", "digits", list(shared.DATASETS), "Embedded dataset.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (student and teacher).")
_FACTORS = flags.DEFINE_list("factors", ["1", "2", "4"], "Epoch factors k.")
_TEACHER = flags.DEFINE_string(
  "teacher_pattern", None, "Teacher run dir, with {seed}.", required=True
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/long_schedule", "Where the runs go.")
_NUM_EPOCHS = flags.DEFINE_integer(
  "num_epochs",
  None,
  "Override the epochs at k = 1 (the lr milestones must fit: scale them with it).",
)
_OUT = flags.DEFINE_string("out", None, "Write the Markdown report here (and a .png plot).")


def base_config(dataset: str, num_epochs: int | None = None) -> ml_collections.ConfigDict:
  """The dataset's KD config; ``num_epochs`` shortens it, scaling its lr milestones."""
  base = shared.DATASETS[dataset][0].get_config("kd")
  if num_epochs:
    scale = num_epochs / base.num_epochs
    base.optimizer.lr_milestones = tuple(
      max(1, round(m * scale)) for m in base.optimizer.lr_milestones
    )
    base.num_epochs = num_epochs
  return base


def run_long_schedule(
  dataset: str,
  seeds: list[int],
  factors: list[int],
  teacher_pattern: str,
  workdir: str,
  num_epochs: int | None = None,
) -> dict:
  """{label: {k: [summary per seed]}} for every row of ROWS and factor k."""
  base = base_config(dataset, num_epochs)
  results = {}
  for label, method in ROWS:
    grid = shared.run_grid(
      base, [("method", [method]), ("epoch_factor", factors)], seeds, teacher_pattern, workdir
    )
    results[label] = {k: summaries for k, (_, summaries, _) in zip(factors, grid)}
  return results


def report_lines(
  results: dict, seeds: list[int], factors: list[int], dataset: str, num_epochs: int | None = None
) -> list[str]:
  module, description = shared.DATASETS[dataset]
  epochs = base_config(dataset, num_epochs).num_epochs
  header = " | ".join(f"k = {k} ({k * epochs} epochs)" for k in factors)
  lines = [
    f"{description}; teacher {module.TEACHER_MODEL}, student {module.STUDENT_MODEL}; "
    f"seeds {', '.join(map(str, seeds))}, mean ± std.",
    "",
  ]
  for which in ("last", "best"):
    lines += [
      f"Test top-1 (%), {which} epoch:",
      "",
      f"| row | {header} | k = {factors[-1]} minus k = {factors[0]} |",
      "|---|" + "---|" * (len(factors) + 1),
    ]
    for label, by_factor in results.items():
      values = {k: [s[f"{which}_top1"] for s in by_factor[k]] for k in factors}
      gain = np.asarray(values[factors[-1]]) - np.asarray(values[factors[0]])
      lines.append(
        f"| {label} | "
        + " | ".join(reporting.mean_std(values[k]) for k in factors)
        + f" | {reporting.mean_std(gain)} |"
      )
    lines.append("")
  return lines


def plot_long_schedule(results: dict, factors: list[int], path: str, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.2, 3.6))
  for label, by_factor in results.items():
    values = [np.asarray([s["last_top1"] for s in by_factor[k]]) for k in factors]
    ax.errorbar(
      factors,
      [v.mean() for v in values],
      yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values],
      marker="o",
      capsize=3,
      label=label,
    )
  ax.set_xscale("log", base=2)
  ax.set_xticks(factors, [str(k) for k in factors])
  ax.set_xlabel("epoch factor k")
  ax.set_ylabel("test top-1, last epoch (%)")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  seeds = [int(s) for s in _SEEDS.value]
  factors = [int(k) for k in _FACTORS.value]
  results = run_long_schedule(
    _DATASET.value, seeds, factors, _TEACHER.value, _WORKDIR.value, _NUM_EPOCHS.value
  )
  lines = report_lines(results, seeds, factors, _DATASET.value, _NUM_EPOCHS.value)
  lines += [f"Machine: {shared.machine_description()}."]
  if _OUT.value:
    plot = os.path.splitext(_OUT.value)[0] + ".png"
    plot_long_schedule(results, factors, plot, f"Longer training on {_DATASET.value}")
    lines += ["", f"Plot: {os.path.basename(plot)}."]
  reporting.finish_report(lines, "long_schedule", _OUT.value)


if __name__ == "__main__":
  launch.run_app(main)
