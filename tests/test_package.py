"""The package as a user meets it: what ``import kd_jax`` offers and what installing it needs."""

import os
import subprocess
import sys

import pytest

import kd_jax
from kd_jax import losses


def test_the_package_lists_its_modules_and_entry_points():
  assert {"losses", "augment", "methods", "train", "train_and_evaluate",
          "get_method"} <= set(dir(kd_jax))
  assert kd_jax.losses.kd_kl is losses.kd_kl
  assert kd_jax.get_method("kd").name == "kd"
  from kd_jax.train import loop
  assert kd_jax.train_and_evaluate is loop.train_and_evaluate
  with pytest.raises(AttributeError, match="has no attribute 'lossess'; it has: augment"):
    kd_jax.lossess
  # `import kd_jax` alone loads no submodule (no training machinery, no orbax).
  code = ("import sys, kd_jax; print(sorted(m for m in sys.modules "
          "if m.startswith(('kd_jax.', 'orbax', 'flax'))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


CORE_REQUIREMENTS = {"jax", "flax", "optax", "orbax-checkpoint", "numpy", "ml_collections"}
EXTRA_PACKAGES = ("sklearn", "matplotlib", "tqdm", "tensorboardX", "scipy", "tokenizers",
                  "safetensors", "tensorflow", "tensorflow_datasets", "torch")


def test_the_core_installs_and_imports_without_the_extras():
  """`pip install kd_jax` brings only the core; the pure functions, the methods, the step and
  the loop import without any package of the extras (each is imported where it is used)."""
  import configparser
  import os
  import re
  from tests.conftest import ROOT
  config = configparser.ConfigParser()
  config.read(os.path.join(ROOT, "setup.cfg"))
  required = {re.split(r"[<>=!~ ]", line.strip())[0]
              for line in config["options"]["install_requires"].strip().splitlines()}
  assert required == CORE_REQUIREMENTS
  assert {"experiments", "text", "tfds", "torch", "test", "lint", "docs"} <= set(
      config["options.extras_require"])
  code = ("import sys\n"
          "from kd_jax import augment, backward, continuation, losses, methods, policies, quant\n"
          "from kd_jax.models import adapters\n"
          "from kd_jax.train import checkpoint, loop, optim, step\n"
          f"print(sorted(m for m in {EXTRA_PACKAGES!r} if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_config_files_resolve_from_anywhere(tmp_path, monkeypatch):
  from kd_jax.experiments import launch
  from tests.conftest import ROOT
  digits = os.path.join(ROOT, "kd_jax", "experiments", "configs", "digits.py")
  assert launch.resolve_config_path("digits:kd") == f"{digits}:kd"
  assert launch.resolve_config_path("digits.py") == digits
  with monkeypatch.context() as patch:
    patch.chdir(tmp_path)  # a path relative to the repository, run from elsewhere
    assert launch.resolve_config_path("kd_jax/experiments/configs/digits.py:kd") == f"{digits}:kd"
    assert launch.resolve_config_path("nonexistent:kd") == "nonexistent:kd"  # absl reports it
  # The entry points take the short form.
  out = subprocess.run([sys.executable, "-m", "kd_jax.experiments.distill", "--config=digits:kd",
                        f"--workdir={tmp_path / 'w'}", "--config.method=kd_x"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 2 and "unknown method 'kd_x'" in out.stderr


def test_only_kd_jax_is_installed_and_the_old_script_name_still_runs(tmp_path):
  """The scripts install as kd_jax.experiments, no top-level ``experiments`` (it would shadow
  other projects' modules); from a clone's root the old name and config paths still run."""
  import configparser
  from tests.conftest import ROOT
  config = configparser.ConfigParser()
  config.read(os.path.join(ROOT, "setup.cfg"))
  assert config["options.packages.find"]["include"].split() == ["kd_jax", "kd_jax.*"]
  assert os.path.isfile(os.path.join(ROOT, "kd_jax", "experiments", "configs", "digits.py"))
  # From elsewhere the installed name runs (an error from the script itself, not "No module").
  out = subprocess.run([sys.executable, "-m", "kd_jax.experiments.distill", "--config=digits:kd",
                        f"--workdir={tmp_path / 'a'}", "--config.method=kd_x"], cwd=tmp_path,
                       capture_output=True, text=True)
  assert out.returncode == 2 and "unknown method 'kd_x'" in out.stderr, out.stderr[-500:]
  # From the root, the command lines written before the move.
  out = subprocess.run([sys.executable, "-m", "experiments.distill",
                        "--config=experiments/configs/digits.py:kd", f"--workdir={tmp_path / 'b'}",
                        "--config.method=kd_y"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2 and "unknown method 'kd_y'" in out.stderr, out.stderr[-500:]


def test_the_library_never_imports_torch():
  """PyTorch code (the twins and the benchmarks against them) lives in the clone's
  experiments/; nothing installed as kd_jax may import it, even lazily inside a function."""
  import ast
  from tests.conftest import ROOT
  found = []
  for folder, _, files in os.walk(os.path.join(ROOT, "kd_jax")):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(m == "torch" or m.startswith(("torch.", "torchvision", "transformers"))
               or m.startswith("experiments") for m in modules):
          found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} imports {modules}")
  assert not found, "\n".join(found)
