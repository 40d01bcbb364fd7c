"""View makers: extra views x' of a batch, made on device inside the training step.

A view maker is ``(key, images, labels, teacher_fn, student_fn, hparams) -> View``: it gets the
normalised, already crop/flipped batch ``x``, the frozen teacher and the student in inference
mode (both ``x -> logits``, no gradient), and returns the extra view with the teacher's logits
on it. The step adds ``view_weight · kd_weight · τ²·KL(p_T^τ(x') || p_S^τ(x'))`` to the
objective on ``x`` — the teacher-labelled mixing of Wang et al. (2022): x' gets only the KD
term, never the mixed labels. ``label_mixing=True`` adds the mixed-label cross-entropy
``ce_weight · [λ·CE(S(x'), y) + (1 − λ)·CE(S(x'), y[perm])]`` on x' as well (the paper's
comparison row, which it found to hurt).

Mixing happens after normalisation: both mixup (linear) and CutMix (pixel copy) commute with
the per-channel affine normalisation, so the result equals mixing raw pixels.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from kd_jax import augment, backward, losses


class View(NamedTuple):
  """An extra view of ``n`` samples and what its loss needs."""
  images: jax.Array          # [n, H, W, C]
  teacher_logits: jax.Array  # [n, classes]
  labels: jax.Array          # [n] label of the image each sample is mostly made of
  partner_labels: jax.Array  # [n] label of the image mixed in
  lam: jax.Array             # [n] weight of ``labels`` (kept-area fraction for CutMix)


SCORES = ("teacher_entropy", "student_entropy", "kl")


def mixup_view(key, images, labels, teacher_fn, student_fn, hparams, *, alpha: float) -> View:
  """x' = mixup(x) with λ ~ Beta(α, α); the teacher is re-run on x'."""
  del student_fn, hparams
  mixed, perm, lam = augment.mixup(key, images, alpha)
  return View(mixed, teacher_fn(mixed), labels, labels[perm], jnp.full(labels.shape, lam))


def cutmix_view(key, images, labels, teacher_fn, student_fn, hparams, *, alpha: float) -> View:
  """x' = CutMix(x); the teacher is re-run on x'."""
  del student_fn, hparams
  mixed, perm, lam = augment.cutmix(key, images, alpha)
  return View(mixed, teacher_fn(mixed), labels, labels[perm], jnp.full(labels.shape, lam))


def cutmix_pick_view(key, images, labels, teacher_fn, student_fn, hparams, *, alpha: float,
                     pool_rounds: int, score: str, n_pick: int) -> View:
  """CutMix-pick (Wang et al. 2022): the ``n_pick`` most informative of R CutMix draws.

  The pool is R independent CutMix draws of the batch (R·B samples). Scores: the teacher's
  entropy at τ = 1 (default), the student's entropy at τ = 1 (student in inference mode, so
  scoring does not touch its BatchNorm statistics; the official code scores in training
  mode), or τ²·KL(p_T^τ || p_S^τ). The teacher logits computed for scoring are reused for the
  picked samples, so the pool costs R teacher forwards of the batch instead of one.
  """
  batch = labels.shape[0]
  mixed, perms, lams = jax.vmap(lambda k: augment.cutmix(k, images, alpha))(
      jax.random.split(key, pool_rounds))
  pool = mixed.reshape(pool_rounds * batch, *images.shape[1:])
  pool_labels = jnp.tile(labels, pool_rounds)
  pool_partners = labels[perms.reshape(-1)]
  pool_lam = jnp.repeat(lams, batch)

  teacher_logits = None
  if score == "teacher_entropy":
    teacher_logits = teacher_fn(pool)
    scores = losses.entropy(teacher_logits, 1.0)
  elif score == "student_entropy":
    scores = losses.entropy(student_fn(pool), 1.0)
  elif score == "kl":
    teacher_logits = teacher_fn(pool)
    scores = losses.kd_kl(student_fn(pool), teacher_logits, hparams["temperature"])
  else:
    raise ValueError(f"unknown pick score {score!r}; valid names: {', '.join(SCORES)}.")
  picked = augment.pick_top_indices(scores, n_pick or batch)
  picked_images = pool[picked]
  picked_teacher = teacher_fn(picked_images) if teacher_logits is None else teacher_logits[picked]
  return View(picked_images, picked_teacher, pool_labels[picked], pool_partners[picked],
              pool_lam[picked])


def backward_options(options, input_range) -> dict:
  """``auxiliary_samples`` keyword arguments from ``config.view``."""
  if options.normalize not in backward.NORMALIZATIONS:
    raise ValueError(f"unknown view.normalize {options.normalize!r}; valid names: "
                     f"{', '.join(backward.NORMALIZATIONS)}.")
  if options.divergence not in backward.DIVERGENCES:
    raise ValueError(f"unknown view.divergence {options.divergence!r}; valid names: "
                     f"{', '.join(backward.DIVERGENCES)}.")
  return dict(steps=options.steps, step_size=options.step_size, normalize=options.normalize,
              epsilon=options.epsilon or None,
              clip=input_range if options.clip else None, divergence=options.divergence,
              temperature=options.divergence_temperature)


def teacher_labelled(images, teacher_fn, labels) -> View:
  """A view of generated samples: labelled by the teacher only (their class is unknown)."""
  return View(images, teacher_fn(images), labels, labels, jnp.ones(labels.shape, jnp.float32))


def backward_view(key, images, labels, teacher_fn, student_fn, hparams, **sample_options) -> View:
  """Backward-pass KD (Jafari et al. 2023): x' = auxiliary samples grown from x.

  K steps along the normalised input gradient of D(T(x'), S(x')), both networks in
  inference mode, optionally projected into an ε-ball around x and clipped to the valid
  input range; the teacher labels x' (no hard-label term: x' has no known label).
  Regenerated every step, from the current student (see ``config.view.pool_every_epochs``
  for the pool alternative).
  """
  del key, hparams
  aux = backward.auxiliary_samples(teacher_fn, student_fn, images, **sample_options)
  return teacher_labelled(aux, teacher_fn, labels)


VIEW_NAMES = ("none", "mixup", "cutmix", "cutmix_pick", "backward")


def make_view_maker(name: str, options, input_range=None) -> Callable | None:
  """Binds a view maker's static options (an ml_collections ConfigDict ``config.view``).

  ``input_range``: per-channel (low, high) of valid normalised inputs, used by the backward
  view when ``options.clip`` is set.
  """
  if name == "none":
    return None
  if name == "mixup":
    return functools.partial(mixup_view, alpha=options.alpha)
  if name == "cutmix":
    return functools.partial(cutmix_view, alpha=options.alpha)
  if name == "cutmix_pick":
    if options.score not in SCORES:
      raise ValueError(f"unknown pick score {options.score!r}; valid names: {', '.join(SCORES)}.")
    if options.pool_rounds < 1:
      raise ValueError(f"view.pool_rounds must be ≥ 1; got {options.pool_rounds}.")
    return functools.partial(cutmix_pick_view, alpha=options.alpha,
                             pool_rounds=options.pool_rounds, score=options.score,
                             n_pick=options.n_pick)
  if name == "backward":
    return functools.partial(backward_view, **backward_options(options, input_range))
  raise ValueError(f"unknown view {name!r}; valid names: {', '.join(VIEW_NAMES)}.")


def view_loss(student_logits, view: View, hparams, label_mixing: bool):
  """Batch-mean loss on x': weighted KD term, plus mixed-label CE if ``label_mixing``."""
  kd = losses.kd_kl(student_logits, view.teacher_logits, hparams["temperature"])
  loss = hparams["view_weight"] * hparams["kd_weight"] * jnp.mean(kd)
  if label_mixing:
    ce = (view.lam * losses.cross_entropy(student_logits, view.labels)
          + (1 - view.lam) * losses.cross_entropy(student_logits, view.partner_labels))
    loss = loss + hparams["ce_weight"] * jnp.mean(ce)
  return loss
