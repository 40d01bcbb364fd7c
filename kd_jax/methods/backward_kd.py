"""Backward-pass KD (Jafari et al. 2023): auxiliary samples from the divergence's input gradient.

KD on x plus the KD term on x' = K steps from x along the normalised input gradient of the
teacher–student divergence D(T(x'), S(x')), both networks in inference mode; the teacher
labels x' (it has no known class). Three forms, all here:

  * images, per step (``image_view``): x' grown from the augmented batch with the current
    student, optionally projected into an ε-ball around x and clipped to valid pixels;
  * images, pooled (``make_pool_generator``): the "augment the training set" reading,
    samples for the whole training set regenerated every N epochs, read by index in the
    step (the pool lives in the train state, so a resumed run is exact);
  * text (``token_view``): auxiliary sentences in each model's embedding space through
    kd_jax.backward.token_auxiliary_embeddings, with special and padding tokens frozen and
    the teacher's embedding Gram matrix computed once (``teacher_constants``) and passed to
    the step as an explicit argument.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import backward
from kd_jax.methods.base import View, ViewMaker, teacher_labelled


def backward_view(key, images, labels, teacher_fn, student_fn, hparams, **sample_options) -> View:
  """x' = ``backward.auxiliary_samples(teacher_fn, student_fn, x, ...)``, teacher-labelled."""
  del key, hparams
  aux = backward.auxiliary_samples(teacher_fn, student_fn, images, **sample_options)
  return teacher_labelled(aux, teacher_fn, labels)


def sample_options(
  *,
  steps: int = 1,
  step_size: float = 0.03,
  normalize: str = "sign",
  epsilon: float | None = None,
  clip=None,
  divergence: str = "kl",
  divergence_temperature: float = 1.0,
) -> dict:
  """Checked ``backward.auxiliary_samples`` keywords. ``clip``: per-channel (low, high) of
  valid normalised inputs, or None."""
  if normalize not in backward.NORMALIZATIONS:
    raise ValueError(
      f"unknown backward normalize {normalize!r}; valid names: "
      f"{', '.join(backward.NORMALIZATIONS)}."
    )
  if divergence not in backward.DIVERGENCES:
    raise ValueError(
      f"unknown backward divergence {divergence!r}; valid names: {', '.join(backward.DIVERGENCES)}."
    )
  if steps < 1:
    raise ValueError(f"backward steps must be ≥ 1; got {steps}.")
  return dict(
    steps=steps,
    step_size=step_size,
    normalize=normalize,
    epsilon=epsilon,
    clip=clip,
    divergence=divergence,
    temperature=divergence_temperature,
  )


SAMPLE_OPTIONS = (
  "steps",
  "step_size",
  "normalize",
  "epsilon",
  "clip",
  "divergence",
  "divergence_temperature",
)


def image_view(
  *,
  steps: int = 1,
  step_size: float = 0.03,
  normalize: str = "sign",
  epsilon: float | None = None,
  clip=None,
  divergence: str = "kl",
  divergence_temperature: float = 1.0,
) -> ViewMaker:
  """The per-step backward view maker; keywords as ``sample_options``."""
  options = sample_options(
    steps=steps,
    step_size=step_size,
    normalize=normalize,
    epsilon=epsilon,
    clip=clip,
    divergence=divergence,
    divergence_temperature=divergence_temperature,
  )
  return ViewMaker(functools.partial(backward_view, **options), "backward")


def token_view_samples(
  key,
  inputs,
  labels,
  teacher_fn,
  student_fn,
  hparams,
  *,
  steps,
  step_size,
  normalize,
  divergence,
  temperature,
  special_ids,
  project_to_tokens=False,
) -> View:
  """Auxiliary sentences: the student's embeddings of x' as its input, the teacher's logits
  on its own embeddings of x'. With ``project_to_tokens``, x' is the nearest discrete
  sentence (``argmax_v X'``, METHODS.md's option), given to both models as token ids, so
  the student's word-embedding table also learns from it. ``teacher_fn`` / ``student_fn``
  are kd_jax.models.adapters.Bound (the embedding tables are read from their variables)."""
  del key, hparams
  special = jnp.asarray(special_ids or (-1,), jnp.int32)

  def embedded(bound):
    def forward(embeddings):
      return bound({**_without_ids(inputs), "word_embeddings": embeddings})

    return forward

  perturb = (inputs["attention_mask"] > 0) & ~jnp.isin(inputs["input_ids"], special)
  constants = teacher_fn.constants or {}
  teacher_table = teacher_fn.model.embedding_matrix(teacher_fn.variables)
  student_table = student_fn.model.embedding_matrix(student_fn.variables)
  samples = backward.token_auxiliary_embeddings(
    embedded(teacher_fn),
    embedded(student_fn),
    teacher_table,
    student_table,
    inputs["input_ids"],
    perturb,
    steps=steps,
    step_size=step_size,
    normalize=normalize,
    divergence=divergence,
    temperature=temperature,
    project_to_tokens=project_to_tokens,
    teacher_gram=constants.get("teacher_gram"),
  )
  if project_to_tokens:
    sentence = {**inputs, "input_ids": samples[-1]}  # the nearest token ids
    return View(
      sentence, teacher_fn(sentence), labels, labels, jnp.ones(labels.shape[:1], jnp.float32)
    )
  teacher_e, student_e = samples[:2]
  student_inputs = {**_without_ids(inputs), "word_embeddings": student_e}
  teacher_logits = teacher_fn({**_without_ids(inputs), "word_embeddings": teacher_e})
  return View(student_inputs, teacher_logits, labels, labels, jnp.ones(labels.shape, jnp.float32))


