"""The one training step and the one evaluation step, for images, text and populations.

``make_train_step`` builds the whole distillation step from three parts:

  * a model adapter (kd_jax.models.adapters) for the student and one for the frozen teacher:
    Linen image models with BatchNorm, BERT with dropout, or any apply function;
  * a preprocess (kd_jax.train.preprocess, kd_jax.methods.rolewise): host batch → inputs,
    random crop/flip, a PBA policy, or nothing for text;
  * a method (kd_jax.methods): the objective on x, an optional view maker for x', and the
    per-epoch values it reads from ``hparams``.

The step: fold the step count into the run's key → preprocess → frozen teacher in inference
mode → (view x' made with the teacher and the student in inference mode) → student in
training mode → per-example objective → batch mean (+ the KD term on x') → optax update.
Everything that changes during training (lr via the optimiser's step count, T, φ, ψ, a
policy via ``hparams``) is an array argument, so the step compiles once per run.
``jit_data_parallel`` compiles it with the batch sharded over the mesh's ``"data"`` axis;
``jit_population`` runs it for P trials at once (``vmap`` over a ``"pop"`` axis).

Keys derived from ``k = fold_in(rng, step)``: the preprocess uses ``k`` (its AutoAugment
and Cutout stages ``fold_in(k, preprocess.STANDARD_STAGES_KEY)``); the view maker
``fold_in(k, 1)``; the student's training-mode randomness (dropout) ``fold_in(k, 0)`` on x
and ``fold_in(k, 2)`` on x' when x' has its own forward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kd_jax import losses
from kd_jax.methods.base import Method, ViewMaker, teacher_labelled
from kd_jax.models.adapters import Bound
from kd_jax.train import sharding

POP_AXIS = "pop"
# The train step's count of labels outside [0, num_classes) in its batch (integer labels).
LABEL_ERRORS = "label_errors"


def make_train_step(
  student,
  optimizer: optax.GradientTransformation,
  method: Method,
  preprocess: Callable,
  *,
  teacher=None,
  view: ViewMaker | None = None,
  regression: bool = False,
  pooled_view: bool = False,
  joint_views: bool | None = None,
) -> Callable:
  """Builds ``step(state, batch, teacher_variables, hparams, teacher_constants)``.

  Args:
    student: model adapter of the student (kd_jax.models.adapters).
    optimizer: optax transformation; the learning-rate schedule lives in its state.
    method: objective and per-epoch values (kd_jax.methods.get_method).
    preprocess: ``(key, batch, hparams, train) -> inputs``.
    teacher: model adapter of the frozen teacher, or None for methods without one.
    view: the extra view's maker (kd_jax.methods.make_view), or None.
    regression: one output scored by squared error (GLUE STS-B) instead of classes.
    pooled_view: x' is read from ``state["aux_pool"]`` at ``batch["index"]`` (pooled
      backward KD, kd_jax.methods.backward_kd.make_pool_generator) instead of made by
      ``view``; ``view`` still gives its loss.
    joint_views: x and x' in one concatenated forward pass (True) or two passes (False);
      None: the student adapter's ``joint_views``.

  ``state``: ``{"step", "params", "batch_stats", "opt_state", "rng"}`` (+ ``aux_pool``);
  ``batch``: what ``preprocess`` reads plus ``label``; ``teacher_variables``:
  ``{"params", "batch_stats"}`` (``{}`` without a teacher); ``hparams``: scalar arrays
  (kd_jax.methods.hparams_at) plus a preprocess's own (a policy); ``teacher_constants``:
  values precomputed from the frozen teacher (``{}`` or
  kd_jax.methods.backward_kd.teacher_constants). Returns ``(state, {"loss", "accuracy",
  "label_errors"})``: no accuracy for regression; ``label_errors`` (integer labels only)
  counts the batch's labels outside [0, num_classes), on which the loop stops. Labels are
  class ids ``[batch]`` or one-hot / soft rows ``[batch, classes]``. The plain function:
  compile it with ``jit_data_parallel`` or ``jit_population``.
  """
  if method.needs_teacher and teacher is None:
    raise ValueError(f"method {method.name!r} needs a teacher; set config.teacher_workdir.")
  if method.view is not None and view is None:
    raise ValueError(
      f"method {method.name!r} has a view ({method.view!r}); pass its maker "
      "(kd_jax.methods.make_view)."
    )
  if pooled_view and view is None:
    raise ValueError("pooled_view needs the view maker whose loss the pooled samples get.")
  joint = student.joint_views if joint_views is None else joint_views

  def train_step(state, batch, teacher_variables, hparams, teacher_constants):
    key = jax.random.fold_in(state["rng"], state["step"])
    inputs = preprocess(key, batch, hparams, train=True)
    labels = batch["label"]
    # Everything before loss_fn is outside the parameter gradient: the frozen teacher and
    # the student's scoring/generation passes get no parameter updates. They stay
    # differentiable with respect to their inputs, which backward-pass KD needs.
    teacher_fn = teacher_logits = None
    if teacher is not None:
      teacher_fn = Bound(teacher, teacher_variables, teacher_constants)
      teacher_logits = teacher_fn(inputs)
    x_view = None
    if pooled_view:
      assert teacher_fn is not None  # a view needs a teacher (checked at build time)
      x_view = teacher_labelled(state["aux_pool"][batch["index"]], teacher_fn, labels)
    elif view is not None:
      student_fn = Bound(student, {"params": state["params"], "batch_stats": state["batch_stats"]})
      x_view = view(jax.random.fold_in(key, 1), inputs, labels, teacher_fn, student_fn, hparams)

    def loss_fn(params):
      variables = {"params": params, "batch_stats": state["batch_stats"]}
      n = labels.shape[0]
      view_logits = None
      if x_view is not None and joint:
        both = jax.tree.map(
          lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), inputs, x_view.inputs
        )
        all_logits, batch_stats = student.apply_train(variables, both, jax.random.fold_in(key, 0))
        logits, view_logits = all_logits[:n], all_logits[n:]
      else:
        logits, batch_stats = student.apply_train(variables, inputs, jax.random.fold_in(key, 0))
        if x_view is not None:
          view_logits, batch_stats = student.apply_train(
            {"params": params, "batch_stats": batch_stats},
            x_view.inputs,
            jax.random.fold_in(key, 2),
          )
      loss = jnp.mean(
        method.objective(logits, teacher_logits, labels, hparams, regression=regression)
      )
      if x_view is not None:
        assert view is not None  # x_view is made by, or pooled for, this view
        on_view = functools.partial(method.objective, regression=regression)
        loss = loss + view.loss(view_logits, x_view, hparams, objective=on_view)
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"]
    )
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {
      **state,
      "step": state["step"] + 1,
      "params": optax.apply_updates(state["params"], updates),
      "batch_stats": batch_stats,
      "opt_state": opt_state,
    }
    step_metrics = {"loss": loss}
    if not regression:
      integer_labels = jnp.issubdtype(labels.dtype, jnp.integer)
      classes = labels if integer_labels else jnp.argmax(labels, -1)  # one-hot or soft rows
      step_metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == classes).astype(jnp.float32)
      if integer_labels:
        # Inside jit an id outside [0, C) gives a NaN loss (or, at −1, the last class) with no
        # error; the loop raises on this count (checkify would cost every step a host sync).
        outside = (labels < 0) | (labels >= logits.shape[-1])
        step_metrics[LABEL_ERRORS] = jnp.sum(outside).astype(jnp.int32)
    return new_state, step_metrics

  return train_step


def jit_data_parallel(train_step: Callable, mesh: Mesh) -> Callable:
  """The step compiled once: state, teacher and hparams replicated, batch split over
  ``"data"``; the state is donated."""
  replicated = sharding.replicated(mesh)
  return jax.jit(
    train_step,
    in_shardings=(replicated, sharding.batch_sharded(mesh), replicated, replicated, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )


POPULATION_MODES = ("vmap", "unroll")


def make_population_mesh(population: int, devices=None) -> Mesh:
  """A ``("pop", "data")`` mesh: the trials split over as many devices as divide both the
  population and the device count, each trial's batch split over the rest. 16 trials on 8
  devices: 8 × 1; 1 trial on 8 devices: 1 × 8 (plain data parallelism)."""
  import numpy as np

  devices = np.asarray(jax.devices() if devices is None else devices)
  pop = max(d for d in range(1, devices.size + 1) if population % d == 0 and devices.size % d == 0)
  return Mesh(devices.reshape(pop, devices.size // pop), (POP_AXIS, sharding.DATA_AXIS))


def population_sharding(mesh: Mesh) -> NamedSharding:
  """Per-trial arrays (states, policies): split over ``"pop"``."""
  return NamedSharding(mesh, PartitionSpec(POP_AXIS))


def population_batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches ``[P, B, ...]``: trials over ``"pop"``, each trial's examples over ``"data"``."""
  return NamedSharding(mesh, PartitionSpec(POP_AXIS, sharding.DATA_AXIS))


