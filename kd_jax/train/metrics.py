"""Run metrics: JSONL and TensorBoard logs, log lines, evaluation summaries, a table and a plot.

Every row goes to ``<workdir>/metrics.jsonl`` (one JSON object per line; append-only, so
read it with ``read_rows``, which applies the markers a resumed run appends) and to
TensorBoard event files in ``<workdir>/tensorboard``. One unit, one naming in every row:

- every row has ``step`` (global steps done), ``split`` and ``epoch`` (counted from 1);
- a name means the same thing in every row, measured on the row's ``split``; a ``test`` row
  also carries its epoch's training means, prefixed ``train_``;
- top-1 accuracy is ``top1``, in percent (0–100), like ``teacher_top1`` and ``agreement``;
  losses, KL and the learning rate are plain numbers.

``split: "train"`` rows, every ``log_every_steps`` steps and at epoch ends and checkpoints:
``loss`` and ``top1`` (means over the steps since the previous train row), ``lr`` and the
method's schedule values (T, φ, ψ, ...). ``split: "test"`` rows, one per epoch (the same dict
is the evaluation history kept in checkpoints): ``train_loss``, ``train_top1`` (the epoch's
means), then the test set's ``top1``, ``loss`` (cross-entropy) and, with a teacher,
``agreement``, ``kl_teacher_student`` and ``teacher_top1``; regression reports ``pearson``,
``spearman`` (×100) and ``loss`` (MSE) instead of ``top1``.

The final summary reports top-1 at the last *and* at the best epoch, because papers differ on
which they print (RepDistiller reports the best, the methods here the last).
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


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
  return {
    # (statistic, p-value) pairs; the statistic first
    "pearson": 100.0 * float(np.asarray(stats.pearsonr(predictions, labels))[0]),
    "spearman": 100.0 * float(np.asarray(stats.spearmanr(predictions, labels))[0]),
    "loss": sums["loss"] / max(sums["count"], 1.0),
  }


RESUMED = "resumed"  # the split of the marker row a resumed run appends


class MetricWriter:
  """Appends metric rows to ``metrics.jsonl`` and TensorBoard. Only process 0 writes.

  The JSONL file is append-only: each row is flushed and fsynced as it is written, and a
  resumed run never rewrites the file. It appends a marker row ``{"step": s, "split":
  "resumed"}`` instead: the rows before it with a step past ``s`` were written by the
  interrupted run and are superseded by the ones after it (``read_rows`` applies this).
  A last line cut off by a kill mid-write is removed, with a warning naming the file.
  TensorBoard is told to hide the superseded events (``purge_step``).
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    self._file = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    has_rows = _repair_torn_tail(self.jsonl_path)
    self._file = open(self.jsonl_path, "a")
    if has_rows:
      self._append({"step": int(resume_step), "split": RESUMED})
    tensorboard_dir = os.path.join(workdir, "tensorboard")
    tensorboardx = optional_module("tensorboardX", f"TensorBoard events in {tensorboard_dir}")
    if tensorboardx is None:
      return

    # Events past the restored step are hidden (purged) in TensorBoard, as in the JSONL.
    purge = (
      int(resume_step) + 1
      if os.path.isdir(tensorboard_dir) and os.listdir(tensorboard_dir)
      else None
    )
    self._tensorboard = tensorboardx.SummaryWriter(tensorboard_dir, purge_step=purge)

  def _append(self, row: dict) -> None:
    assert self._file is not None  # enabled writers have a file
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())

  def write(self, step: int, split: str, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **{k: _plain(v) for k, v in values.items()}}
    self._append(row)
    for name, value in values.items():
      if self._tensorboard is not None and isinstance(value, (int, float, np.floating, np.integer)):
        self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None


_REPORTED_MISSING: set[str] = set()


