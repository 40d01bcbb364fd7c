"""Files a run writes whole (summaries, stage records, set-aside notes): written to a
temporary name, flushed to disk and renamed, so a signal, a kill or a full disk in the
middle leaves the previous version or none, never half a file."""

from __future__ import annotations

import json
import os
from typing import Any


def write_text_atomically(path: str, text: str) -> None:
  """Replaces ``path`` with ``text`` in one rename (the temporary file is removed if the
  write fails)."""
  temporary = f"{path}.tmp{os.getpid()}"
  try:
    with open(temporary, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_json_atomically(path: str, value: Any, indent: int | None = 1) -> None:
  """``value`` as JSON at ``path``, replaced in one rename."""
  write_text_atomically(path, json.dumps(value, indent=indent))
