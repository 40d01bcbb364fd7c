"""Population Based Augmentation (Ho et al. 2019): the population is the core step under vmap.

PBA trains P models ("trials") side by side; every few epochs the worst quarter copies the
weights and augmentation policy of the best quarter and perturbs the copied policy
(explore); the output is each trial's policy schedule (which policy from which epoch) and
that of the best trial. The official code ran one process per trial (Ray Tune); here the
trials are a leading axis of one state pytree and the training step is kd_jax's one step
(kd_jax.train.step) with the role-wise policy preprocess (kd_jax.methods.rolewise), run for
all trials at once by ``jit_population`` (``vmap``, split over a ``"pop"`` mesh axis), inside
kd_jax's one loop (kd_jax.train.loop.run_loop): populations get the same checkpoints,
resume, SIGTERM save, non-finite stop and per-process input as every other run. This
module keeps only what is PBA's own: exploit/explore and the schedules, on the host.

Each trial has its own parameters, optimiser state, policy, data order and random stream, so
the population step equals P separate steps (tested). Role-wise KD (Fu et al. 2020) runs it
twice: with plain cross-entropy for the full-precision teacher, and under KD from the frozen
teacher for the low-bit student, where the teacher sees the student's augmented image. Any
method and view compose with the policy (``MemberSetup.method``, ``MemberSetup.view``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kd_jax import methods, policies
from kd_jax.methods import rolewise
from kd_jax.models import adapters
from kd_jax.train import step as step_lib
from kd_jax.train.step import POP_AXIS, make_population_mesh  # public here too

__all__ = [
  "POPULATION_MODES",
  "POP_AXIS",
  "MemberSetup",
  "Schedule",
  "SearchResult",
  "SharedHparams",
  "exploit_and_explore",
  "init_population",
  "make_member_step",
  "make_population_mesh",
  "make_population_step",
  "save_result",
  "search",
  "train_with_schedules",
]

logger = logging.getLogger(__name__)
POPULATION_MODES = step_lib.POPULATION_MODES
# A trial's policy schedule: [(start_epoch, policy int [30, 2]), ...] (kd_jax.policies).
Schedule = list[tuple[int, np.ndarray]]
# The values the trials share (KD's temperature and weights, ...): a dict, or epoch -> dict.
SharedHparams = Mapping[str, float] | Callable[[int], Mapping[str, float]] | None


@dataclasses.dataclass(frozen=True)
class MemberSetup:
  """What every trial's step shares: model, optimiser, the policy preprocess, the method.

  ``model`` / ``teacher_model``: Flax Linen image modules (or kd_jax.models.adapters).
  ``method``: a kd_jax.methods name; None means "kd" with a teacher and "ce" without.
  ``view``: an extra view maker (kd_jax.methods.make_view) to compose with the policy.
  """

  model: Any
  optimizer: optax.GradientTransformation
  mean: tuple
  std: tuple
  fill: tuple  # uint8 fill of uncovered / cut-out pixels (the dataset mean)
  pad: int = 4
  flip: bool = True
  cutout_size: int = 16
  teacher_model: Any = None  # KD from this frozen teacher when set (role-wise stage 2)
  method: str | None = None
  view: Any = None

  @property
  def preprocess(self) -> rolewise.PolicyPreprocess:
    return rolewise.PolicyPreprocess(
      tuple(self.mean), tuple(self.std), tuple(self.fill), self.pad, self.flip, self.cutout_size
    )


def _adapter(model):
  return (
    model if model is None or hasattr(model, "apply_train") else adapters.LinenImageModel(model)
  )


def make_member_step(setup: MemberSetup) -> Callable:
  """One trial's step: kd_jax.train.step.make_train_step with the policy preprocess,
  ``step(state, batch, teacher_variables, hparams, teacher_constants)`` with the policy in
  ``hparams["policy"]`` (kd_jax.methods.rolewise.policy_values)."""
  name = setup.method or ("kd" if setup.teacher_model is not None else "ce")
  method = methods.get_method(name, setup.view.name if setup.view is not None else None)
  return step_lib.make_train_step(
    _adapter(setup.model),
    setup.optimizer,
    method,
    setup.preprocess,
    teacher=_adapter(setup.teacher_model),
    view=setup.view,
  )


def make_population_step(setup: MemberSetup, mesh: Mesh, mode: str = "vmap") -> Callable:
  """The member step over the population axis, compiled once (kd_jax.train.step.
  jit_population): ``state`` and ``batch`` carry a leading trial axis, ``hparams["policy"]``
  is ``[P, 30, 2]``; the teacher and the other hparams are shared."""
  return step_lib.jit_population(make_member_step(setup), mesh, mode=mode)


def init_population(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  image_shape: Sequence[int],
  seeds: Sequence[int],
  init_variables: dict | None = None,
) -> dict:
  """Stacked trial states: each trial its own init key (or the given variables for all) and
  random stream."""
  from kd_jax import models
  from kd_jax.train import state as state_lib

  def one(seed):
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = init_variables or models.init_variables(model, init_key, image_shape)
    return state_lib.new_train_state(variables, optimizer, step_key)

  members = [one(int(seed)) for seed in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


def _pop_sharding(mesh):
  return step_lib.population_sharding(mesh)


def _local_block(sharding, global_shape) -> tuple[slice, ...]:
  """The block of a global array that this process's devices hold (it loads only that)."""
  index_map = sharding.addressable_devices_indices_map(global_shape)
  block = []
  for axis, size in enumerate(global_shape):
    ranges = [
      index[axis].indices(size) if axis < len(index) else (0, size, 1)
      for index in index_map.values()
    ]
    block.append(slice(min(r[0] for r in ranges), max(r[1] for r in ranges)))
  return tuple(block)


