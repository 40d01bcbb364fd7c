"""Run metrics: JSONL and TensorBoard logs, evaluation summaries, a table and a plot.

Every row goes to ``<workdir>/metrics.jsonl`` (one JSON object per line, with ``step`` and
``split``) and to TensorBoard event files in ``<workdir>/tensorboard``. The final summary
reports top-1 at the last *and* at the best epoch, because papers differ on which they
print (RepDistiller reports the best, the methods here the last).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  """Turns summed eval counts into top-1 (%), mean loss, agreement (%) and mean KL."""
  count = max(sums["count"], 1.0)
  result = {"top1": 100.0 * sums["correct"] / count, "loss": sums["loss"] / count}
  if "agree" in sums:
    result["agreement"] = 100.0 * sums["agree"] / count
    result["kl_teacher_student"] = sums["kl"] / count
    result["teacher_top1"] = 100.0 * sums["teacher_correct"] / count
  return result


def finalize_regression(sums: dict[str, float], predictions, labels) -> dict[str, float]:
  """Pearson and Spearman correlations (×100, GLUE's STS-B scores) and the mean squared
  error, from the summed squared error and the gathered predictions."""
  from scipy import stats
  predictions, labels = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
  if predictions.shape != labels.shape:
    raise ValueError(f"{predictions.shape[0]} predictions for {labels.shape[0]} labels.")
  return {"pearson": 100.0 * float(stats.pearsonr(predictions, labels)[0]),
          "spearman": 100.0 * float(stats.spearmanr(predictions, labels)[0]),
          "loss": sums["loss"] / max(sums["count"], 1.0)}


class MetricWriter:
  """Appends metric rows to JSONL and TensorBoard. Only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._drop_rows_after(resume_step)
    from tensorboardX import SummaryWriter  # imported here: only writers need it
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _drop_rows_after(self, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint; drop their old rows."""
    if not os.path.exists(self.jsonl_path):
      return
    with open(self.jsonl_path) as f:
      rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(self.jsonl_path, "w") as f:
      f.writelines(rows)

  def write(self, step: int, split: str, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **{k: _plain(v) for k, v in values.items()}}
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for name, value in values.items():
      if isinstance(value, (int, float, np.floating, np.integer)):
        self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def _plain(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return value


def summarize(history: Sequence[dict[str, Any]], score: str = "top1") -> dict[str, Any]:
  """Last- and best-epoch numbers from the per-epoch evaluation history; the best epoch is
  the one with the highest ``score`` ("top1", or "pearson" for regression)."""
  if not history:
    return {}
  last = history[-1]
  best = max(history, key=lambda row: row[score])
  summary = {"epochs": last["epoch"], f"last_{score}": last[score],
             f"best_{score}": best[score], "best_epoch": best["epoch"],
             "last_loss": last["loss"]}
  for key in ("spearman", "agreement", "kl_teacher_student", "teacher_top1"):
    if key in last:
      summary[f"last_{key}"] = last[key]
  return summary


def summary_table(summary: dict[str, Any]) -> str:
  """A two-column Markdown table of the summary."""
  lines = ["| metric | value |", "|---|---|"]
  for key, value in summary.items():
    lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
  return "\n".join(lines)


def plot_history(history: Sequence[dict[str, Any]], path: str, score: str = "top1",
                 title: str = "") -> None:
  """PNG with train loss, the test score (top-1) and (with a teacher) agreement against
  epochs."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  has_teacher = any("agreement" in row for row in history)
  panels = 3 if has_teacher else 2
  fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
  epochs = [row["epoch"] for row in history]
  axes[0].plot(epochs, [row["train_loss"] for row in history])
  axes[0].set(xlabel="epoch", ylabel="train loss")
  axes[1].plot(epochs, [row[score] for row in history], label="student")
  if has_teacher:
    axes[1].plot(epochs, [row["teacher_top1"] for row in history], "--", label="teacher")
    axes[1].legend()
    axes[2].plot(epochs, [row["agreement"] for row in history])
    axes[2].set(xlabel="epoch", ylabel="teacher-student top-1 agreement (%)")
  axes[1].set(xlabel="epoch", ylabel="test top-1 (%)" if score == "top1" else f"test {score}")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