def optional_module(name: str, purpose: str) -> Any:
  """The module ``name``, or None when it is not installed, said once per process in one log
  line: TensorBoard logs, plots and the progress bar are the ``experiments`` extra's, and a
  core install trains without them."""
  try:
    return importlib.import_module(name)
  except ImportError:
    if name not in _REPORTED_MISSING:
      _REPORTED_MISSING.add(name)
      logger.info(
        "%s is not installed: no %s (pip install 'kd_jax[experiments]' adds it).", name, purpose
      )
    return None


def _repair_torn_tail(path: str) -> bool:
  """Cuts a last line that has no newline (a row torn by a kill mid-write) off ``path``,
  with a warning naming the file; returns whether any complete row remains."""
  if not os.path.exists(path):
    return False
  with open(path, "rb+") as f:
    data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
      try:  # a whole row that lost only its newline (an editor) is kept
        complete = isinstance(json.loads(data[end:]), dict)
      except ValueError:
        complete = False
      if complete:
        f.write(b"\n")
        return True
      logging.getLogger(__name__).warning(
        "%s: its last line was cut off (%d bytes, a run stopped mid-write); removed it.",
        path,
        len(data) - end,
      )
      f.truncate(end)
  return end > 0


def read_rows(workdir_or_path: str) -> list[dict[str, Any]]:
  """The rows of a run's ``metrics.jsonl`` as an uninterrupted run would have written them:
  each ``resumed`` marker drops the rows before it whose step is past the marker's, and the
  markers themselves are left out. A line that is not JSON (a torn row) is skipped with a
  warning naming the file and the line."""
  path = workdir_or_path
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  rows: list[dict[str, Any]] = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError:
        logging.getLogger(__name__).warning("%s, line %d: not a JSON row; skipped.", path, number)
        continue
      if row.get("split") == RESUMED:
        rows = [kept for kept in rows if kept["step"] <= row["step"]]
      else:
        rows.append(row)
  return rows


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
  summary = {
    "epochs": last["epoch"],
    f"last_{score}": last[score],
    f"best_{score}": best[score],
    "best_epoch": best["epoch"],
    "last_loss": last["loss"],
  }
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


# Values ×100 (percentages; Pearson and Spearman ×100): printed with two decimals.
_HUNDREDTHS = {
  "top1",
  "train_top1",
  "teacher_top1",
  "agreement",
  "pearson",
  "spearman",
  "best",
  "median",
}


def format_values(values: dict[str, Any]) -> str:
  """``"top1 88.33, loss 0.4123"``: the scalar values of ``values`` (per-member lists of a
  population are left to metrics.jsonl)."""
  parts = []
  for name, value in values.items():
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
      continue
    parts.append(f"{name} {value:.2f}" if name in _HUNDREDTHS else f"{name} {value:.4g}")
  return ", ".join(parts)