class _PopulationRun:
  """The pieces kd_jax.train.loop.run_loop needs for a population: batches of this process's
  trials, per-trial evaluation on a shared set, the stacked state."""

  def __init__(
    self,
    setup,
    seeds,
    train_images,
    train_labels,
    batch_size,
    mesh,
    mode,
    init_variables,
    teacher_variables,
    eval_batch_size,
  ):
    from kd_jax.data.in_memory import EpochSampler

    self.population = len(seeds)
    self.mesh = mesh
    self.pop, self.replicated = _pop_sharding(mesh), NamedSharding(mesh, PartitionSpec())
    self.batch_sharding = step_lib.population_batch_sharding(mesh)
    self.trials, self.examples = _local_block(self.batch_sharding, (self.population, batch_size))
    self.batch_size = batch_size
    self.samplers = [EpochSampler(len(train_labels), batch_size, int(seed)) for seed in seeds]
    self.steps_per_epoch = self.samplers[0].steps_per_epoch
    self.images, self.labels = train_images, train_labels
    self.state = jax.device_put(
      init_population(setup.model, setup.optimizer, train_images.shape[1:], seeds, init_variables),
      self.pop,
    )
    self.step = make_population_step(setup, mesh, mode)
    model = _adapter(setup.model)
    self.eval_step = jax.jit(
      jax.vmap(step_lib.make_eval_step(model, setup.preprocess), in_axes=(0, None, None)),
      in_shardings=(self.pop, self.replicated, self.replicated),
      out_shardings=self.replicated,
    )
    self.teacher_variables = jax.device_put(teacher_variables or {}, self.replicated)
    self.eval_batch_size = eval_batch_size

  def put(self, host: dict, sharding, global_shape_of) -> dict:
    return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v), global_shape_of(v))
      for k, v in host.items()
    }

  def batch_at(self, step: int) -> dict:
    """This process's block of the trials' batches for global step ``step``: its trials,
    and of each trial's batch the examples its devices hold."""
    index = np.stack(
      [
        self.samplers[t].global_indices(step)[self.examples]
        for t in range(self.population)[self.trials]
      ]
    )
    return self.put(
      {"image": self.images[index], "label": self.labels[index]},
      self.batch_sharding,
      lambda v: (self.population, self.batch_size, *v.shape[2:]),
    )

  def batches(self, start_step: int, stop_step: int):
    """The Loop's iterator over ``batch_at``, put on the devices two steps ahead."""
    from kd_jax.data import pipeline

    return pipeline.prefetch(map(self.batch_at, range(start_step, stop_step)), 2)

  def policies(self, per_trial) -> jax.Array:
    local = np.asarray(per_trial, np.int32)[self.trials]
    return jax.make_array_from_process_local_data(
      self.pop, local, (self.population, *local.shape[1:])
    )

  def accuracy(self, state, images, labels) -> np.ndarray:
    """Accuracy (%) of every trial on ``images`` (the same set for all), masked batches."""
    from kd_jax.data.in_memory import eval_batches

    correct = np.zeros(self.population)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    for batch in eval_batches({"image": images, "label": labels}, self.eval_batch_size):
      sums = self.eval_step(
        variables, self.put(batch, self.replicated, lambda v: v.shape), self.teacher_variables
      )
      correct += np.asarray(jax.device_get(sums["correct"]))
    return 100.0 * correct / len(labels)


