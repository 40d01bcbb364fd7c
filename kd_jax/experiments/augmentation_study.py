"""Wang et al.'s study: does the teacher's "T. stddev" under an augmentation scheme track the
student's test loss? Nine schemes, several seeds, three correlations and a scatter plot.

  python -m kd_jax.experiments.augmentation_study --dataset=digits --seeds=0,1,2,3,4 \
      --teacher_pattern=runs/demo5/teacher_seed{seed} --workdir=runs/study_digits \
      --out=results/augmentation_study_digits.md

For every scheme of SCHEMES and every seed, a student is distilled with KD on x plus the KD
term on x' = scheme(x), labelled by the teacher (Wang et al.'s ``--lw_mix [1,0,1]
--t_output_as_target_for_input_mix``; x itself gets the config's standard crop/flip, as the
official data loader). Its last-epoch test cross-entropy is the student's test loss. The
scheme's T. stddev (kd_jax.diagnostics.teacher_stddev) is measured as the official
``check_ce_var`` does: the teacher's probabilities of x and x' over ``--batches`` training
batches, averaged over blocks of ``--blocks_of`` batches (official: 5), the sample std over
blocks of those means, averaged over classes. CutMix-pick by student entropy scores with the
trained student of the same run (the official script loads a trained student too).

Reported: per scheme mean ± std over seeds of both quantities, last- and best-epoch top-1;
Pearson, Spearman and Kendall correlations over the nine schemes of the seed means, and the
mean ± std of the per-seed correlations. ``--per_image=false`` (the default) draws each
view's randomness once per batch, as the official code's torchvision transforms do on a
batched tensor; ``--per_image=true`` draws per image. Finished runs are read back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import flags
from jax.sharding import Mesh

from kd_jax import diagnostics
from kd_jax.data import ImageDataset, load_dataset
from kd_jax.experiments import launch, reporting, shared
from kd_jax.train import setup, sharding

# name: (label, view, overrides of its config block), in the paper's order.
SCHEMES = {
  "identity": ("identity", "identity", {}),
  "flip": ("flip", "flip", {}),
  "crop_flip": ("crop+flip", "crop_flip", {}),
  "cutout": ("Cutout", "cutout", {}),
  "autoaugment": ("AutoAugment", "autoaugment", {}),
  "mixup": ("mixup", "mixup", {}),
  "cutmix": ("CutMix", "cutmix", {}),
  "cutmix_pick_s": ("CutMix-pick (S-entropy)", "cutmix_pick", {"score": "student_entropy"}),
  "cutmix_pick_t": ("CutMix-pick (T-entropy)", "cutmix_pick", {"score": "teacher_entropy"}),
}
PER_IMAGE_VIEWS = ("flip", "crop_flip", "cutout", "autoaugment")

_DATASET = flags.DEFINE_enum("dataset", "digits", list(shared.DATASETS), "Embedded dataset.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (student and teacher).")
_SCHEMES = flags.DEFINE_list(
  "schemes",
  list(SCHEMES),
  "Schemes to run (names of SCHEMES; the correlations need at least three).",
)
_TEACHER = flags.DEFINE_string(
  "teacher_pattern", None, "Teacher run dir, with {seed}.", required=True
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/study", "Where the student runs go.")
_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", None, "Override the students' epochs.")
_PER_IMAGE = flags.DEFINE_bool(
  "per_image",
  False,
  "Per-image draws in flip, crop_flip, "
  "Cutout and AutoAugment (False: per batch, as the official code).",
)
_BATCHES = flags.DEFINE_integer("batches", 200, "Training batches walked for T. stddev.")
_BLOCKS_OF = flags.DEFINE_integer("blocks_of", 5, "Batches per block of T. stddev.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown report here (and a .png plot).")


def scheme_axes(view: str, overrides: dict, per_image: bool) -> list[tuple[str, list[Any]]]:
  """The config keys that select a scheme, as sweep axes of one value each."""
  axes: list[tuple[str, list[Any]]] = [("view.name", [view])]
  if view in PER_IMAGE_VIEWS:
    axes.append((f"{view}.per_image", [per_image]))
  axes += [(f"{view}.{key}", [value]) for key, value in overrides.items()]
  return axes


def correlations(
  x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> dict[str, float]:
  """Pearson, Spearman and Kendall (tau-b) correlations of two sequences."""
  from scipy import stats

  return {
    "Pearson": _statistic(stats.pearsonr(x, y)),
    "Spearman": _statistic(stats.spearmanr(x, y)),
    "Kendall": _statistic(stats.kendalltau(x, y)),
  }


def _statistic(result: Any) -> float:
  """The statistic of a scipy.stats result, a (statistic, p-value) tuple (scipy's own types
  leave its element types unknown)."""
  return float(result[0])


def measure_stddev(
  config: ml_collections.ConfigDict,
  view: str,
  run_dir: str,
  data: ImageDataset,
  mesh: Mesh,
  *,
  batches: int,
  blocks_of: int,
) -> float:
  """T. stddev of the teacher of ``config`` under ``view`` as that run configured it."""
  teacher, teacher_variables = setup.load_trained(config.teacher_workdir, data, mesh)
  student = student_variables = None
  if view == "cutmix_pick" and config.cutmix_pick.score != "teacher_entropy":
    student, student_variables = setup.load_trained(run_dir, data, mesh)
  probabilities, per_batch = shared.teacher_probabilities(
    view,
    teacher,
    teacher_variables,
    data,
    config[view],
    batch_size=config.batch_size,
    batches=batches,
    crop_pad=config.augment.crop_pad,
    flip=config.augment.flip,
    seed=config.seed,
    student=student,
    student_variables=student_variables,
    cutout_size=config.augment.cutout_size,
    autoaugment=config.augment.autoaugment,
  )
  return float(diagnostics.teacher_stddev(probabilities, per_batch * blocks_of))


def run_study(
  dataset: str,
  seeds: list[int],
  teacher_pattern: str,
  workdir: str,
  *,
  schemes: Sequence[str] = tuple(SCHEMES),
  per_image: bool = False,
  num_epochs: int | None = None,
  batches: int = 200,
  blocks_of: int = 5,
) -> list[dict]:
  """Per scheme: its label and per-seed test losses, top-1 (last, best) and T. stddev."""
  unknown = sorted(set(schemes) - set(SCHEMES))
  if unknown or len(schemes) < 3:
    raise ValueError(
      f"schemes: need three or more of {', '.join(SCHEMES)}; got {', '.join(schemes)}."
    )
  module = shared.DATASETS[dataset][0]
  base = module.get_config("kd")
  if num_epochs:
    base.num_epochs = num_epochs
  data = load_dataset(base.dataset, "train")
  mesh = sharding.make_data_mesh()
  results = []
  for label, view, overrides in (SCHEMES[name] for name in schemes):
    axes = scheme_axes(view, overrides, per_image)
    ((_, summaries, run_dirs),) = shared.run_grid(base, axes, seeds, teacher_pattern, workdir)
    stddevs = []
    for seed, run_dir in zip(seeds, run_dirs):
      config = base.copy_and_resolve_references()
      for key, (value,) in axes:
        shared.set_key(config, key, value)
      config.seed = seed
      config.teacher_workdir = teacher_pattern.format(seed=seed)
      stddevs.append(
        measure_stddev(config, view, run_dir, data, mesh, batches=batches, blocks_of=blocks_of)
      )
    results.append(
      {
        "scheme": label,
        "view": view,
        "test_loss": [s["last_loss"] for s in summaries],
        "last_top1": [s["last_top1"] for s in summaries],
        "best_top1": [s["best_top1"] for s in summaries],
        "t_stddev": stddevs,
      }
    )
    print(
      f"{label}: test loss {reporting.mean_std(results[-1]['test_loss'], 4)}, "
      f"T. stddev {reporting.mean_std(stddevs, 5)}",
      flush=True,
    )
  return results


def report_lines(results: list[dict], seeds: list[int], dataset: str, per_image: bool) -> list[str]:
  module, description = shared.DATASETS[dataset]
  lines = [
    f"{description}; teacher {module.TEACHER_MODEL}, student {module.STUDENT_MODEL} "
    f"distilled with KD on x and on x' = scheme(x) (teacher-labelled); seeds "
    f"{', '.join(map(str, seeds))}, mean ± std; view draws "
    f"{'per image' if per_image else 'per batch (as the official code)'}.",
    "",
    "| scheme | T. stddev | student test loss (last epoch) | top-1 last (%) | top-1 best (%) |",
    "|---|---|---|---|---|",
  ]
  for row in results:
    lines.append(
      f"| {row['scheme']} | {reporting.mean_std(row['t_stddev'], 5)} | "
      f"{reporting.mean_std(row['test_loss'], 4)} | "
      f"{reporting.mean_std(row['last_top1'])} | "
      f"{reporting.mean_std(row['best_top1'])} |"
    )
  stddev = np.asarray([r["t_stddev"] for r in results])  # [scheme, seed]
  loss = np.asarray([r["test_loss"] for r in results])
  of_means = correlations(stddev.mean(1), loss.mean(1))
  per_seed = [correlations(stddev[:, i], loss[:, i]) for i in range(len(seeds))]
  lines += [
    "",
    f"Correlation of T. stddev with the student's test loss over the {len(results)} schemes:",
    "",
    "| | Pearson | Spearman | Kendall |",
    "|---|---|---|---|",
    "| of the seed means | " + " | ".join(f"{of_means[k]:.3f}" for k in of_means) + " |",
    "| per seed, mean ± std | "
    + " | ".join(reporting.mean_std([c[k] for c in per_seed], 3) for k in of_means)
    + " |",
  ]
  if len(results) > 3:  # how much one scheme carries: each left out in turn
    left_out = [
      correlations(np.delete(stddev.mean(1), i), np.delete(loss.mean(1), i))
      for i in range(len(results))
    ]
    lines.append(
      "| of the seed means, any one scheme left out: min – max | "
      + " | ".join(
        f"{min(c[k] for c in left_out):.3f} – {max(c[k] for c in left_out):.3f}" for k in of_means
      )
      + " |"
    )
  return lines


def plot_study(results: list[dict], path: str, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for row in results:
    x, y = np.asarray(row["t_stddev"]), np.asarray(row["test_loss"])
    ax.errorbar(
      x.mean(),
      y.mean(),
      xerr=x.std(ddof=1) if len(x) > 1 else 0,
      yerr=y.std(ddof=1) if len(y) > 1 else 0,
      fmt="o",
      capsize=3,
    )
    ax.annotate(
      row["scheme"], (x.mean(), y.mean()), textcoords="offset points", xytext=(4, 4), fontsize=7
    )
  ax.set_xlabel("teacher T. stddev")
  ax.set_ylabel("student test loss (last epoch)")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  seeds = [int(s) for s in _SEEDS.value]
  results = run_study(
    _DATASET.value,
    seeds,
    _TEACHER.value,
    _WORKDIR.value,
    schemes=_SCHEMES.value,
    per_image=_PER_IMAGE.value,
    num_epochs=_NUM_EPOCHS.value,
    batches=_BATCHES.value,
    blocks_of=_BLOCKS_OF.value,
  )
  lines = report_lines(results, seeds, _DATASET.value, _PER_IMAGE.value)
  lines += ["", f"Machine: {shared.machine_description()}."]
  if _OUT.value:
    plot = os.path.splitext(_OUT.value)[0] + ".png"
    plot_study(results, plot, f"Wang et al.'s nine schemes on {_DATASET.value}")
    lines += ["", f"Plot: {os.path.basename(plot)}."]
  reporting.finish_report(lines, "augmentation_study", _OUT.value)


if __name__ == "__main__":
  launch.run_app(main)
