"""The documentation site: it builds with warnings as errors, its examples run, every public
name of the library is documented in it, and it includes every results file."""

import glob
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

DOCS = os.path.join(ROOT, "docs")
sys.path.insert(0, DOCS)
import public_api  # noqa: E402 (docs/public_api.py: what a module's public names are)

# The packages and modules of the API reference (docs/api.md's autosummary, which recurses
# into every submodule of a package).
API_ROOTS = (
  "kd_jax.losses",
  "kd_jax.augment",
  "kd_jax.backward",
  "kd_jax.continuation",
  "kd_jax.quant",
  "kd_jax.policies",
  "kd_jax.diagnostics",
  "kd_jax.validation",
  "kd_jax.methods",
  "kd_jax.models",
  "kd_jax.data",
  "kd_jax.train",
  "kd_jax.pba",
)


def _sphinx(builder, out, doctrees):
  """Runs one Sphinx builder in a subprocess (docs/conf.py sets its XLA flags before JAX
  starts) with warnings as errors; fails with the tail of its output."""
  command = [
    sys.executable,
    "-m",
    "sphinx",
    "-W",
    "--keep-going",
    "-q",
    "-b",
    builder,
    "-d",
    str(doctrees),
    DOCS,
    str(out),
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
  env.pop("XLA_FLAGS", None)  # docs/conf.py sets its own
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  output = result.stdout + result.stderr
  report = os.path.join(str(out), "output.txt")  # the doctest builder's summary
  if builder == "doctest" and os.path.exists(report):
    with open(report) as f:
      output += "\n" + f.read()
  assert result.returncode == 0, (
    f"sphinx-build -b {builder} failed ({result.returncode}):\n{output[-6000:]}"
  )
  return output


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  """The html site, built once; its doctrees are reused by the doctest build."""
  root = tmp_path_factory.mktemp("docs")
  _sphinx("html", root / "html", root / "doctrees")
  return root


def test_docs_build_without_warnings_and_their_examples_run(site):
  # html above: -W --keep-going (a warning anywhere, docstrings included, fails the build).
  # doctest: every {testcode} block of the pages (Linen, NNX, Equinox, pmap, jit with
  # shardings, shard_map, train_and_evaluate, each method family) and every >>> example
  # of the docstrings, against their {testoutput}.
  output = _sphinx("doctest", site / "doctest", site / "doctrees")
  summary = re.search(r"(\d+) tests\s+(\d+) failures in tests", output)
  assert summary and int(summary.group(1)) > 0 and summary.group(2) == "0", output[-3000:]


def api_modules():
  """Every module the API reference documents: the roots and their submodules."""
  names = []
  for root in API_ROOTS:
    names.append(root)
    module = importlib.import_module(root)
    if hasattr(module, "__path__"):
      names += sorted(
        f"{root}.{info.name}"
        for info in pkgutil.iter_modules(module.__path__)
        if not info.name.startswith("_")
      )
  return names


def _own_docstring(obj):
  """The docstring written for ``obj`` itself (not one a class inherits or a dataclass or
  NamedTuple makes up from its fields)."""
  doc = (
    obj.__doc__
    if inspect.isclass(obj) and "__doc__" in vars(obj)
    else getattr(obj, "__doc__", None)
  )
  if inspect.isclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
    return None  # dataclasses.dataclass / typing.NamedTuple's signature stand-in
  return (doc or "").strip() or None


def test_every_public_name_is_documented(site):
  from sphinx.util.inventory import InventoryFile

  with open(site / "html" / "objects.inv", "rb") as f:
    inventory = InventoryFile.load(f, "", os.path.join)
  documented = {
    name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries
  }
  missing, undocumented = [], []
  for module_name in api_modules():
    module = importlib.import_module(module_name)
    assert module_name in documented, f"{module_name} has no page in the API reference"
    for name in public_api.public_names(module):
      obj = getattr(module, name)
      if f"{module_name}.{name}" not in documented:
        missing.append(f"{module_name}.{name}")
      # Functions and classes defined here (a re-exported one is checked where it is
      # defined; a function assigned from a library, such as an initializer, is data here).
      if (
        (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module_name
        and not _own_docstring(obj)
      ):
        undocumented.append(f"{module_name}.{name}")
  assert not missing, f"public names absent from the API reference: {missing}"
  assert not undocumented, f"public functions and classes without a docstring: {undocumented}"


def test_every_results_file_is_included_in_the_docs():
  pages = ""
  for path in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True):
    if "_build" not in path:
      with open(path) as f:
        pages += f.read()
  included = set(re.findall(r"```\{include\} (?:\.\./)+results/([\w.]+)", pages))
  for path in glob.glob(os.path.join(ROOT, "results", "*.md")):
    assert os.path.basename(path) in included, (
      f"results/{os.path.basename(path)} is not included in any docs page"
    )