def _shared_hparams(hparams: SharedHparams, epoch: int) -> dict[str, float]:
  """The trials' shared values for ``epoch``: KD's defaults, overridden by ``hparams`` (a
  dict, or ``epoch -> dict`` for methods with a schedule, e.g. kd_jax.methods.hparams_at)."""
  values = hparams(epoch) if callable(hparams) else (hparams or {})
  return {**methods.hparams_at(methods.METHODS["kd"], 1, 1, kd={}), **values}


def _shared_values(hparams: SharedHparams, sharding: jax.sharding.Sharding) -> Callable:
  """``epoch -> device arrays`` of the shared values."""

  def at(epoch):
    return jax.device_put(
      {k: jnp.float32(v) for k, v in _shared_hparams(hparams, epoch).items()}, sharding
    )

  return at


def _hparams_record(hparams: SharedHparams, epochs: int) -> list:
  """The shared values of every epoch, for the run's config (a resume checks them)."""
  return [
    {k: float(v) for k, v in _shared_hparams(hparams, e).items()} for e in range(1, epochs + 1)
  ]


def exploit_and_explore(
  rng: np.random.Generator,
  key: jax.Array,
  scores: Sequence[float] | np.ndarray,
  state: Mapping[str, Any],
  population_policies: jax.Array | np.ndarray,
  fraction: float = 0.25,
) -> tuple[dict[str, Any], jax.Array, list[list[int]]]:
  """PBA's exploit/explore: the bottom ``fraction`` of trials (by ``scores``) each copy a
  random trial of the top ``fraction`` (weights, BatchNorm statistics, optimiser state and
  policy), then explore the copied policy. Returns (state, policies, [(loser, winner)]).
  The random streams (``rng`` in the state) are kept: a clone continues with its own."""
  scores = np.asarray(scores)
  population = len(scores)
  quarter = max(1, int(population * fraction)) if population > 1 else 0
  order = np.argsort(-scores, kind="stable")
  winners, losers = order[:quarter], order[population - quarter :]
  sources = np.arange(population)
  copies = []
  for loser in losers:
    winner = int(rng.choice(winners))
    sources[loser] = winner
    copies.append([int(loser), winner])
  sources_j = jnp.asarray(sources)
  copied = {
    k: (v if k in ("rng", "step") else jax.tree.map(lambda x: x[sources_j], v))
    for k, v in state.items()
  }
  new_policies = jnp.asarray(population_policies)[sources_j]
  explored = jax.vmap(policies.explore)(jax.random.split(key, population), new_policies)
  is_loser = jnp.zeros(population, bool).at[jnp.asarray(losers, jnp.int32)].set(True)
  new_policies = jnp.where(is_loser[:, None, None], explored, new_policies)
  return copied, new_policies, copies


