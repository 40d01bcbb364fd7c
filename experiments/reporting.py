"""What the experiment scripts share to report numbers: mean ± std and the written report.

Every report ends with the command that produced it, so each number in results/ can be
rerun.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float], digits: int = 2) -> str:
  """``"mean ± std"`` with the sample standard deviation (0 for a single value)."""
  values = np.asarray(values, np.float64)
  spread = values.std(ddof=1) if len(values) > 1 else 0.0
  return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"


def command_line(module: str, arguments: Sequence[str] | None = None) -> str:
  """The command that reruns this script (its own arguments by default)."""
  arguments = sys.argv[1:] if arguments is None else arguments
  return " ".join(["python -m", f"experiments.{module}", *arguments])


def finish_report(lines: list[str], module: str, out_path: str | None,
                  arguments: Sequence[str] | None = None) -> str:
  """Appends the command, prints the report and writes it to ``out_path`` if given."""
  report = "\n".join([*lines, "", f"Command: {command_line(module, arguments)}"]) + "\n"
  print(report)
  if out_path:
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
      f.write(report)
  return report
