"""PBA over a vmapped population: the population step is P separate steps, exploit/explore,
and a reproducible, resumable search (also over a 4-device "pop" mesh)."""

import dataclasses
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import models, pba
from tests.conftest import ROOT


def _setup(teacher=None):
  return pba.MemberSetup(model=models.create_model("cnn_tiny", 10),
                         optimizer=optax.sgd(0.1, momentum=0.9), mean=(0.3,), std=(0.3,),
                         fill=(77,), pad=1, flip=False, cutout_size=2, teacher_model=teacher)


def _data(n=48, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
          rng.integers(0, 10, n).astype(np.int32))


def test_exploit_copies_the_top_quarter_and_explores_the_copies():
  from kd_jax import policies
  setup = _setup()
  state = pba.init_population(setup.model, setup.optimizer, (8, 8, 1), range(8))
  pop_policies = jnp.tile(jnp.arange(8)[:, None, None], (1, 30, 2)).astype(jnp.int32)
  scores = np.array([50, 90, 10, 60, 95, 20, 70, 30.0])  # top: 4, 1; bottom: 2, 5
  key = jax.random.PRNGKey(0)
  new_state, new_policies, copies = pba.exploit_and_explore(
      np.random.default_rng(0), key, scores, state, pop_policies)
  assert sorted(loser for loser, _ in copies) == [2, 5]
  keys = jax.random.split(key, 8)
  for loser, winner in copies:
    assert winner in (1, 4)
    for name in ("params", "batch_stats", "opt_state"):
      for ours, theirs in zip(jax.tree.leaves(new_state[name]), jax.tree.leaves(state[name])):
        np.testing.assert_array_equal(ours[loser], theirs[winner])
    # The copy explores the winner's policy (not its own) with its own key.
    np.testing.assert_array_equal(new_policies[loser],
                                  policies.explore(keys[loser], pop_policies[winner]))
    assert not np.array_equal(new_policies[loser], pop_policies[winner])
  np.testing.assert_array_equal(new_state["rng"], state["rng"])  # own random streams
  for kept in (0, 1, 3, 4, 6, 7):
    np.testing.assert_array_equal(new_policies[kept], pop_policies[kept])
    for ours, theirs in zip(jax.tree.leaves(new_state["params"]),
                            jax.tree.leaves(state["params"])):
      np.testing.assert_array_equal(ours[kept], theirs[kept])


def _search(workdir=None):
  train_images, train_labels = _data(32, 1)
  val_images, val_labels = _data(24, 2)
  return pba.search(_setup(), train_images, train_labels, val_images, val_labels,
                    population=4, epochs=4, batch_size=16, exploit_every=2, seed=3,
                    workdir=workdir, eval_batch_size=16)


def test_search_is_reproducible_and_resumes_to_the_same_result(tmp_path):
  first = _search(str(tmp_path / "run"))
  assert len(first.schedules) == 4 and len(first.history) == 2
  assert first.history[0]["copies"] and first.history[-1]["copies"] == []
  for schedule in first.schedules:
    assert schedule[0][0] == 0 and not np.any(schedule[0][1])  # PBA starts from zeros
  assert any(len(s) > 1 for s in first.schedules)  # explored policies entered schedules
  assert first.best_trial == int(np.argmax(first.final_scores))
  # Resume: make the final checkpoint unreadable, rerun: it is moved aside and the search
  # resumes from the one before, reaching the same result.
  checkpoints = tmp_path / "run" / "checkpoints"
  last = max((name for name in os.listdir(checkpoints) if name.isdigit()), key=int)
  for folder, _, files in os.walk(checkpoints / last / "train"):
    for name in files:
      (checkpoints / last / "train" / os.path.relpath(os.path.join(folder, name),
                                                      checkpoints / last / "train")
       ).write_bytes(b"not a checkpoint")
  resumed = _search(str(tmp_path / "run"))
  assert (checkpoints / f"corrupt_{last}").is_dir()
  assert resumed.final_scores == first.final_scores and resumed.history == first.history
  again = _search()
  assert again.to_json() == first.to_json()