@dataclasses.dataclass
class SearchResult:
  """What a PBA search returns: each trial's schedule, scores and the best trial."""

  schedules: list[Schedule]  # per trial: [(start_epoch, policy [30, 2]), ...]
  final_scores: list  # validation accuracy per trial at the end
  best_trial: int
  history: list  # per exploit round: epoch, scores, copies

  @property
  def best_schedule(self) -> Schedule:
    return self.schedules[self.best_trial]

  def to_json(self) -> dict:
    return {
      "best_trial": self.best_trial,
      "final_scores": self.final_scores,
      "history": self.history,
      "best_schedule": json.loads(policies.schedule_to_json(self.best_schedule)),
      "schedules": [json.loads(policies.schedule_to_json(s)) for s in self.schedules],
    }


def _schedules_to_meta(schedules):
  return [[[int(e), np.asarray(p).reshape(-1).tolist()] for e, p in s] for s in schedules]


def _schedules_from_meta(raw):
  return [
    [(int(e), np.asarray(p, np.int32).reshape(policies.NUM_TUPLES, 2)) for e, p in s] for s in raw
  ]


@contextlib.contextmanager
def _no_resume_without_workdir():
  """A run without a workdir checkpoints into a temporary directory that goes with it: a
  signal's "rerun to resume" would be untrue there."""
  from kd_jax.train import loop

  try:
    yield
  except loop.PreemptedError as preempted:
    raise loop.PreemptedError(
      f"{signal.Signals(preempted.signum).name}: stopped; this run "
      "had no workdir, so nothing was kept to resume from (pass "
      "workdir= to make it resumable).",
      preempted.signum,
    ) from None


