"""kd_jax/ passes the linter, the formatter's check and the type checker (issue 28, item 7).

Each tool runs as CI runs it, from the repository root with the configuration in
pyproject.toml ([tool.ruff], [tool.pyright]), using the executables installed next to this
interpreter (the ``lint`` extra). A failure shows the tool's own report.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _executable(name: str) -> str:
  path = shutil.which(name, path=BIN)
  if path is None:
    pytest.fail(
      f"{name} is not installed next to {sys.executable}: pip install -e '.[lint]'",
      pytrace=False,
    )
  return path


def _run(name: str, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
  # No network: pyright's wrapper would otherwise ask PyPI whether it is the newest release.
  env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
  start = time.perf_counter()
  result = subprocess.run(
    [_executable(name), *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return result, time.perf_counter() - start


def _check(result: subprocess.CompletedProcess, command: str) -> None:
  assert result.returncode == 0, (
    f"`{command}` exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
  )


def test_ruff_check():
  result, _ = _run("ruff", "check", "kd_jax")
  _check(result, "ruff check kd_jax")


def test_ruff_format():
  result, _ = _run("ruff", "format", "--check", "kd_jax")
  _check(result, "ruff format --check kd_jax")


def test_pyright():
  """Standard mode on kd_jax/ ([tool.pyright] in pyproject.toml), 0 errors."""
  result, seconds = _run("pyright")
  _check(result, "pyright")
  print(f"pyright: {seconds:.1f} s; {result.stdout.strip().splitlines()[-1]}")