def test_nonfinite_loss_stops_the_population_naming_step_and_trials(tmp_path):
  train_images, train_labels = _data(32, 1)
  setup = dataclasses.replace(_setup(), optimizer=optax.sgd(float("nan")))
  with pytest.raises(FloatingPointError, match=r"at step 2 \(epoch 1\) in trial\(s\) "
                                               r"\[0, 1\]; no checkpoint"):
    pba.train_with_schedules(setup, [[(0, np.zeros((30, 2), np.int32))]] * 2, [0, 1],
                             train_images, train_labels, train_images, train_labels,
                             epochs=1, batch_size=16, workdir=str(tmp_path))


@pytest.mark.parametrize("method, view", [("continuation_kd", None), ("kd", "cutmix_pick"),
                                          ("kd", "backward")])
def test_rolewise_policy_composes_with_other_methods(method, view):
  """Role-wise + Continuation-KD (φ, ψ per epoch), + CutMix-pick, + backward KD: each trains
  in a population, compiles once, and changes the training from plain KD's."""
  out, plain = _composed_run(method, view), _composed_run("kd", None)
  assert out["compilations"] == 1
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(out["state"]["params"]))
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(out["state"]["params"]),
                                                    jax.tree.leaves(plain["state"]["params"])))


@functools.lru_cache(maxsize=None)  # the plain-KD baseline runs once for the three cases
def _composed_run(method, view):
  from kd_jax import methods
  teacher = models.create_model("cnn_small", 10)
  teacher_vars = models.init_variables(teacher, jax.random.PRNGKey(9), (8, 8, 1))
  train_images, train_labels = _data(32, 4)
  busy = [(0, np.full((30, 2), 5, np.int32))]
  schedule_options = {"t_max": 2, "psi_schedule": "linear", "psi_ramp_epochs": 2}
  view_options = {"backward": dict(steps=1, step_size=0.1)}.get(view, {})
  maker = methods.make_view(view, "image", **view_options) if view else None
  setup = dataclasses.replace(_setup(teacher), method=method, view=maker)
  hparams = lambda epoch: methods.hparams_at(
      methods.get_method(method), epoch, 2, kd={},
      schedule_options=schedule_options if method == "continuation_kd" else None)
  return pba.train_with_schedules(setup, [busy], [0], train_images, train_labels,
                                  train_images, train_labels, epochs=2, batch_size=16,
                                  teacher_variables=teacher_vars, hparams=hparams,
                                  eval_batch_size=16)


def test_search_over_four_devices_equals_one_device():
  code = ("import json, jax; from tests.test_pba import _search; "
          "print('RESULT', json.dumps(_search().to_json()), len(jax.devices()))")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
  import json
  four = json.loads(line.split(" ", 1)[1].rsplit(" ", 1)[0])
  assert line.rsplit(" ", 1)[1] == "4"
  one = _search().to_json()
  assert four["history"] == one["history"] and four["best_trial"] == one["best_trial"]


def test_train_with_schedules_runs_each_member_with_its_schedule(tmp_path):
  """A population of two members equals each member trained alone with its own schedule
  (and its own seed); a member with a busy policy from epoch 1 ends elsewhere than the
  same seed without a policy."""
  train_images, train_labels = _data(32, 4)
  test_images, test_labels = _data(16, 5)
  busy = np.full((30, 2), 9, np.int32)
  zero = [(0, np.zeros((30, 2), np.int32))]
  schedules = [zero, zero + [(1, busy)]]
  kwargs = dict(epochs=2, batch_size=16, eval_batch_size=16)
  out = pba.train_with_schedules(_setup(), schedules, [0, 0], train_images, train_labels,
                                 test_images, test_labels, **kwargs)
  assert np.asarray(out["history"]).shape == (2, 2) and out["compilations"] == 1
  for member, schedule in enumerate(schedules):
    alone = pba.train_with_schedules(_setup(), [schedule], [0], train_images, train_labels,
                                     test_images, test_labels, **kwargs)
    assert [h[0] for h in alone["history"]] == [h[member] for h in out["history"]]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[member], b[0], rtol=1e-5,
                                                         atol=1e-6),
                 out["state"]["params"], alone["state"]["params"])
  first_epoch = [leaf[0] for leaf in jax.tree.leaves(out["state"]["params"])]
  assert any(not np.allclose(a, leaf[1]) for a, leaf in
             zip(first_epoch, jax.tree.leaves(out["state"]["params"])))
  with pytest.raises(ValueError, match="one seed per member"):
    pba.train_with_schedules(_setup(), schedules, [0], train_images, train_labels, test_images,
                             test_labels, epochs=1, batch_size=16)