def search(
  setup: MemberSetup,
  train_images: np.ndarray,
  train_labels: np.ndarray,
  val_images: np.ndarray,
  val_labels: np.ndarray,
  *,
  population: int = 16,
  epochs: int,
  batch_size: int,
  exploit_every: int = 3,
  seed: int = 0,
  workdir: str | None = None,
  teacher_variables: Mapping[str, Any] | None = None,
  hparams: SharedHparams = None,
  init_variables: dict | None = None,
  eval_batch_size: int = 500,
  mesh: Mesh | None = None,
  mode: str = "vmap",
  checkpoint_every_steps: int = 0,
  progress_bar: bool = False,
) -> SearchResult:
  """Runs PBA and returns every trial's schedule and the best one.

  Every ``exploit_every`` epochs (and at the end) all trials are scored on the validation
  images; between rounds the bottom quarter clones the top quarter and explores. The
  population trains in kd_jax's one loop: checkpointed in ``workdir`` (Orbax; a temporary
  directory when None) every round or ``checkpoint_every_steps``, and a rerun resumes from
  the newest checkpoint, reaching the same result. ``hparams``: the values the trials share
  (KD's temperature and weights by default), a dict or ``epoch -> dict`` (a method with a
  schedule, e.g. ``lambda e: kd_jax.methods.hparams_at(method, e, epochs, kd=...)``).
  """
  from kd_jax.train import loop

  if workdir is None:
    with tempfile.TemporaryDirectory() as scratch, _no_resume_without_workdir():
      return search(
        setup,
        train_images,
        train_labels,
        val_images,
        val_labels,
        population=population,
        epochs=epochs,
        batch_size=batch_size,
        exploit_every=exploit_every,
        seed=seed,
        workdir=scratch,
        teacher_variables=teacher_variables,
        hparams=hparams,
        init_variables=init_variables,
        eval_batch_size=eval_batch_size,
        mesh=mesh,
        mode=mode,
        checkpoint_every_steps=checkpoint_every_steps,
      )
  mesh = mesh or make_population_mesh(population)
  seeds = [seed * 1000 + t for t in range(population)]
  run = _PopulationRun(
    setup,
    seeds,
    train_images,
    train_labels,
    batch_size,
    mesh,
    mode,
    init_variables,
    teacher_variables,
    eval_batch_size,
  )
  shared = _shared_values(hparams, run.replicated)
  pba = {
    "policies": np.zeros((population, policies.NUM_TUPLES, 2), np.int32),
    "schedules": [[(0, np.zeros((policies.NUM_TUPLES, 2), np.int32))] for _ in range(population)],
  }

  def hparams_at(epoch):
    return {**shared(epoch), "policy": run.policies(pba["policies"])}, {}

  def evaluate(state, epoch):
    if epoch % exploit_every and epoch != epochs:
      return None
    scores = run.accuracy(state, val_images, val_labels)
    return {
      "scores": [round(float(s), 3) for s in scores],
      "best": float(scores.max()),
      "median": float(np.median(scores)),
    }

  def end_of_epoch(state, epoch, row):
    if "scores" not in row:
      return state
    row["copies"] = []
    logger.info("PBA epoch %d: best %.2f, median %.2f", epoch, row["best"], row["median"])
    if epoch == epochs:
      return state
    rng = np.random.default_rng([seed, epoch])
    key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
    state, new_policies, copies = exploit_and_explore(
      rng, key, np.asarray(row["scores"]), state, pba["policies"]
    )
    row["copies"] = copies
    host_policies = np.asarray(new_policies)
    previous = [list(s) for s in pba["schedules"]]
    for loser, winner in copies:
      pba["schedules"][loser] = [entry for entry in previous[winner] if entry[0] < epoch]
    for trial in range(population):
      if not np.array_equal(pba["schedules"][trial][-1][1], host_policies[trial]):
        pba["schedules"][trial] = [e for e in pba["schedules"][trial] if e[0] < epoch] + [
          (epoch, host_policies[trial])
        ]
    pba["policies"] = host_policies
    return jax.device_put(state, run.pop)

  def restore_extra(meta):
    pba["policies"] = np.asarray(meta["policies"], np.int32)
    pba["schedules"] = _schedules_from_meta(meta["schedules"])

  config = {
    "kind": "pba_search",
    "population": population,
    "epochs": epochs,
    "batch_size": batch_size,
    "exploit_every": exploit_every,
    "seed": seed,
    "mode": mode,
    "hparams": _hparams_record(hparams, epochs),
  }
  spec = loop.Loop(
    run.step,
    run.batches,
    hparams_at,
    evaluate,
    run.steps_per_epoch,
    epochs * run.steps_per_epoch,
    config,
    run.teacher_variables,
    {},
    end_of_epoch=end_of_epoch,
    restore_extra=restore_extra,
    extra_meta=lambda step: {
      "policies": pba["policies"].tolist(),
      "schedules": _schedules_to_meta(pba["schedules"]),
    },
    checkpoint_every_steps=checkpoint_every_steps,
    max_checkpoints_to_keep=2,
    log_every_steps=run.steps_per_epoch,
    progress_bar=progress_bar,
    score="best",
    examples_per_step=population * batch_size,
    example_name="images",
  )
  result = loop.run_loop(spec, run.state, workdir)
  history = [
    {"epoch": row["epoch"], "scores": row["scores"], "copies": row["copies"]}
    for row in result.history
    if "scores" in row
  ]
  final = history[-1]["scores"]
  return SearchResult(pba["schedules"], final, int(np.argmax(final)), history)