class Pace:
  """Steps/s, examples/s and the ETA of the loop's log lines.

  ``lap(step)`` measures the interval since the previous lap, or since the loop started
  (or resumed): the wall-clock time of everything the loop did on the host in it — fetching
  batches, dispatching steps, the device time of those steps (a lap follows the
  ``device_get`` of their metrics, which waits for the last of them), compilation in the first
  interval, and a checkpoint save begun in it. An evaluation is not in any interval: the
  loop laps before it, reports its seconds on the epoch line and calls ``restart()`` after
  it. The ETA is the remaining steps at the mean pace since the first lap (every evaluation
  and save since then included, the first interval's compilation not), or at the first
  interval's pace on the first lap.
  """

  def __init__(self, step: int, total_steps: int, examples_per_step: int = 0):
    self.total_steps = total_steps
    self.examples_per_step = examples_per_step
    self._interval = (step, time.perf_counter())
    self._first: tuple[int, float] | None = None

  def lap(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    start_step, start_time = self._interval
    steps_per_second = (step - start_step) / max(now - start_time, 1e-9)
    if self._first is None or step <= self._first[0]:
      self._first = self._first or (step, now)
      pace = steps_per_second
    else:
      pace = (step - self._first[0]) / max(now - self._first[1], 1e-9)
    self._interval = (step, now)
    values = {
      "steps_per_second": steps_per_second,
      "eta_seconds": (self.total_steps - step) / pace if pace > 0 else math.inf,
    }
    if self.examples_per_step:
      values["examples_per_second"] = steps_per_second * self.examples_per_step
    return values

  def restart(self) -> None:
    """Starts the next interval now (after an evaluation, which its line reports)."""
    self._interval = (self._interval[0], time.perf_counter())


def log_line(
  step: int,
  total_steps: int,
  epoch: int,
  num_epochs: int,
  train: dict[str, Any],
  pace: dict[str, float],
  example_name: str = "examples",
  epoch_end: bool = False,
  test: dict[str, Any] | None = None,
  eval_seconds: float | None = None,
) -> str:
  """One log line of the loop: ``step 40/66, epoch 2/3: loss 0.5123, top1 83.59, lr 0.05 |
  31.2 steps/s, 1997 images/s, ETA 0:00:01``; at an epoch end ``epoch 2/3 done, step 44/66:
  train loss ...`` followed by ``| test top1 88.33, loss 0.4123 (eval 0.21 s)``."""
  if epoch_end:
    head = f"epoch {epoch}/{num_epochs} done, step {step}/{total_steps}: train "
  else:
    head = f"step {step}/{total_steps}, epoch {epoch}/{num_epochs}: "
  eta = pace["eta_seconds"]
  speed = [f"{_rate(pace['steps_per_second'])} steps/s"]
  if "examples_per_second" in pace:
    speed.append(f"{_rate(pace['examples_per_second'])} {example_name}/s")
  speed.append(
    "ETA " + (str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?")
  )
  line = f"{head}{format_values(train)} | {', '.join(speed)}"
  if test:
    line += f" | test {format_values(test)}"
  if eval_seconds is not None:
    line += f" (eval {eval_seconds:.2f} s)"
  return line


def _rate(value: float) -> str:
  """Three significant digits, without an exponent: 0.0123, 4.56, 78.9, 1234."""
  return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def history_figure(history: Sequence[dict[str, Any]], score: str = "top1", title: str = ""):
  """A matplotlib Figure of the per-epoch history: train and test loss, the test score
  (top-1, with a teacher also the teacher's) and, with a teacher, agreement, against
  integer epochs. Built without pyplot, so it changes no backend."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  has_teacher = any("agreement" in row for row in history)
  panels = 3 if has_teacher else 2
  fig = Figure(figsize=(4.2 * panels, 3.4))
  axes = fig.subplots(1, panels)
  epochs = [row["epoch"] for row in history]
  axes[0].plot(epochs, [row["train_loss"] for row in history], label="train (objective)")
  if any("loss" in row for row in history):
    axes[0].plot(
      epochs,
      [row.get("loss", math.nan) for row in history],
      "--",
      label="test (cross-entropy)" if score == "top1" else "test (squared error)",
    )
  axes[0].legend()
  axes[0].set(xlabel="epoch", ylabel="loss")
  axes[1].plot(epochs, [row[score] for row in history], label="student")
  if has_teacher:
    axes[1].plot(epochs, [row["teacher_top1"] for row in history], "--", label="teacher")
    axes[1].legend()
    axes[2].plot(epochs, [row["agreement"] for row in history])
    axes[2].set(xlabel="epoch", ylabel="teacher-student top-1 agreement (%)")
  axes[1].set(xlabel="epoch", ylabel="test top-1 (%)" if score == "top1" else f"test {score}")
  for axis in axes:
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def plot_history(
  history: Sequence[dict[str, Any]], path: str, score: str = "top1", title: str = ""
):
  """Saves history_figure as a PNG at ``path``; returns the figure."""
  fig = history_figure(history, score, title)
  temporary = f"{path}.tmp{os.getpid()}"
  fig.savefig(temporary, dpi=110, format="png")
  os.replace(temporary, path)  # a signal mid-write leaves the old plot, never half of one
  return fig
