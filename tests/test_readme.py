"""The README's promises: its example runs, its test command is what CI runs."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import ROOT


def _readme():
  with open(os.path.join(ROOT, "README.md")) as f:
    return f.read()


def test_readme_example_runs_and_gives_finite_gradients():
  code = re.search(r"<!-- readme-example -->\n```python\n(.*?)```", _readme(), re.S).group(1)
  namespace = {}
  exec(compile(code, "README example", "exec"), namespace)
  teacher_w = jax.random.normal(jax.random.PRNGKey(0), (64, 10))
  teacher_apply = lambda x: x.reshape(x.shape[0], -1) @ teacher_w
  student_apply = lambda w, x: x.reshape(x.shape[0], -1) @ w
  images = jax.random.randint(jax.random.PRNGKey(1), (4, 8, 8, 1), 0, 256).astype(jnp.uint8)
  grads = namespace["grad_fn"](jnp.zeros((64, 10)), jax.random.PRNGKey(2), images,
                               jnp.array([0, 1, 2, 3]), student_apply, teacher_apply)
  assert grads.shape == (64, 10) and np.all(np.isfinite(grads)) and np.any(grads != 0)


def test_ci_runs_the_readme_test_command():
  commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", _readme())
  assert len(commands) == 2, "the README keeps exactly two set-up command lines"
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci_script = f.read()
  test_command = next(c for c in commands if "pytest" in c)
  assert test_command in ci_script
  assert "experiments.demo" in next(c for c in commands if "pytest" not in c)


def test_importing_the_library_imports_neither_torch_nor_tensorflow():
  import subprocess
  import sys
  code = ("import sys, kd_jax.losses, kd_jax.augment, kd_jax.models, kd_jax.data, "
          "kd_jax.train.loop; bad = [m for m in ('torch', 'tensorflow', 'tensorflow_datasets') "
          "if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
