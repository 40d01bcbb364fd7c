"""The README's and the docs' promises: their examples run and do what they say (the docs
build runs them too: tests/test_docs.py), the README's test command is what CI runs."""

import collections
import contextlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT


OWN_CODE = os.path.join("docs", "own_code.md")  # "Using kd_jax in your own code"
OWN_CODE_EXAMPLES = ("linen", "nnx-jit", "nnx", "equinox", "pmap", "jit-sharded", "shard-map")


def _read(path):
  with open(os.path.join(ROOT, path)) as f:
    return f.read()


def _readme():
  return _read("README.md")


def _example(name):
  """The ```{testcode} block after docs/own_code.md's `<!-- docs-example: name -->` marker."""
  blocks = dict(re.findall(r"<!-- docs-example: ([\w-]+) -->\n```\{testcode\}[^\n]*\n(.*?)```",
                           _read(OWN_CODE), re.S))
  assert name in blocks, f"{OWN_CODE} has no docs-example block {name!r}; it has {sorted(blocks)}"
  return blocks[name]


def _readme_example(name):
  """The ```python block after the README's `<!-- readme-example: name -->` marker."""
  blocks = dict(re.findall(r"<!-- readme-example: ([\w-]+) -->\n```python\n(.*?)```", _readme(),
                           re.S))
  assert name in blocks, f"README has no readme-example block {name!r}; it has {sorted(blocks)}"
  return blocks[name]


