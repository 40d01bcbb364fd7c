"""KD with stronger augmentation (Wang et al., ICLR 2022): mixup, CutMix and CutMix-pick views.

The student is trained with KD on the batch x plus the KD term on an extra view x' made on
device inside the step; the teacher is re-run on x' and labels it (teacher-labelled mixing:
no mixed labels unless ``label_mixing``, the paper's comparison row). CutMix-pick draws R
CutMix views of the batch and keeps the B most informative ones.

Mixing happens after normalisation: both mixup (linear) and CutMix (pixel copy) commute with
the per-channel affine normalisation, so the result equals mixing raw pixels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kd_jax import augment, losses
from kd_jax.methods.base import View, ViewMaker

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
                     pool_rounds: int, score: str, n_pick: int | None) -> View:
  """CutMix-pick: the ``n_pick`` (None: batch size) most informative of R CutMix draws.

  The pool is R independent CutMix draws of the batch (R·B samples). Scores: the teacher's
  entropy at τ = 1 (default), the student's entropy at τ = 1 (student in inference mode, so
  scoring does not touch its BatchNorm statistics; the official code scores in training
  mode), or τ²·KL(p_T^τ ‖ p_S^τ). The teacher logits computed for scoring are reused for the
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


def mixup(*, alpha: float = 1.0, label_mixing: bool = False) -> ViewMaker:
  """The mixup view maker (λ ~ Beta(α, α))."""
  return ViewMaker(functools.partial(mixup_view, alpha=alpha), "mixup", label_mixing)


def cutmix(*, alpha: float = 1.0, label_mixing: bool = False) -> ViewMaker:
  """The CutMix view maker (λ ~ Beta(α, α), box of side √(1 − λ))."""
  return ViewMaker(functools.partial(cutmix_view, alpha=alpha), "cutmix", label_mixing)


def cutmix_pick(*, alpha: float = 1.0, pool_rounds: int = 2, score: str = "teacher_entropy",
                n_pick: int | None = None, label_mixing: bool = False) -> ViewMaker:
  """The CutMix-pick view maker: ``n_pick`` of ``pool_rounds`` CutMix draws by ``score``."""
  if score not in SCORES:
    raise ValueError(f"unknown pick score {score!r}; valid names: {', '.join(SCORES)}.")
  if pool_rounds < 1:
    raise ValueError(f"pool_rounds must be ≥ 1; got {pool_rounds}.")
  if n_pick is not None and n_pick < 1:
    raise ValueError(f"n_pick must be ≥ 1 or None (the batch size); got {n_pick}.")
  return ViewMaker(functools.partial(cutmix_pick_view, alpha=alpha, pool_rounds=pool_rounds,
                                     score=score, n_pick=n_pick), "cutmix_pick", label_mixing)