def _without_ids(inputs):
  return {k: v for k, v in inputs.items() if k != "input_ids"}


def token_view(
  *,
  steps: int = 1,
  step_size: float = 1.0,
  normalize: str = "l2",
  divergence: str = "kl",
  divergence_temperature: float = 1.0,
  special_ids: tuple[int, ...] = (),
  project_to_tokens: bool = False,
  epsilon: float | None = None,
  clip=None,
) -> ViewMaker:
  """The token-level backward view maker. ``special_ids``: token ids that never move.
  ``project_to_tokens``: train on the nearest discrete sentences instead of the relaxed
  ones (METHODS.md's option; off by default, as the spec's generation and the text results
  use the relaxed sentences). A token changes only where some entry of X' gains more than
  1 on the original's, which takes more than 1/2 of the step's squared L2 norm: with
  ``normalize="l2"`` (each step moves the whole sentence by η) fewer than 2(Kη)² tokens
  per sentence change, none for Kη < 1/√2, so raise the step with this option.
  ``epsilon`` and ``clip`` (the image view's ε-ball and pixel range, in the same config
  block) must be None: a relaxed sentence has neither."""
  for name, value in (("epsilon", epsilon), ("clip", clip)):
    if value is not None:
      raise ValueError(
        f"token-level backward KD takes no {name} (got {value!r}): relaxed one-hot "
        "sentences have no ε-ball or pixel range; leave it None."
      )
  if normalize == "sign":
    raise ValueError(
      "token-level backward KD takes normalize 'l2' or 'none' (the sign of "
      "a one-hot gradient leaves the simplex)."
    )
  options = sample_options(
    steps=steps, step_size=step_size, normalize=normalize, divergence=divergence
  )
  return ViewMaker(
    functools.partial(
      token_view_samples,
      steps=options["steps"],
      step_size=step_size,
      normalize=normalize,
      divergence=divergence,
      temperature=divergence_temperature,
      special_ids=tuple(int(i) for i in special_ids),
      project_to_tokens=bool(project_to_tokens),
    ),
    "backward",
  )


def teacher_constants(teacher_model, teacher_variables) -> dict:
  """What token-level backward KD precomputes once from the frozen teacher: ``E_TᵀE_T``."""
  table = teacher_model.embedding_matrix(teacher_variables)
  return {"teacher_gram": jax.jit(lambda e: e.T @ e)(table)}


def make_pool_generator(
  student, teacher, preprocess, options: dict, chunk_size: int, num_examples: int
):
  """``generate(state, teacher_variables, images) -> pool`` for pooled backward KD.

  Auxiliary samples grown from every (un-augmented) training image with the current
  student, in chunks of ``chunk_size`` under ``lax.map``. ``images``: uint8 ``[N, H, W, C]``
  with N a multiple of ``chunk_size`` (padded); returns the normalised samples of the first
  ``num_examples``. ``options``: ``sample_options`` keywords. Not jitted: the caller places it.
  """
  options = sample_options(**options)

  def generate(state, teacher_variables, images):
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    teacher_fn = lambda x: teacher.predict(teacher_variables, x)
    student_fn = lambda x: student.predict(variables, x)

    def one_chunk(chunk):
      x = preprocess(None, {"image": chunk}, None, train=False)
      return backward.auxiliary_samples(teacher_fn, student_fn, x, **options)

    chunks = images.reshape(-1, chunk_size, *images.shape[1:])
    pool = jax.lax.map(one_chunk, chunks).reshape(images.shape[0], *images.shape[1:])
    return pool[:num_examples]

  return generate


def pool_hook(
  student,
  teacher,
  teacher_variables,
  preprocess,
  options: dict,
  images,
  every: int,
  chunk_size: int,
  mesh,
):
  """Pooled backward KD's place in the loop: ``(initial pool, start_of_epoch)``.

  The pool (zeros until the first epoch) lives in the train state under ``aux_pool``, so it
  is checkpointed and a resumed run is exact; ``start_of_epoch(state, epoch)`` regenerates
  it from the current student at epochs 1, 1 + every, 1 + 2·every, ... ``images``: the
  uint8 training set, padded here to a multiple of ``chunk_size``.
  """
  from kd_jax.train import sharding

  padded = -(-len(images) // chunk_size) * chunk_size
  pool_images = sharding.replicate(np.concatenate([images, images[: padded - len(images)]]), mesh)
  replicated = sharding.replicated(mesh)
  generate = jax.jit(
    make_pool_generator(student, teacher, preprocess, options, chunk_size, len(images)),
    in_shardings=(replicated, replicated, replicated),
    out_shardings=replicated,
  )
  initial = sharding.replicate(
    jnp.zeros((len(images), *images.shape[1:]), preprocess.compute_dtype), mesh
  )

  def start_of_epoch(state, epoch):
    if (epoch - 1) % every:
      return state
    return {**state, "aux_pool": generate(state, teacher_variables, pool_images)}

  return initial, start_of_epoch
