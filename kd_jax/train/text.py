"""Text distillation: the compiled steps and the training loop for BERT-style encoders.

Same shape as the image side: ``make_text_train_step`` is one jitted function (batch sharded
over the mesh's ``"data"`` axis, parameters replicated, schedule values as arrays), and
``train_text(config, workdir)`` is one plain loop that resumes from its newest checkpoint.
Objectives are those of kd_jax.train.objectives with the hard-label term swapped for the
squared error on regression tasks (STS-B): KD then matches the teacher's score by squared
error, Continuation-KD's hinge is unchanged (it already works on raw outputs).

The extra view of ``backward_kd`` is kd_jax.backward.token_auxiliary_embeddings: auxiliary
sentences in each model's embedding space, labelled by the teacher (KD term only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd_jax import backward, losses
from kd_jax.data import text as text_data
from kd_jax.data.in_memory import EpochSampler
from kd_jax.models import bert
from kd_jax.train import checkpoint, loop, metrics, objectives, sharding

logger = logging.getLogger(__name__)
TEXT_FIELDS = ("input_ids", "token_type_ids", "attention_mask")


def text_objective(name: str, student_out, teacher_out, labels, hparams, regression: bool):
  """Per-example objective on the original sentences: kd_jax.train.objectives' objective
  for classes; for regression the squared error replaces cross-entropy (and, for KD, the
  KL to the teacher), the Continuation hinge staying as it is."""
  if not regression:
    return objectives.get_objective(name)(student_out, teacher_out, labels, hparams)
  hard = jnp.square(student_out[:, 0].astype(jnp.float32) - labels)
  if name == "ce":
    return hard
  if name == "kd":
    soft = jnp.mean(jnp.square(student_out - teacher_out), -1)
    return hparams["ce_weight"] * hard + hparams["kd_weight"] * soft
  if name in ("continuation", "annealing"):
    margin = 0.0 if name == "annealing" else hparams["margin"]
    hinge = losses.continuation_hinge(student_out, teacher_out, hparams["phi"], margin)
    return hparams["psi"] * hard + (1 - hparams["psi"]) * hinge
  raise ValueError(f"unknown objective {name!r}; valid names: {', '.join(objectives.OBJECTIVES)}.")


def make_text_optimizer(config, total_steps: int):
  """AdamW with linear warm-up to ``learning_rate`` and linear decay to 0 (BERT fine-tuning)."""
  warmup = int(config.warmup_fraction * total_steps)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
       optax.linear_schedule(config.learning_rate, 0.0, max(total_steps - warmup, 1))],
      [max(warmup, 1)])
  return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=config.weight_decay,
                     mask=lambda params: jax.tree.map(lambda x: x.ndim > 1, params)), schedule


def make_text_train_step(student: bert.BertClassifier, optimizer, method: objectives.Method,
                         mesh, teacher: bert.BertClassifier | None = None, view_options=None,
                         special_ids: tuple[int, ...] = (), regression: bool = False):
  """``step(state, batch, teacher_params, hparams) -> (state, metrics)``.

  ``batch``: input_ids, token_type_ids, attention_mask (int32 ``[B, L]``) and label.
  ``state``: step, params, batch_stats ({}), opt_state, rng (dropout keys are
  ``fold_in(rng, step)``). ``teacher_params`` may carry ``"_gram"``, the teacher's
  embedding Gram matrix, precomputed for token-level backward KD.
  """
  if method.needs_teacher and teacher is None:
    raise ValueError(f"method {method.name!r} needs a teacher; set config.teacher_workdir.")
  if method.view not in ("none", "backward"):
    raise ValueError(f"view {method.view!r} is for images; text methods take 'backward' "
                     "(token-level backward-pass KD) or none.")
  if method.view == "backward" and regression:
    raise ValueError("token-level backward KD needs class probabilities; STS-B is regression.")
  special = jnp.asarray(special_ids or (-1,), jnp.int32)

  def train_step(state, batch, teacher_params, hparams):
    key = jax.random.fold_in(state["rng"], state["step"])
    inputs = {k: batch[k] for k in TEXT_FIELDS}
    labels = batch["label"]
    teacher_out = teacher_gram = None
    if teacher is not None:
      teacher_params = dict(teacher_params)
      teacher_gram = teacher_params.pop("_gram", None)  # see train_text
      teacher_out = teacher.apply({"params": teacher_params}, **inputs, train=False)

    view = None
    if method.view == "backward":
      def teacher_fn(embeddings):
        return teacher.apply({"params": teacher_params}, None, inputs["token_type_ids"],
                             inputs["attention_mask"], word_embeddings=embeddings)

      def student_fn(embeddings):
        return student.apply({"params": state["params"]}, None, inputs["token_type_ids"],
                             inputs["attention_mask"], word_embeddings=embeddings)

      perturb = (inputs["attention_mask"] > 0) & ~jnp.isin(inputs["input_ids"], special)
      teacher_e, student_e = backward.token_auxiliary_embeddings(
          teacher_fn, student_fn, bert.word_embedding_matrix(teacher_params),
          bert.word_embedding_matrix(state["params"]), inputs["input_ids"], perturb,
          steps=view_options.steps, step_size=view_options.step_size,
          normalize=view_options.normalize, divergence=view_options.divergence,
          temperature=view_options.divergence_temperature,
          teacher_gram=teacher_gram)
      view = (student_e, teacher_fn(teacher_e))

    def loss_fn(params):
      out = student.apply({"params": params}, **inputs, train=True,
                          rngs={"dropout": jax.random.fold_in(key, 0)})
      loss = jnp.mean(text_objective(method.objective, out, teacher_out, labels, hparams,
                                     regression))
      if view is not None:
        view_out = student.apply({"params": params}, None, inputs["token_type_ids"],
                                 inputs["attention_mask"], word_embeddings=view[0], train=True,
                                 rngs={"dropout": jax.random.fold_in(key, 1)})
        loss = loss + hparams["view_weight"] * hparams["kd_weight"] * jnp.mean(
            losses.kd_kl(view_out, view[1], hparams["temperature"]))
      return loss, out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {**state, "step": state["step"] + 1, "opt_state": opt_state,
                 "params": optax.apply_updates(state["params"], updates)}
    return new_state, {"loss": loss}

  replicated = sharding.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(replicated, sharding.batch_sharded(mesh), replicated, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_text_predict(model: bert.BertClassifier, mesh):
  def predict(params, batch):
    return model.apply({"params": params}, *(batch[k] for k in TEXT_FIELDS), train=False)
  return jax.jit(predict, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def evaluate_text(predict, params, split: text_data.TextSplit, batch_size: int, mesh,
                  regression: bool) -> dict[str, float]:
  """Accuracy (classes) or Pearson/Spearman ×100 (regression) over the whole split."""
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  outputs = []
  for start in range(0, padded, batch_size):
    index = np.arange(start, start + batch_size) % n  # pad by wrapping; trimmed below
    batch = {k: getattr(split, k)[index] for k in TEXT_FIELDS}
    outputs.append(np.asarray(predict(params, sharding.global_batch(batch, mesh))))
  outputs = np.concatenate(outputs)[:n]
  if regression:
    from scipy import stats
    return {"pearson": 100 * float(stats.pearsonr(outputs[:, 0], split.labels)[0]),
            "spearman": 100 * float(stats.spearmanr(outputs[:, 0], split.labels)[0])}
  return {"accuracy": 100 * float(np.mean(outputs.argmax(-1) == split.labels))}


def _build_student(config, pretrained, num_labels, teacher_params, teacher_config, key):
  """The student described by ``config.student`` (see experiments/configs/text_common.py)."""
  s = config.student
  if s.init == "pretrained":  # the pretrained checkpoint itself (teacher role, or alone)
    return bert.load_pretrained(pretrained, num_labels=num_labels, key=key)
  if s.init == "teacher_layers":
    if teacher_params is None:
      raise ValueError("student.init='teacher_layers' needs a teacher (teacher_workdir) or "
                       "student.init='pretrained_layers'.")
    return bert.student_from_teacher(teacher_params, teacher_config, s.layers, key)
  if s.init == "pretrained_layers":
    model, params = bert.load_pretrained(pretrained, num_labels=num_labels, key=key)
    return bert.student_from_teacher(params, model.config, s.layers, key)
  if s.init == "random":
    base = bert.BertConfig.from_json(os.path.join(pretrained, "config.json"))
    student_config = dataclasses.replace(
        base, hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads, intermediate_size=s.intermediate_size,
        num_labels=num_labels)
    model = bert.BertClassifier(student_config)
    return model, bert.init_params(model, key)
  raise ValueError(f"unknown student.init {s.init!r}; valid names: pretrained, "
                   "pretrained_layers, teacher_layers, random.")


def load_text_teacher(teacher_workdir: str, mesh):
  """The fine-tuned teacher of a finished text run: (model, params)."""
  if not os.path.isdir(os.path.join(teacher_workdir or "", "checkpoints")):
    raise checkpoint.CheckpointError(
        f"no teacher checkpoints in {teacher_workdir!r}/checkpoints: fine-tune the teacher "
        "first (python -m experiments.distill_text --config=...:teacher).")
  store = checkpoint.RunCheckpoints(teacher_workdir, read_only=True)
  meta = store.read_meta()
  model = bert.BertClassifier(bert.BertConfig(**meta["model_config"]))
  template = sharding.replicate({"params": bert.init_params(model, jax.random.PRNGKey(0)),
                                 "batch_stats": {}}, mesh)
  variables, _ = store.restore_model(template)
  store.close()
  return model, variables["params"]


def train_text(config, workdir: str) -> dict:
  """Fine-tunes a teacher or distils a student on a text dataset; returns the summary.

  Evaluates after every epoch, keeps the best epoch by validation score (the papers'
  selection) and the last; checkpoints every epoch and resumes from the newest one.
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_data_mesh()
  method = objectives.get_method(config.method, config.view.name)
  pretrained = config.pretrained or bert.minilm_folder()
  tokenizer = text_data.load_tokenizer(pretrained)
  data = text_data.load_text_dataset(config.dataset, tokenizer, config.max_length,
                                     config.data_dir or None, config.max_train, config.max_test)
  regression = data.is_regression
  teacher = teacher_params = None
  if method.needs_teacher or config.student.init == "teacher_layers":
    teacher, teacher_params = load_text_teacher(config.teacher_workdir, mesh)
  model, params = _build_student(config, pretrained, data.num_labels, teacher_params,
                                 teacher.config if teacher else None,
                                 jax.random.PRNGKey(config.seed))
  sampler = EpochSampler(len(data.train), config.batch_size, config.seed)
  total_steps = sampler.steps_per_epoch * config.num_epochs
  optimizer, schedule = make_text_optimizer(config.optimizer, total_steps)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": {},
           "opt_state": optimizer.init(params),
           "rng": jax.random.PRNGKey(config.seed + 1_000_003)}
  state = sharding.replicate(state, mesh)
  if method.view == "backward":  # frozen teacher: its embedding Gram matrix once, not per step
    table = bert.word_embedding_matrix(teacher_params)
    teacher_params = {**teacher_params, "_gram": jax.jit(lambda e: e.T @ e)(table)}
  step_fn = make_text_train_step(model, optimizer, method, mesh, teacher, config.view,
                                 text_data.special_token_ids(tokenizer), regression)
  predict = make_text_predict(model, mesh)
  store = checkpoint.RunCheckpoints(workdir)
  history, train_seconds = [], 0.0
  restored = store.restore_latest(state)
  if restored is not None:
    state, meta = restored
    history, train_seconds = meta["history"], meta["train_seconds"]
    logger.info("resumed %s at step %d", workdir, int(state["step"]))
  writer = metrics.MetricWriter(workdir, resume_step=int(state["step"]))
  score_name = "pearson" if regression else "accuracy"
  step = int(state["step"])  # the host keeps the count: no device read per step
  start_epoch = step // sampler.steps_per_epoch
  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    hparams = sharding.replicate({k: jnp.float32(v) for k, v in loop.epoch_hparams(
        config, method, epoch, config.num_epochs).items()}, mesh)
    started = time.perf_counter()
    step_losses = []  # device scalars, read once at the end of the epoch
    for _ in range(sampler.steps_per_epoch):
      split = data.train.take(sampler.global_indices(step))
      batch = {k: getattr(split, k) for k in TEXT_FIELDS}
      batch["label"] = split.labels
      state, step_metrics = step_fn(state, sharding.global_batch(batch, mesh), teacher_params,
                                    hparams)
      step_losses.append(step_metrics["loss"])
      step += 1
    losses_sum = float(jnp.sum(jnp.stack(step_losses)))
    if not np.isfinite(losses_sum):
      raise FloatingPointError(f"training loss is not finite in epoch {epoch} (before step "
                               f"{step}); lower optimizer.learning_rate.")
    train_seconds += time.perf_counter() - started
    scores = evaluate_text(predict, state["params"], data.test, config.eval_batch_size, mesh,
                           regression)
    record = {"epoch": epoch, "step": step,
              "train_loss": losses_sum / sampler.steps_per_epoch,
              "learning_rate": float(schedule(step)), **scores}
    history.append(record)
    writer.write(step, "test", record)
    logger.info("epoch %d: %s", epoch, record)
    store.save(state, {"config": config.to_dict(), "history": history,
                       "train_seconds": train_seconds,
                       "model_config": dataclasses.asdict(model.config),
                       "finished": epoch == config.num_epochs, "step": step})
  store.wait()
  store.close()
  best = max(history, key=lambda r: r[score_name])
  summary = {"method": method.name, "dataset": data.name, "score": score_name,
             "final": history[-1][score_name], "best": best[score_name],
             "best_epoch": best["epoch"], "train_seconds": train_seconds,
             "student_parameters": bert.count_parameters(state["params"]),
             "num_train": len(data.train), "num_test": len(data.test)}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