def jit_population(
  train_step: Callable, mesh: Mesh, per_trial_hparams=("policy",), mode: str = "vmap"
) -> Callable:
  """The same step for P trials at once, compiled once.

  ``state`` and ``batch`` carry a leading trial axis (each trial its own parameters,
  optimiser state, random stream and batch), as do the ``per_trial_hparams`` entries (a
  policy per trial); the teacher, its constants and the other hparams are shared.
  ``mode="vmap"`` batches the trials into one program whose convolutions carry a population
  axis (what accelerators want); ``"unroll"`` places P copies of the single-trial step in
  the program (XLA:CPU runs batched-weight convolutions slowly; results/
  bench_population_cpu.md). The trial axis is split over the mesh's ``"pop"`` axis and each
  trial's batch over its ``"data"`` axis (``make_population_mesh``).
  """
  if mode not in POPULATION_MODES:
    raise ValueError(f"unknown population mode {mode!r}; valid: {', '.join(POPULATION_MODES)}.")
  pop, replicated = population_sharding(mesh), NamedSharding(mesh, PartitionSpec())

  def split_hparams(hparams):
    return (
      {k: v for k, v in hparams.items() if k in per_trial_hparams},
      {k: v for k, v in hparams.items() if k not in per_trial_hparams},
    )

  def one(state, batch, teacher_variables, own, shared, constants):
    return train_step(state, batch, teacher_variables, {**shared, **own}, constants)

  if mode == "vmap":
    batched = jax.vmap(one, in_axes=(0, 0, None, 0, None, None))
  else:

    def batched(state, batch, teacher_variables, own, shared, constants):
      trials = jax.tree.leaves(state["step"])[0].shape[0]
      take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
      outputs = [
        one(take(state, i), take(batch, i), teacher_variables, take(own, i), shared, constants)
        for i in range(trials)
      ]
      return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)

  compiled = jax.jit(
    batched,
    in_shardings=(pop, population_batch_sharding(mesh), replicated, pop, replicated, replicated),
    # per-trial metrics replicated: every process reads all trials' losses
    out_shardings=(pop, replicated),
    donate_argnums=(0,),
  )

  def population_step(state, batch, teacher_variables, hparams, teacher_constants):
    own, shared = split_hparams(hparams)
    return compiled(state, batch, teacher_variables, own, shared, teacher_constants)

  # the jitted function, whose compilations a run counts
  population_step.compiled = compiled  # pyright: ignore[reportFunctionMemberAccess]
  return population_step


