"""What the experiment scripts share to report numbers: mean ± std and the written report.

Every report ends with the command that produced it, so each number in results/ can be
rerun.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float] | np.ndarray, digits: int = 2) -> str:
  """``"mean ± std"`` with the sample standard deviation (0 for a single value)."""
  array = np.asarray(values, np.float64)
  spread = array.std(ddof=1) if len(array) > 1 else 0.0
  return f"{array.mean():.{digits}f} ± {spread:.{digits}f}"


SCRIPTS = "kd_jax.experiments"  # the installed scripts' package
CLONE_SCRIPTS = "experiments"  # the clone-only ones' (they import torch; see experiments/)


def script_arguments(module: str, exclude: Sequence[str] = (), package: str = SCRIPTS) -> list[str]:
  """Every flag the script ``<package>.<module>`` defines, with the value it ran with.

  Defaults are written out too, so the command reruns the same job even after a default
  changes; flags without a value (None) and the ``exclude`` ones (internal flags) are left
  out. Config overrides (``--config.key=value``) are kept as given on the command line.
  """
  from absl import flags
  from ml_collections.config_flags import config_flags

  values = flags.FLAGS
  by_module = values.flags_by_module_dict()
  names = [f"{package}.{module}"]
  if sys.argv and os.path.splitext(os.path.basename(sys.argv[0]))[0] == module:
    names.append(sys.argv[0])  # python -m registers the script's flags under its path
  defined = [flag for name in names for flag in by_module.get(name, [])]
  arguments = []
  for flag in defined:
    if flag.name in exclude or flag.value is None:
      continue
    if config_flags.is_config_flag(flag):
      arguments.append(flag.serialize())
      prefix = f"--{flag.name}."
      arguments += [a for a in sys.argv[1:] if a.startswith(prefix)]
    elif flag.boolean:
      arguments.append(f"--{flag.name}={str(bool(flag.value)).lower()}")
    else:
      arguments += [a for a in flag.serialize().split("\n") if a]  # an empty list: none
  return arguments


def command_line(
  module: str,
  arguments: Sequence[str] | None = None,
  exclude: Sequence[str] = (),
  package: str = SCRIPTS,
) -> str:
  """The shell command that reruns the script ``<package>.<module>``: every flag of it,
  defaults included. ``package`` is SCRIPTS, or CLONE_SCRIPTS for the scripts that only a
  clone has."""
  if package not in (SCRIPTS, CLONE_SCRIPTS):
    raise ValueError(f"unknown script package {package!r}; valid: {SCRIPTS}, {CLONE_SCRIPTS}.")
  if arguments is None:
    arguments = script_arguments(module, exclude, package)
  return " ".join(["python -m", f"{package}.{module}", *map(shlex.quote, arguments)])


def finish_report(
  lines: list[str],
  module: str,
  out_path: str | None,
  arguments: Sequence[str] | None = None,
  exclude: Sequence[str] = (),
  before: Sequence[str] = (),
  package: str = SCRIPTS,
) -> str:
  """Appends the command, prints the report and writes it to ``out_path`` if given.

  ``before``: commands that must run first (earlier stages), each on its own ``Command:``
  line ahead of this script's.
  """
  commands = [*before, command_line(module, arguments, exclude, package)]
  report = "\n".join([*lines, "", *(f"Command: {c}" for c in commands)]) + "\n"
  print(report)
  if out_path:
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
      f.write(report)
  return report
