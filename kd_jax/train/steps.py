"""The compiled training and evaluation steps.

``make_train_step`` returns one ``jax.jit`` function that does the whole distillation step
on device: uint8 batch → random crop/flip → normalise → frozen teacher in inference mode →
student in training mode → per-example objective → batch mean → optax update. Parameters
are replicated and the batch is sharded over the mesh's ``"data"`` axis. Everything that
changes during training (lr through the optimiser's step count, temperature and loss weights
through ``hparams``) is an array argument, so the step compiles once per run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from kd_jax import augment, backward, losses
from kd_jax.train import objectives, sharding, views


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """uint8 images → (augmented) normalised float images, on device.

  Training mode applies the standard view (zero-pad + random crop, horizontal flip) before
  normalising; evaluation mode only normalises.
  """
  mean: tuple
  std: tuple
  crop_pad: int
  flip: bool
  compute_dtype: Any

  def __call__(self, key, images, train: bool):
    if train and (self.crop_pad or self.flip):
      images = augment.random_crop_flip(key, images, pad=self.crop_pad, flip=self.flip)
    return augment.normalize(images, self.mean, self.std, self.compute_dtype)

  def valid_range(self):
    """Per-channel bounds of normalised pixels: where pixel values 0 and 255 land."""
    mean, std = jnp.asarray(self.mean), jnp.asarray(self.std)
    return (0.0 - mean) / std, (1.0 - mean) / std


def make_preprocess(mean, std, crop_pad: int, flip: bool, compute_dtype) -> Preprocess:
  return Preprocess(tuple(mean), tuple(std), crop_pad, flip, compute_dtype)


def make_train_step(model, optimizer: optax.GradientTransformation,
                    method: objectives.Method, mesh, preprocess, teacher_model=None,
                    view_options=None, pooled_view: bool = False):
  """Builds ``step(state, batch, teacher_variables, hparams) -> (state, metrics)``.

  Args:
    model: the student (Flax module, ``apply(variables, x, train)``).
    optimizer: optax transformation; the learning-rate schedule lives in its state.
    method: which objective on x and which extra view x' (kd_jax.train.views).
    mesh: device mesh with a ``"data"`` axis.
    preprocess: from ``make_preprocess``.
    teacher_model: Flax module of the frozen teacher, or None for methods without one.
    view_options: ``config.view`` (see kd_jax.train.views.make_view_maker).
    pooled_view: the extra view is read from ``state["aux_pool"]`` at ``batch["index"]``
      (a pool of generated samples refreshed every few epochs by ``make_pool_generator``)
      instead of being made every step.

  The student sees x and x' in one forward pass of the concatenated batch (so its
  BatchNorm statistics are those of both views together). The returned function donates
  ``state``. ``batch`` is ``{"image": uint8 [B,H,W,C], "label": int32 [B]}``;
  ``teacher_variables`` is ``{"params", "batch_stats"}`` (``{}`` without a teacher);
  ``hparams`` a dict of scalar arrays (temperature, ce_weight, kd_weight, view_weight, phi,
  psi, margin; see kd_jax.train.loop.epoch_hparams).
  """
  if method.needs_teacher and teacher_model is None:
    raise ValueError(f"method {method.name!r} needs a teacher; set config.teacher_workdir.")
  objective = objectives.get_objective(method.objective)
  view_maker = views.make_view_maker(method.view, view_options, preprocess.valid_range())
  label_mixing = bool(view_options.label_mixing) if view_maker else False

  def train_step(state, batch, teacher_variables, hparams):
    key = jax.random.fold_in(state["rng"], state["step"])
    images = preprocess(key, batch["image"], train=True)
    labels = batch["label"]
    # Everything before loss_fn is outside the parameter gradient: the frozen teacher and
    # the student's scoring/generation passes get no parameter updates. They stay
    # differentiable with respect to their inputs, which backward-pass KD needs.
    def teacher_fn(x):  # frozen teacher: inference-mode BatchNorm
      return teacher_model.apply(teacher_variables, x, train=False)

    teacher_logits = teacher_fn(images) if teacher_model is not None else None
    view = None
    if pooled_view:
      view = views.teacher_labelled(state["aux_pool"][batch["index"]], teacher_fn, labels)
    elif view_maker is not None:
      def student_fn(x):  # inference mode: no BatchNorm statistics update
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        return model.apply(variables, x, train=False)
      view = view_maker(jax.random.fold_in(key, 1), images, labels, teacher_fn, student_fn,
                        hparams)
    inputs = images if view is None else jnp.concatenate([images, view.images.astype(
        images.dtype)])

    def loss_fn(params):
      variables = {"params": params, "batch_stats": state["batch_stats"]}
      logits, updated = model.apply(variables, inputs, train=True, mutable=["batch_stats"])
      batch_size = labels.shape[0]
      loss = jnp.mean(objective(logits[:batch_size], teacher_logits, labels, hparams))
      if view is not None:
        loss = loss + views.view_loss(logits[batch_size:], view, hparams, label_mixing)
      return loss, (logits[:batch_size], updated.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {
        "step": state["step"] + 1,
        "params": optax.apply_updates(state["params"], updates),
        "batch_stats": batch_stats,
        "opt_state": opt_state,
        "rng": state["rng"],
        **({"aux_pool": state["aux_pool"]} if pooled_view else {}),
    }
    metrics = {"loss": loss,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels).astype(jnp.float32)}
    return new_state, metrics

  replicated = sharding.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(replicated, sharding.batch_sharded(mesh), replicated, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_pool_generator(model, teacher_model, preprocess: Preprocess, view_options, mesh,
                        chunk_size: int, num_examples: int):
  """Builds ``generate(state, teacher_variables, images) -> pool`` for pooled backward KD.

  The "augment the training set" reading of backward-pass KD: auxiliary samples grown from
  every (un-augmented) training image with the current student, in chunks of
  ``chunk_size`` under ``lax.map``. ``images``: uint8 ``[N, H, W, C]`` with N a multiple of
  ``chunk_size`` (padded); returns the normalised samples of the first ``num_examples``.
  """
  sample_options = views.backward_options(view_options, preprocess.valid_range())

  def generate(state, teacher_variables, images):
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    teacher_fn = lambda x: teacher_model.apply(teacher_variables, x, train=False)
    student_fn = lambda x: model.apply(variables, x, train=False)

    def one_chunk(chunk):
      x = preprocess(None, chunk, train=False)
      return backward.auxiliary_samples(teacher_fn, student_fn, x, **sample_options)

    chunks = images.reshape(-1, chunk_size, *images.shape[1:])
    pool = jax.lax.map(one_chunk, chunks).reshape(images.shape[0], *images.shape[1:])
    return pool[:num_examples]

  replicated = sharding.replicated(mesh)
  return jax.jit(generate, in_shardings=(replicated, replicated, replicated),
                 out_shardings=replicated)


def make_eval_step(model, mesh, preprocess, teacher_model=None):
  """Builds ``eval_step(variables, batch, teacher_variables) -> sums`` over a masked batch.

  Returns sums (not means) so that batches add up exactly: ``count``, ``correct``,
  ``loss`` (cross-entropy) and, with a teacher, ``agree`` (same top-1 as the teacher),
  ``kl`` (KL(p_T || p_S) at τ = 1) and ``teacher_correct``.
  """

  def eval_step(variables, batch, teacher_variables) -> dict[str, Any]:
    images = preprocess(None, batch["image"], train=False)
    labels, mask = batch["label"], batch["mask"]
    logits = model.apply(variables, images, train=False)
    predictions = jnp.argmax(logits, -1)
    sums = {
        "count": jnp.sum(mask),
        "correct": jnp.sum((predictions == labels) * mask),
        "loss": jnp.sum(losses.cross_entropy(logits, labels) * mask),
    }
    if teacher_model is not None:
      teacher_logits = teacher_model.apply(teacher_variables, images, train=False)
      teacher_predictions = jnp.argmax(teacher_logits, -1)
      sums["agree"] = jnp.sum((predictions == teacher_predictions) * mask)
      sums["kl"] = jnp.sum(losses.kd_kl(logits, teacher_logits, 1.0) * mask)
      sums["teacher_correct"] = jnp.sum((teacher_predictions == labels) * mask)
    return sums

  replicated = sharding.replicated(mesh)
  return jax.jit(eval_step, in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
                 out_shardings=replicated)
