"""Population Based Augmentation (Ho et al. 2019) with the population in one compiled step.

PBA trains P models ("trials") side by side; every few epochs the worst quarter copies the
weights and augmentation policy of the best quarter and perturbs the copied policy
(explore); the output is each trial's policy schedule (which policy from which epoch) and
that of the best trial. The official code ran one process per trial (Ray Tune); here the
trials are a leading axis of one state pytree: ``jax.vmap`` runs the P training steps as one
compiled program, and with several devices the population axis is split over a ``"pop"``
mesh axis. Exploit/explore happen on the host between epochs.

Each trial has its own parameters, optimiser state, policy, data order and random stream, so
the population step equals P separate steps (tested). Role-wise KD (Fu et al. 2020) runs it
twice: with plain cross-entropy for the full-precision teacher, and under KD from the frozen
teacher for the low-bit student, where the teacher sees the student's augmented image.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kd_jax import augment, losses, policies

logger = logging.getLogger(__name__)
POP_AXIS = "pop"


def make_population_mesh(population: int, devices=None) -> Mesh:
  """A 1-D ``"pop"`` mesh over as many devices as divide the population evenly."""
  devices = list(jax.devices() if devices is None else devices)
  count = max(d for d in range(1, len(devices) + 1) if population % d == 0)
  return Mesh(np.asarray(devices[:count]), (POP_AXIS,))


def _pop_sharding(mesh):
  return NamedSharding(mesh, PartitionSpec(POP_AXIS))


@dataclasses.dataclass(frozen=True)
class MemberSetup:
  """What one trial's step needs besides its state (static, shared by the population)."""
  model: Any
  optimizer: optax.GradientTransformation
  mean: tuple
  std: tuple
  fill: tuple          # uint8 fill of uncovered / cut-out pixels (the dataset mean)
  pad: int = 4
  flip: bool = True
  cutout_size: int = 16
  teacher_model: Any = None  # KD from this frozen teacher when set (role-wise stage 2)


def make_member_step(setup: MemberSetup) -> Callable:
  """``step(state, policy, images, labels, teacher_variables, hparams) -> (state, metrics)``
  for one trial: policy augmentation (+ pad/crop/flip/cutout) → normalise → (frozen teacher
  on the same augmented image) → student in training mode → loss → optax update.

  ``state``: params, batch_stats, opt_state, step, rng; ``hparams``: temperature, ce_weight,
  kd_weight (used with a teacher).
  """

  def step(state, policy, images, labels, teacher_variables, hparams):
    key = jax.random.fold_in(state["rng"], state["step"])
    augmented = policies.augment_batch(key, images, policy, fill=jnp.asarray(setup.fill),
                                       pad=setup.pad, flip=setup.flip,
                                       cutout_size=setup.cutout_size)
    x = augment.normalize(augmented, setup.mean, setup.std)
    teacher_logits = None
    if setup.teacher_model is not None:
      teacher_logits = setup.teacher_model.apply(teacher_variables, x, train=False)

    def loss_fn(params):
      logits, updated = setup.model.apply({"params": params, "batch_stats": state["batch_stats"]},
                                          x, train=True, mutable=["batch_stats"])
      if teacher_logits is None:
        per_example = losses.cross_entropy(logits, labels)
      else:
        per_example = losses.kd_objective(logits, teacher_logits, labels,
                                          temperature=hparams["temperature"],
                                          ce_weight=hparams["ce_weight"],
                                          kd_weight=hparams["kd_weight"])
      return jnp.mean(per_example), (logits, updated["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    updates, opt_state = setup.optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {**state, "step": state["step"] + 1, "batch_stats": batch_stats,
                 "opt_state": opt_state, "params": optax.apply_updates(state["params"], updates)}
    return new_state, {"loss": loss, "accuracy": jnp.mean(
        (jnp.argmax(logits, -1) == labels).astype(jnp.float32))}

  return step


POPULATION_MODES = ("vmap", "unroll")


def make_population_step(setup: MemberSetup, mesh: Mesh, mode: str = "vmap") -> Callable:
  """The member step over the population axis, compiled once.

  Arguments as ``make_member_step`` with a leading population axis on ``state``, ``policy``,
  ``images`` and ``labels`` (each trial its own batch); the teacher and hparams are shared.
  The state is donated. ``mode="vmap"`` batches the trials (one program whose convolutions
  carry a population axis: what accelerators want); ``"unroll"`` places P copies of the
  single-trial step in the one program (XLA:CPU runs batched-weight convolutions slowly;
  see results/bench_population_cpu.md).
  """
  if mode not in POPULATION_MODES:
    raise ValueError(f"unknown population mode {mode!r}; valid: {', '.join(POPULATION_MODES)}.")
  pop, replicated = _pop_sharding(mesh), NamedSharding(mesh, PartitionSpec())
  member_step = make_member_step(setup)
  if mode == "vmap":
    population_step = jax.vmap(member_step, in_axes=(0, 0, 0, 0, None, None))
  else:
    def population_step(state, policy, images, labels, teacher_variables, hparams):
      outputs = [member_step(jax.tree.map(lambda x, i=i: x[i], state), policy[i], images[i],
                             labels[i], teacher_variables, hparams)
                 for i in range(policy.shape[0])]
      return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)
  return jax.jit(population_step, in_shardings=(pop, pop, pop, pop, replicated, replicated),
                 out_shardings=(pop, pop), donate_argnums=(0,))


