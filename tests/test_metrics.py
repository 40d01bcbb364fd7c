"""What a run reports while and after it trains: the log lines (also without a progress
bar), metrics.jsonl in one unit and one naming, and the curves' axes."""

import json
import logging
import math
import os
import re

import numpy as np
import pytest

from kd_jax.train import loop, metrics
from tests.conftest import tiny_config

_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_PACE = (rf"\| (?P<steps_per_s>{_NUMBER}) steps/s, (?P<images_per_s>{_NUMBER}) images/s, "
         r"ETA (?P<eta>\d+:\d\d:\d\d)")
STEP_LINE = re.compile(
    rf"^step (?P<step>\d+)/44, epoch (?P<epoch>\d)/2: loss (?P<loss>{_NUMBER}), "
    rf"top1 (?P<top1>{_NUMBER}), lr (?P<lr>{_NUMBER}) {_PACE}$")
EPOCH_LINE = re.compile(
    rf"^epoch (?P<epoch>\d)/2 done, step (?P<step>\d+)/44: train loss (?P<loss>{_NUMBER}), "
    rf"top1 (?P<top1>{_NUMBER}), lr (?P<lr>{_NUMBER}) {_PACE} \| test top1 "
    rf"(?P<test_top1>{_NUMBER}), loss (?P<test_loss>{_NUMBER}) \(eval {_NUMBER} s\)$")