def make_eval_step(
  student, preprocess: Callable, teacher=None, regression: bool = False
) -> Callable:
  """Builds ``eval_step(variables, batch, teacher_variables) -> sums`` over a masked batch.

  Sums (not means) so that batches and processes add up exactly. Classes: ``count``,
  ``correct``, ``loss`` (cross-entropy) and, with a teacher, ``agree`` (same top-1 as the
  teacher), ``kl`` (KL(p_T ‖ p_S) at τ = 1), ``teacher_correct``, and ``teacher_spread`` /
  ``teacher_chance`` (kd_jax.train.loop.check_teacher). Regression: ``count``,
  ``loss`` (squared error) and ``predictions`` (masked outputs, for Pearson/Spearman on the
  host). The plain function: compile it with ``jit_eval``.
  """

  def eval_step(variables, batch, teacher_variables) -> dict[str, Any]:
    inputs = preprocess(None, batch, None, train=False)
    labels, mask = batch["label"], batch["mask"]
    logits = student.predict(variables, inputs)
    if regression:
      return {
        "count": jnp.sum(mask),
        "loss": jnp.sum(jnp.square(logits[:, 0] - labels) * mask),
        "predictions": logits[:, 0],
      }
    predictions = jnp.argmax(logits, -1)
    sums = {
      "count": jnp.sum(mask),
      "correct": jnp.sum((predictions == labels) * mask),
      "loss": jnp.sum(losses.cross_entropy(logits, labels) * mask),
    }
    if teacher is not None:
      teacher_logits = teacher.predict(teacher_variables, inputs)
      teacher_predictions = jnp.argmax(teacher_logits, -1)
      sums["agree"] = jnp.sum((predictions == teacher_predictions) * mask)
      # For the loop's check of the teacher: 0 when its logits are the same for every
      # example (they do not depend on the input), and count / classes (chance level).
      spread = jnp.max(jnp.abs(teacher_logits - teacher_logits[:1]), axis=-1)
      sums["teacher_spread"] = jnp.sum(spread * mask)
      sums["teacher_chance"] = jnp.sum(mask) / teacher_logits.shape[-1]
      sums["kl"] = jnp.sum(losses.kd_kl(logits, teacher_logits, 1.0) * mask)
      sums["teacher_correct"] = jnp.sum((teacher_predictions == labels) * mask)
    return sums

  return eval_step


def jit_eval(eval_step: Callable, mesh: Mesh) -> Callable:
  """``eval_step`` under ``jax.jit``: batch split over ``mesh``, the rest replicated."""
  replicated = sharding.replicated(mesh)
  return jax.jit(
    eval_step,
    in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
    out_shardings=replicated,
  )