def make_population_eval(model, mean, std, mesh: Mesh) -> Callable:
  """``correct(params, batch_stats, images, labels, mask) -> [P]`` correct predictions per
  trial on one shared (masked) evaluation batch."""
  pop, replicated = _pop_sharding(mesh), NamedSharding(mesh, PartitionSpec())

  def correct(params, batch_stats, images, labels, mask):
    x = augment.normalize(images, mean, std)
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)

  return jax.jit(jax.vmap(correct, in_axes=(0, 0, None, None, None)),
                 in_shardings=(pop, pop, replicated, replicated, replicated),
                 out_shardings=replicated)


def evaluate_population(eval_fn, state, images, labels, batch_size: int) -> np.ndarray:
  """Accuracy (%) of every trial on ``images``, in fixed-size masked batches."""
  n = len(labels)
  total = np.zeros(jax.tree.leaves(state["params"])[0].shape[0])
  for start in range(0, n, batch_size):
    index = np.arange(start, start + batch_size)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)
    total += np.asarray(eval_fn(state["params"], state["batch_stats"], images[index],
                                labels[index], mask))
  return 100.0 * total / n


def init_population(model, optimizer, image_shape, seeds, init_variables=None) -> dict:
  """Stacked trial states: each trial its own init key (or the given variables for all) and
  random stream."""
  from kd_jax import models

  def one(seed):
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = init_variables or models.init_variables(model, init_key, image_shape)
    return {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
            "batch_stats": variables["batch_stats"],
            "opt_state": optimizer.init(variables["params"]), "rng": step_key}

  members = [one(int(seed)) for seed in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


def member_batches(samplers, step: int, images, labels):
  """Each trial's own batch for global step ``step``: ``[P, B, ...]`` arrays."""
  index = np.stack([s.global_indices(step) for s in samplers])
  return images[index], labels[index]


def exploit_and_explore(rng: np.random.Generator, key, scores, state, population_policies,
                        fraction: float = 0.25):
  """PBA's exploit/explore: the bottom ``fraction`` of trials (by ``scores``) each copy a
  random trial of the top ``fraction`` (weights, BatchNorm statistics, optimiser state and
  policy), then explore the copied policy. Returns (state, policies, [(loser, winner)]).
  The random streams (``rng`` in the state) are kept: a clone continues with its own."""
  scores = np.asarray(scores)
  population = len(scores)
  quarter = max(1, int(population * fraction)) if population > 1 else 0
  order = np.argsort(-scores, kind="stable")
  winners, losers = order[:quarter], order[population - quarter:]
  sources = np.arange(population)
  copies = []
  for loser in losers:
    winner = int(rng.choice(winners))
    sources[loser] = winner
    copies.append([int(loser), winner])
  sources_j = jnp.asarray(sources)
  copied = {k: (v if k in ("rng", "step") else jax.tree.map(lambda x: x[sources_j], v))
            for k, v in state.items()}
  new_policies = jnp.asarray(population_policies)[sources_j]
  explored = jax.vmap(policies.explore)(jax.random.split(key, population), new_policies)
  is_loser = jnp.zeros(population, bool).at[jnp.asarray(losers, jnp.int32)].set(True)
  new_policies = jnp.where(is_loser[:, None, None], explored, new_policies)
  return copied, new_policies, copies


@dataclasses.dataclass
class SearchResult:
  schedules: list            # per trial: [(start_epoch, policy [30, 2]), ...]
  final_scores: list         # validation accuracy per trial at the end
  best_trial: int
  history: list              # per exploit round: epoch, scores, copies

  @property
  def best_schedule(self):
    return self.schedules[self.best_trial]

  def to_json(self) -> dict:
    return {"best_trial": self.best_trial, "final_scores": self.final_scores,
            "history": self.history,
            "best_schedule": json.loads(policies.schedule_to_json(self.best_schedule)),
            "schedules": [json.loads(policies.schedule_to_json(s)) for s in self.schedules]}


def _schedules_to_meta(schedules):
  return [[[int(e), np.asarray(p).reshape(-1).tolist()] for e, p in s] for s in schedules]


def _schedules_from_meta(raw):
  return [[(int(e), np.asarray(p, np.int32).reshape(policies.NUM_TUPLES, 2)) for e, p in s]
          for s in raw]


def search(setup: MemberSetup, train_images, train_labels, val_images, val_labels, *,
           population: int = 16, epochs: int, batch_size: int, exploit_every: int = 3,
           seed: int = 0, workdir: str | None = None, teacher_variables=None, hparams=None,
           init_variables=None, eval_batch_size: int = 500, mesh: Mesh | None = None,
           mode: str = "vmap") -> SearchResult:
  """Runs PBA and returns every trial's schedule and the best one.

  Every ``exploit_every`` epochs (and at the end) all trials are scored on the validation
  images; between rounds the bottom quarter clones the top quarter and explores. With a
  ``workdir`` the population is checkpointed after every round (Orbax) and a rerun resumes
  from the newest round, reaching the same result.
  """
  from kd_jax.data.in_memory import EpochSampler
  from kd_jax.train import checkpoint

  mesh = mesh or make_population_mesh(population)
  image_shape = train_images.shape[1:]
  state = init_population(setup.model, setup.optimizer, image_shape,
                          [seed * 1000 + t for t in range(population)], init_variables)
  pop_policies = policies.zero_policy(population)
  schedules = [[(0, np.zeros((policies.NUM_TUPLES, 2), np.int32))] for _ in range(population)]
  history = []
  samplers = [EpochSampler(len(train_labels), batch_size, seed * 1000 + t)
              for t in range(population)]
  steps_per_epoch = samplers[0].steps_per_epoch
  store = checkpoint.RunCheckpoints(workdir, max_to_keep=2) if workdir else None
  epoch = 0
  if store is not None:
    # Trials step in lockstep: checkpoints hold one scalar step (RunCheckpoints' layout).
    restored = store.restore_latest({**state, "step": state["step"][0]})
    if restored is not None:
      state, meta = restored
      state = {**state, "step": jnp.full((population,), state["step"], jnp.int32)}
      pop_policies = jnp.asarray(meta["policies"], jnp.int32)
      schedules, history, epoch = _schedules_from_meta(meta["schedules"]), meta["history"], \
          meta["epoch"]
      logger.info("PBA resumed at epoch %d from %s", epoch, workdir)
  state = jax.device_put(state, _pop_sharding(mesh))
  step_fn = make_population_step(setup, mesh, mode)
  eval_fn = make_population_eval(setup.model, setup.mean, setup.std, mesh)
  hparams = {k: jnp.float32(v) for k, v in (hparams or {"temperature": 4.0, "ce_weight": 0.1,
                                                        "kd_weight": 0.9}).items()}
  teacher_variables = teacher_variables if teacher_variables is not None else {}
  step = epoch * steps_per_epoch  # trials step in lockstep: the host keeps the count
  while epoch < epochs:
    for _ in range(steps_per_epoch):
      images, labels = member_batches(samplers, step, train_images, train_labels)
      state, _ = step_fn(state, pop_policies, images, labels, teacher_variables, hparams)
      step += 1
    epoch += 1
    if epoch % exploit_every and epoch != epochs:
      continue
    scores = evaluate_population(eval_fn, state, val_images, val_labels, eval_batch_size)
    record = {"epoch": epoch, "scores": [round(float(s), 3) for s in scores], "copies": []}
    if epoch != epochs:
      rng = np.random.default_rng([seed, epoch])
      key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
      state, pop_policies, copies = exploit_and_explore(rng, key, scores, state, pop_policies)
      state = jax.device_put(state, _pop_sharding(mesh))
      record["copies"] = copies
      host_policies = np.asarray(pop_policies)
      previous = [list(s) for s in schedules]
      for loser, winner in copies:
        schedules[loser] = [entry for entry in previous[winner] if entry[0] < epoch]
      for trial in range(population):
        if not np.array_equal(schedules[trial][-1][1], host_policies[trial]):
          schedules[trial] = [e for e in schedules[trial] if e[0] < epoch] + [
              (epoch, host_policies[trial])]
    history.append(record)
    logger.info("PBA epoch %d: best %.2f, median %.2f", epoch, scores.max(),
                float(np.median(scores)))
    if store is not None:
      store.save({**state, "step": state["step"][0]}, {"step": step, "epoch": epoch,
                  "policies": np.asarray(pop_policies).tolist(),
                  "schedules": _schedules_to_meta(schedules), "history": history})
  if store is not None:
    store.wait()
    store.close()
  final = history[-1]["scores"]
  return SearchResult(schedules, final, int(np.argmax(final)), history)


def train_with_schedules(setup: MemberSetup, schedules, seeds, train_images, train_labels,
                         test_images, test_labels, *, epochs: int, batch_size: int,
                         teacher_variables=None, hparams=None, init_variables=None,
                         eval_batch_size: int = 500, mesh: Mesh | None = None,
                         mode: str = "vmap") -> dict:
  """Trains one model per (schedule, seed) pair as one population; returns per-member test
  accuracy after every epoch (``history``, [epochs, members]) and the final one.

  ``schedules[i]`` is member i's ``[(start_epoch, policy), ...]`` (epochs counted from 0);
  ``seeds[i]`` its seed (init, data order, augmentation randomness).
  """
  from kd_jax.data.in_memory import EpochSampler

  members = len(schedules)
  if len(seeds) != members:
    raise ValueError(f"{members} schedules but {len(seeds)} seeds; give one seed per member.")
  mesh = mesh or make_population_mesh(members)
  state = init_population(setup.model, setup.optimizer, train_images.shape[1:], seeds,
                          init_variables)
  state = jax.device_put(state, _pop_sharding(mesh))
  samplers = [EpochSampler(len(train_labels), batch_size, int(s)) for s in seeds]
  step_fn = make_population_step(setup, mesh, mode)
  eval_fn = make_population_eval(setup.model, setup.mean, setup.std, mesh)
  hparams = {k: jnp.float32(v) for k, v in (hparams or {"temperature": 4.0, "ce_weight": 0.1,
                                                        "kd_weight": 0.9}).items()}
  teacher_variables = teacher_variables if teacher_variables is not None else {}
  history, seconds, step = [], 0.0, 0
  for epoch in range(epochs):
    epoch_policies = jnp.asarray(np.stack([policies.policy_at(s, epoch) for s in schedules]))
    started = time.perf_counter()
    for _ in range(samplers[0].steps_per_epoch):
      images, labels = member_batches(samplers, step, train_images, train_labels)
      state, metrics = step_fn(state, epoch_policies, images, labels, teacher_variables,
                               hparams)
      step += 1
    jax.block_until_ready(metrics)
    seconds += time.perf_counter() - started
    history.append(evaluate_population(eval_fn, state, test_images, test_labels,
                                       eval_batch_size).tolist())
  return {"history": history, "final": history[-1], "train_seconds": seconds,
          "state": state}


def save_result(path: str, result: SearchResult) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(result.to_json(), f)