def train_with_schedules(
  setup: MemberSetup,
  schedules: Sequence[Schedule],
  seeds: Sequence[int],
  train_images: np.ndarray,
  train_labels: np.ndarray,
  test_images: np.ndarray,
  test_labels: np.ndarray,
  *,
  epochs: int,
  batch_size: int,
  teacher_variables: Mapping[str, Any] | None = None,
  hparams: SharedHparams = None,
  init_variables: dict | None = None,
  eval_batch_size: int = 500,
  mesh: Mesh | None = None,
  mode: str = "vmap",
  workdir: str | None = None,
  checkpoint_every_steps: int = 0,
  progress_bar: bool = False,
) -> dict:
  """Trains one model per (schedule, seed) pair as one population; returns per-member test
  accuracy after every epoch (``history``, [epochs, members]), the final one, the training
  time and the final stacked ``state``.

  ``schedules[i]`` is member i's ``[(start_epoch, policy), ...]`` (epochs counted from 0);
  ``seeds[i]`` its seed (init, data order, augmentation randomness). Runs in kd_jax's one
  loop: with a ``workdir`` it checkpoints and resumes (a temporary directory when None).
  """
  from kd_jax.train import loop

  members = len(schedules)
  if len(seeds) != members:
    raise ValueError(f"{members} schedules but {len(seeds)} seeds; give one seed per member.")
  if workdir is None:
    with tempfile.TemporaryDirectory() as scratch, _no_resume_without_workdir():
      return train_with_schedules(
        setup,
        schedules,
        seeds,
        train_images,
        train_labels,
        test_images,
        test_labels,
        epochs=epochs,
        batch_size=batch_size,
        teacher_variables=teacher_variables,
        hparams=hparams,
        init_variables=init_variables,
        eval_batch_size=eval_batch_size,
        mesh=mesh,
        mode=mode,
        workdir=scratch,
        checkpoint_every_steps=checkpoint_every_steps,
      )
  mesh = mesh or make_population_mesh(members)
  run = _PopulationRun(
    setup,
    seeds,
    train_images,
    train_labels,
    batch_size,
    mesh,
    mode,
    init_variables,
    teacher_variables,
    eval_batch_size,
  )
  shared = _shared_values(hparams, run.replicated)

  def hparams_at(epoch):
    per_trial = np.stack([policies.policy_at(s, epoch - 1) for s in schedules])
    return {**shared(epoch), "policy": run.policies(per_trial)}, {}

  def evaluate(state, epoch):
    del epoch
    accuracy = run.accuracy(state, test_images, test_labels)
    # Each member's test top-1 (%), and their mean (metrics.jsonl's names).
    return {"member_top1": accuracy.tolist(), "top1": float(np.mean(accuracy))}

  config = {
    "kind": "pba_schedules",
    "members": members,
    "seeds": [int(s) for s in seeds],
    "epochs": epochs,
    "batch_size": batch_size,
    "mode": mode,
    "schedules": _schedules_to_meta(schedules),
    "hparams": _hparams_record(hparams, epochs),
  }
  spec = loop.Loop(
    run.step,
    run.batches,
    hparams_at,
    evaluate,
    run.steps_per_epoch,
    epochs * run.steps_per_epoch,
    config,
    run.teacher_variables,
    {},
    checkpoint_every_steps=checkpoint_every_steps,
    max_checkpoints_to_keep=2,
    log_every_steps=run.steps_per_epoch,
    progress_bar=progress_bar,
    examples_per_step=members * batch_size,
    example_name="images",
  )
  result = loop.run_loop(spec, run.state, workdir)
  # "accuracy": the name in checkpoints written before metrics.jsonl's one naming.
  history = [row.get("member_top1", row.get("accuracy")) for row in result.history]
  return {
    "history": history,
    "final": history[-1],
    "train_seconds": result.train_seconds,
    "state": result.state,
    "compilations": result.compilations,
  }


def save_result(path: str, result: SearchResult) -> None:
  """Writes the search's schedules as JSON (process 0 only: every process has the same)."""
  if jax.process_index() != 0:
    return
  from kd_jax.train import files

  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  files.write_json_atomically(path, result.to_json(), indent=None)
