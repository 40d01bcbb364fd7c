"""The main job: teacher, student from scratch and KD students on an embedded dataset.

  python -m kd_jax.experiments.demo [--dataset=digits|mnist5k] [--workdir=runs/demo] [--seeds=0,1,2]
      [--results_dir=results] [--num_epochs=N]

For each seed: trains the teacher, the student with cross-entropy only, and students
distilled from that seed's teacher with each method: vanilla KD; KD with a teacher-labelled
mixup, CutMix or CutMix-pick view; backward-pass KD; Annealing-KD and Continuation-KD.
Every setting is in the dataset's config: kd_jax/experiments/configs/digits.py (cnn_medium →
cnn_tiny on the 8x8 digits) or kd_jax/experiments/configs/mnist.py (resnet8 → mlp_tiny on mnist5k).
Prints a table of mean ± std test top-1 (last and best epoch), teacher–student agreement and
KL on the test set, writes it with a bar chart to --workdir (and --results_dir), and is
idempotent: finished runs are read back from their checkpoints, not retrained.

The defaults (3 seeds, runs/demo) are the quick start's. The results files are 5 seeds, each
dataset in its own workdir (a workdir holds one dataset's runs; another dataset there is a
changed config and stops):
  python -m kd_jax.experiments.demo --dataset=digits --workdir=runs/demo5 --seeds=0,1,2,3,4 \
      --results_dir=results      # expected: results/demo_digits.md
  python -m kd_jax.experiments.demo --dataset=mnist5k --workdir=runs/demo_mnist5k \
      --seeds=0,1,2,3,4 --results_dir=results      # expected: results/demo_mnist5k.md
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import flags

from kd_jax.data import load_dataset
from kd_jax.experiments import launch, reporting, shared
from kd_jax.train import loop, setup, sharding
from kd_jax.train import preprocess as preprocess_lib
from kd_jax.train import step as step_lib

DATASETS = shared.DATASETS
_DATASET = flags.DEFINE_enum("dataset", "digits", list(DATASETS), "Embedded dataset.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the runs and results go.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each trains every row.")
_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", None, "Override the epochs of every run.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Also write the results here.")

# (row name, config role, method or None for the role's own). Each method adds its row;
# the students distil from the teacher of the same seed.
ROWS = (
  ("teacher", "teacher", None),
  ("student from scratch", "scratch", None),
  ("KD student", "kd", "kd"),
  ("KD + mixup view", "kd", "kd_mixup"),
  ("KD + CutMix view", "kd", "kd_cutmix"),
  ("KD + CutMix-pick view", "kd", "kd_cutmix_pick"),
  ("backward-pass KD", "kd", "backward_kd"),
  ("Annealing-KD", "kd", "annealing_kd"),
  ("Continuation-KD", "kd", "continuation_kd"),
)


def _config(
  role: str,
  method: str | None,
  seed: int,
  teacher_dir: str | None,
  num_epochs: int | None = None,
  dataset: str = "digits",
):
  config = DATASETS[dataset][0].get_config(role)
  config.method = method or config.method
  config.seed = seed
  config.progress_bar = False
  if num_epochs:
    config.num_epochs = num_epochs
  if teacher_dir:
    config.teacher_workdir = teacher_dir
  return config


def agreement_with(
  student_dir: str, teacher_dir: str, config: ml_collections.ConfigDict
) -> dict[str, float]:
  """Test-set agreement and KL between any finished student run and a teacher run."""
  test_data = load_dataset(config.dataset, "test")
  mesh = sharding.make_data_mesh()
  dtype = setup.dtype_of(config.dtype)
  student_model, student_variables = setup.load_trained(student_dir, test_data, mesh, dtype)
  teacher_model, teacher_variables = setup.load_trained(teacher_dir, test_data, mesh, dtype)
  preprocess = preprocess_lib.image_preprocess(test_data.mean, test_data.std, compute_dtype=dtype)
  eval_step = step_lib.jit_eval(
    step_lib.make_eval_step(student_model, preprocess, teacher_model), mesh
  )
  return loop.evaluate(
    eval_step, student_variables, test_data, config.eval_batch_size, mesh, teacher_variables
  )


def run_demo(
  workdir: str, seeds: list[int], num_epochs: int | None = None, dataset: str = "digits"
) -> dict:
  """Trains (or reads back) every row for every seed under ``workdir``; their summaries."""
  results = {name: [] for name, _, _ in ROWS}
  for seed in seeds:
    for name, role, method in ROWS:
      run_dir = os.path.join(workdir, f"{method or role}_seed{seed}")
      teacher_dir = os.path.join(workdir, f"teacher_seed{seed}")
      config = _config(
        role, method, seed, teacher_dir if role == "kd" else None, num_epochs, dataset
      )
      summary = loop.train_and_evaluate(config, run_dir)
      summary["seconds"] = summary["train_seconds"]  # measured by the run, across resumes
      if "last_agreement" in summary:  # distilled: measured against its teacher already
        summary["agreement"] = summary["last_agreement"]
        summary["kl_teacher_student"] = summary["last_kl_teacher_student"]
      elif role != "teacher":
        measured = agreement_with(run_dir, teacher_dir, config)
        summary["agreement"] = measured["agreement"]
        summary["kl_teacher_student"] = measured["kl_teacher_student"]
      results[name].append(summary)
      print(
        f"seed {seed} {name}: last top-1 {summary['last_top1']:.2f} ({summary['seconds']:.1f} s)",
        flush=True,
      )
  return results


def results_table(results: dict, seeds: list[int], dataset: str = "digits") -> str:
  module, description = DATASETS[dataset]
  teacher, student = module.TEACHER_MODEL, module.STUDENT_MODEL
  lines = [
    f"{description}, teacher {teacher}, student {student}, seeds "
    f"{', '.join(map(str, seeds))}; mean ± std over seeds.",
    "",
    "| run | test top-1, last epoch (%) | test top-1, best epoch (%) | "
    "agreement with teacher (%) | KL(teacher ‖ student) | training seconds per run |",
    "|---|---|---|---|---|---|",
  ]
  for name, rows in results.items():
    agreement = (
      reporting.mean_std([r["agreement"] for r in rows]) if "agreement" in rows[0] else "—"
    )
    kl = (
      reporting.mean_std([r["kl_teacher_student"] for r in rows])
      if "kl_teacher_student" in rows[0]
      else "—"
    )
    lines.append(
      f"| {name} | {reporting.mean_std([r['last_top1'] for r in rows])} | "
      f"{reporting.mean_std([r['best_top1'] for r in rows])} | {agreement} | {kl} | "
      f"{np.mean([r['seconds'] for r in rows]):.1f} |"
    )
  return "\n".join(lines)


def plot_results(results: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(results)
  means = [np.mean([r["last_top1"] for r in results[n]]) for n in names]
  stds = [
    np.std([r["last_top1"] for r in results[n]], ddof=1) if len(results[n]) > 1 else 0
    for n in names
  ]
  fig, ax = plt.subplots(figsize=(7, 3.2))
  ax.barh(names, means, xerr=stds, color="tab:blue", alpha=0.8)
  ax.set_xlim(min(means) - 5, 100)
  ax.set_xlabel("test top-1, last epoch (%)")
  ax.invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_results(folder: str, report: str, results: dict, dataset: str = "digits") -> None:
  """demo_{dataset}.{md,json,png} in ``folder``."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f"demo_{dataset}.md"), "w") as f:
    f.write(report)
  with open(os.path.join(folder, f"demo_{dataset}.json"), "w") as f:
    json.dump(results, f, indent=1)
  plot_results(results, os.path.join(folder, f"demo_{dataset}.png"))


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  seeds = [int(s) for s in _SEEDS.value]
  start = time.time()
  results = run_demo(_WORKDIR.value, seeds, _NUM_EPOCHS.value, _DATASET.value)
  table = results_table(results, seeds, _DATASET.value)
  report = (
    f"{table}\n\nMachine: {shared.machine_description()}. Whole demo: "
    f"{time.time() - start:.0f} s.\nCommand: {reporting.command_line('demo')}\n"
  )
  print("\n" + report)
  for folder in filter(None, (_WORKDIR.value, _RESULTS_DIR.value)):
    write_results(folder, report, results, _DATASET.value)


if __name__ == "__main__":
  launch.run_app(main)