@contextlib.contextmanager
def _compilations():
  """Counts, per jitted function name, how often JAX traced it and how often XLA compiled it."""
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/jaxpr_trace_duration":
      counts["trace", kwargs.get("fun_name")] += 1
    elif event == "/jax/core/compile/backend_compile_duration":
      counts["compile", kwargs.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _compiled_once(counts, name="train_step"):
  return counts["trace", name] == 1 and counts["compile", f"jit({name})"] == 1


def _run_example(name):
  """Runs a docs block (three training steps); returns its namespace and compile counts."""
  namespace = {}
  with _compilations() as counts:
    exec(compile(_example(name), f"{OWN_CODE} example ({name})", "exec"), namespace)
  return namespace, counts


def test_readme_example_computes_a_kd_loss_with_a_cutmix_pick_view_and_trains():
  namespace = {}
  exec(compile(_readme_example("quick"), "README example (quick)", "exec"), namespace)
  loss, grads = namespace["loss"], namespace["grads"]
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert grads.shape == (64, 10) and float(np.abs(grads).sum()) > 0
  # Gradient descent on the student with the same view lowers the loss.
  student_w, key = namespace["student_w"], namespace["key"]
  step = jax.jit(jax.value_and_grad(namespace["loss_fn"]))
  history = []
  for _ in range(3):
    value, grads = step(student_w, key)
    student_w = student_w - 0.5 * grads
    history.append(float(value))
  assert all(b < a for a, b in zip(history, history[1:])), history


def test_compile_counter_sees_a_step_recompiled_for_each_new_static_function():
  """What the README warns against: apply functions as static arguments, one lambda per call."""
  step = jax.jit(lambda apply_fn, x: apply_fn(x) * 2, static_argnums=0)
  with _compilations() as counts:
    for scale in (1.0, 2.0, 3.0):
      step(lambda x, s=scale: x * s, jnp.ones(3))
  assert counts["trace", "<lambda>"] == 3 and counts["compile", "jit(<lambda>)"] == 3


def test_docs_linen_example_compiles_once_and_computes_the_kd_loss():
  from kd_jax import augment
  ns, counts = _run_example("linen")
  assert _compiled_once(counts), counts
  params, opt_state, teacher_params = ns["student_params"], ns["opt_state"], ns["teacher_params"]
  images, labels, key = ns["images"], ns["labels"], jax.random.PRNGKey(7)
  # The step's loss (of the parameters it was given) against a hand-written KD objective.
  @jax.jit   # the same views and logits as in the step (one compilation, not one per op)
  def logits(params, teacher_params, key):
    x = augment.normalize(augment.random_crop_flip(key, images, pad=1), mean=(0.5,),
                          std=(0.25,))
    return ns["student"].apply(params, x), ns["teacher"].apply(teacher_params, x)
  s, t = (np.asarray(z, np.float64) for z in logits(params, teacher_params, key))
  log_softmax = lambda z: z - z.max(-1, keepdims=True) - np.log(
      np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
  tau = 4.0
  kl = (np.exp(log_softmax(t / tau)) * (log_softmax(t / tau) - log_softmax(s / tau))).sum(-1)
  ce = -log_softmax(s)[np.arange(len(labels)), np.asarray(labels)]
  expected = np.mean(0.1 * ce + 0.9 * tau**2 * kl)
  with _compilations() as counts:
    history = []
    for _ in range(4):    # same key: same views, so Adam must lower the loss
      params, opt_state, loss = ns["train_step"](params, opt_state, teacher_params, key, images,
                                                 labels)
      history.append(float(loss))
  np.testing.assert_allclose(history[0], expected, rtol=1e-5)
  assert all(b < a for a, b in zip(history, history[1:])), history
  assert not counts["compile", "jit(train_step)"], "the step compiled again"


def test_docs_nnx_example_compiles_once_trains_and_updates_batch_stats():
  from flax import nnx
  ns, counts = _run_example("nnx")
  assert _compiled_once(counts), counts
  student, teacher = ns["student"], ns["teacher"]
  # The BatchNorm statistics computed inside the jitted step came back into the module;
  # the frozen teacher's did not move.
  assert np.any(np.asarray(student.bn.mean[...]) != 0)
  np.testing.assert_array_equal(teacher.bn.mean[...], np.zeros(32))
  graph, params, rest = nnx.split(student, nnx.Param, ...)
  assert graph == ns["student_graph"]
  opt_state = ns["opt_state"]
  key = jax.random.PRNGKey(7)
  with _compilations() as counts:
    history = []
    for _ in range(5):    # same key (dropout still draws anew): the loss goes down
      params, rest, opt_state, loss = ns["train_step"](params, rest, opt_state,
                                                       ns["teacher_state"], key, ns["images"],
                                                       ns["labels"])
      history.append(float(loss))
  assert np.all(np.isfinite(history)) and history[-1] < 0.9 * history[0], history
  assert not counts["compile", "jit(train_step)"], "the step compiled again"


def test_docs_nnx_jit_example_compiles_once_trains_and_updates_batch_stats():
  ns, counts = _run_example("nnx-jit")
  assert _compiled_once(counts), counts
  student, teacher = ns["student"], ns["teacher"]
  # nnx.jit wrote the BatchNorm statistics of the train-mode pass back into the student,
  # and the student left in eval mode for the views is back in train mode; the frozen
  # teacher's statistics did not move.
  assert np.any(np.asarray(student.bn.mean[...]) != 0)
  assert not student.bn.use_running_average and not student.drop.deterministic
  np.testing.assert_array_equal(teacher.bn.mean[...], np.zeros(32))
  key = jax.random.PRNGKey(7)
  with _compilations() as counts:
    history = []
    for _ in range(5):    # same key (dropout still draws anew): the loss goes down
      history.append(float(ns["train_step"](student, teacher, ns["optimizer"], key, ns["images"],
                                            ns["labels"])))
  assert np.all(np.isfinite(history)) and history[-1] < 0.9 * history[0], history
  assert not counts["compile", "jit(train_step)"], "the step compiled again"


def test_docs_equinox_example_compiles_once_and_trains():
  pytest.importorskip("equinox", reason="pip install -e '.[test]' installs equinox")
  ns, counts = _run_example("equinox")
  assert _compiled_once(counts), counts
  student, opt_state = ns["student"], ns["opt_state"]
  key = jax.random.PRNGKey(7)
  with _compilations() as counts:
    history = []
    for _ in range(4):    # same key: same mixup and auxiliary samples, so the loss goes down
      student, opt_state, loss = ns["train_step"](student, opt_state, ns["teacher"], key,
                                                  ns["images"], ns["labels"])
      history.append(float(loss))
  assert all(b < a for a, b in zip(history, history[1:])), history
  assert not counts["compile", "jit(train_step)"], "the step compiled again"


def test_docs_page_on_own_code_has_every_example():
  page = _read(OWN_CODE)
  for name in OWN_CODE_EXAMPLES:
    assert f"<!-- docs-example: {name} -->" in page
    assert "static_arg" not in _example(name)   # apply functions are never static arguments
  # What changes between them is said on the page (and in the README).
  for text in (page, _readme()):
    assert "each device's shard" in text and "whole batch" in text


def test_readme_is_a_front_page_that_links_into_the_docs():
  readme = _readme()
  assert len(readme.splitlines()) <= 300
  links = re.findall(r"\]\((docs/[^)#]+)", readme)
  assert links, "the README links into docs/"
  for link in links:
    assert os.path.exists(os.path.join(ROOT, link)), f"README links to missing {link}"


def test_ci_runs_the_readme_test_command():
  commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", _readme())
  assert len(commands) == 2, "the README keeps exactly two set-up command lines"
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci_script = f.read()
  test_command = next(c for c in commands if "pytest" in c)
  assert test_command in ci_script
  assert "kd_jax.experiments.demo" in next(c for c in commands if "pytest" not in c)


def test_importing_the_library_imports_neither_torch_nor_tensorflow():
  import subprocess
  import sys
  code = ("import sys, kd_jax.losses, kd_jax.augment, kd_jax.models, kd_jax.data, "
          "kd_jax.train.loop; bad = [m for m in ('torch', 'tensorflow', 'tensorflow_datasets') "
          "if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