class _Lines(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Two epochs of 22 steps on the digits, a log line every 5 steps, no progress bar."""
  workdir = str(tmp_path_factory.mktemp("metrics_run"))
  handler, logger = _Lines(), logging.getLogger(loop.__name__)
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    summary = loop.train_and_evaluate(tiny_config(num_epochs=2, log_every_steps=5), workdir)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  rows = metrics.read_rows(workdir)
  return summary, rows, handler.lines


def test_log_lines_without_progress_bar_every_n_steps_and_every_epoch(run):
  summary, rows, lines = run
  step_lines = [m for m in map(STEP_LINE.match, lines) if m]
  epoch_lines = [m for m in map(EPOCH_LINE.match, lines) if m]
  assert len(step_lines) + len(epoch_lines) == len(lines), lines  # nothing else, all parse
  # Every 5 steps except at the epoch ends (22, 44), which have their own line.
  assert [int(m["step"]) for m in step_lines] == [5, 10, 15, 20, 25, 30, 35, 40]
  assert [int(m["epoch"]) for m in step_lines] == [1, 1, 1, 1, 2, 2, 2, 2]
  assert [(int(m["epoch"]), int(m["step"])) for m in epoch_lines] == [(1, 22), (2, 44)]
  for m in step_lines + epoch_lines:
    steps_per_s, images_per_s = float(m["steps_per_s"]), float(m["images_per_s"])
    assert steps_per_s > 0 and images_per_s == pytest.approx(64 * steps_per_s, rel=0.02)
    assert 0 <= float(m["top1"]) <= 100 and float(m["lr"]) == pytest.approx(0.05)
  assert epoch_lines[-1]["eta"] == "0:00:00"
  # The epoch lines carry the test values the summary reports, and the epoch's train means.
  tests = [r for r in rows if r["split"] == "test"]
  for m, row in zip(epoch_lines, tests):
    assert float(m["test_top1"]) == pytest.approx(row["top1"], abs=0.0051)
    assert float(m["test_loss"]) == pytest.approx(row["loss"], rel=1e-3)
    assert float(m["top1"]) == pytest.approx(row["train_top1"], abs=0.0051)
    assert float(m["loss"]) == pytest.approx(row["train_loss"], rel=1e-3)
  assert float(epoch_lines[-1]["test_top1"]) == pytest.approx(summary["last_top1"], abs=0.0051)
  # A step line reports the steps since the previous line: the jsonl row of its step.
  train = {r["step"]: r for r in rows if r["split"] == "train"}
  for m in step_lines:
    assert float(m["top1"]) == pytest.approx(train[int(m["step"])]["top1"], abs=0.0051)


def test_jsonl_rows_use_one_unit_and_one_naming(run):
  summary, rows, _ = run
  train = [r for r in rows if r["split"] == "train"]
  tests = [r for r in rows if r["split"] == "test"]
  assert all({"step", "split", "epoch"} <= set(r) for r in rows)
  assert [r["step"] for r in train] == [5, 10, 15, 20, 22, 25, 30, 35, 40, 44]
  assert not any("accuracy" in name for r in rows for name in r)  # top-1 is "top1"
  assert {"loss", "top1", "lr"} <= set(train[0]) and all(0 <= r["top1"] <= 100 for r in train)
  # Percentages in both kinds of rows: an epoch's train_top1 is the step-weighted mean of
  # its train rows' top1 (fractions would be 100 times smaller).
  for epoch, test_row in enumerate(tests, 1):
    previous = (epoch - 1) * 22
    weighted = []
    for r in (r for r in train if r["epoch"] == epoch):
      weighted.append((r["step"] - previous, r["top1"], r["loss"]))
      previous = r["step"]
    counts, top1, loss = map(np.asarray, zip(*weighted))
    assert counts.sum() == 22
    assert test_row["train_top1"] == pytest.approx(np.sum(counts * top1) / 22, rel=1e-6)
    assert test_row["train_loss"] == pytest.approx(np.sum(counts * loss) / 22, rel=1e-6)
    # Train top-1 in %: a multiple of 100/64 per step (a batch has 64 images).
    assert test_row["train_top1"] * 64 * 22 / 100 == pytest.approx(
        round(test_row["train_top1"] * 64 * 22 / 100), abs=1e-3)
  # summary.json keeps its names and numbers: the test rows' top1 (%).
  assert summary["last_top1"] == tests[-1]["top1"] and 0 <= summary["last_top1"] <= 100
  assert summary["best_top1"] == max(r["top1"] for r in tests)
  assert summary["last_loss"] == tests[-1]["loss"]


def _is_integer(values):
  return all(float(v).is_integer() for v in values)


def test_curves_have_integer_epochs_and_a_test_loss(run):
  _, rows, _ = run
  history = [r for r in rows if r["split"] == "test"]
  fig = metrics.history_figure(history)
  loss_axis, top1_axis = fig.axes
  for axis in fig.axes:
    ticks = axis.get_xticks()
    assert len(ticks) >= 2 and _is_integer(ticks), ticks
  train, test = loss_axis.get_lines()
  assert list(train.get_xdata()) == [1, 2] == list(test.get_xdata())
  assert list(train.get_ydata()) == [r["train_loss"] for r in history]
  assert list(test.get_ydata()) == [r["loss"] for r in history]
  assert test.get_label().startswith("test") and train.get_label().startswith("train")
  assert list(top1_axis.get_lines()[0].get_ydata()) == [r["top1"] for r in history]


def test_curves_with_a_teacher_over_many_epochs(tmp_path):
  history = [{"epoch": e, "train_loss": 2.0 / e, "loss": 1.5 / e, "top1": 50.0 + e,
              "teacher_top1": 70.0, "agreement": 60.0 + e} for e in range(1, 8)]
  path = str(tmp_path / "curves.png")
  fig = metrics.plot_history(history, path)
  assert os.path.getsize(path) > 0 and len(fig.axes) == 3
  for axis in fig.axes:
    assert _is_integer(axis.get_xticks())
  assert [line.get_label() for line in fig.axes[1].get_lines()] == ["student", "teacher"]
  assert list(fig.axes[2].get_lines()[0].get_ydata()) == [60.0 + e for e in range(1, 8)]


def test_log_line_and_pace():
  pace = metrics.Pace(step=10, total_steps=110, examples_per_step=32)
  first = pace.lap(20)
  assert first["examples_per_second"] == pytest.approx(32 * first["steps_per_second"])
  assert first["eta_seconds"] == pytest.approx(90 / first["steps_per_second"])
  line = metrics.log_line(44, 66, 2, 3, {"loss": 0.51234, "top1": 83.594, "lr": 0.05},
                          {"steps_per_second": 31.24, "examples_per_second": 1999.4,
                           "eta_seconds": 65.4}, "images", epoch_end=True,
                          test={"top1": 88.333, "loss": 0.41234, "member_top1": [1.0, 2.0]},
                          eval_seconds=0.214)
  assert line == ("epoch 2/3 done, step 44/66: train loss 0.5123, top1 83.59, lr 0.05 | "
                  "31.2 steps/s, 1999 images/s, ETA 0:01:05 | test top1 88.33, loss 0.4123 "
                  "(eval 0.21 s)")
  line = metrics.log_line(5, 66, 1, 3, {"loss": 1.0}, {"steps_per_second": 0.0123,
                                                      "eta_seconds": math.inf})
  assert line == "step 5/66, epoch 1/3: loss 1 | 0.0123 steps/s, ETA ?"
