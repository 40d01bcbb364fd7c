"""KD with stronger augmentation (Wang et al., ICLR 2022 / NeurIPS 2022): the views x'.

The student is trained with KD on the batch x plus the KD term on an extra view x' made on
device inside the step; the teacher is re-run on x' and labels it (teacher-labelled mixing:
no mixed labels unless ``label_mixing``, the paper's comparison row). CutMix-pick draws R
CutMix views of the batch and keeps the B most informative ones.

Mixing happens after normalisation: both mixup (linear) and CutMix (pixel copy) commute with
the per-channel affine normalisation, so the result equals mixing raw pixels.

The paper's study of nine schemes also uses x' = identity, flip, crop+flip, Cutout and
AutoAugment of x (``identity``, ``flip``, ``crop_flip``, ``cutout``, ``autoaugment``);
``randaugment`` adds RandAugment (Cubuk et al. 2020), the strong view of later logit-KD work.
Those that work on pixels (crop padding, AutoAugment) map the normalised batch back to
pixel values with ``input_range`` (the preprocess's ``valid_range()``: where pixel values 0
and 255 land), as the official code denormalises before its torchvision transforms. The
official code draws one crop, flip, Cutout square or AutoAugment sub-policy for the whole
batch (torchvision transforms a batched tensor with one draw); ``per_image=True`` (the
default) draws per image, as these augmentations are defined and used as standard
augmentation, and ``per_image=False`` is the official form.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from kd_jax import augment, policies, validation
from kd_jax.methods.base import View, ViewMaker

SCORES = augment.PICK_SCORES


def mixup_view(key, images, labels, teacher_fn, student_fn, hparams, *, alpha: float) -> View:
  """x' = mixup(x) with λ ~ Beta(α, α); the teacher is re-run on x'."""
  del student_fn, hparams
  mixed, perm, lam = augment.mixup(key, images, alpha)
  return View(mixed, teacher_fn(mixed), labels, labels[perm], jnp.full(labels.shape[:1], lam))


def cutmix_view(key, images, labels, teacher_fn, student_fn, hparams, *, alpha: float) -> View:
  """x' = CutMix(x); the teacher is re-run on x'."""
  del student_fn, hparams
  mixed, perm, lam = augment.cutmix(key, images, alpha)
  return View(mixed, teacher_fn(mixed), labels, labels[perm], jnp.full(labels.shape[:1], lam))


def cutmix_pick_view(
  key,
  images,
  labels,
  teacher_fn,
  student_fn,
  hparams,
  *,
  alpha: float,
  pool_rounds: int,
  score: str,
  n_pick: int | None,
) -> View:
  """CutMix-pick (kd_jax.augment.cutmix_pick): the ``n_pick`` (None: batch size) most
  informative of R CutMix draws of the batch.

  Scores: the teacher's entropy at τ = 1 (default), the student's entropy at τ = 1 (student
  in inference mode, so scoring does not touch its BatchNorm statistics; the official code
  scores in training mode), or τ²·KL(p_T^τ ‖ p_S^τ) at the KD temperature. The teacher
  logits computed for scoring are reused for the picked samples, so the pool costs R
  teacher forwards of the batch instead of one.
  """
  if score == "kl" and "temperature" not in hparams:
    raise ValueError(
      "the 'kl' pick score needs hparams['temperature'] (the KD temperature τ); "
      "pass hparams={'temperature': 4.0} or use score='teacher_entropy'."
    )
  picked = augment.cutmix_pick(
    key,
    images,
    score=score,
    teacher_fn=teacher_fn,
    student_fn=student_fn,
    temperature=hparams["temperature"] if score == "kl" else 1.0,
    alpha=alpha,
    pool_rounds=pool_rounds,
    n_pick=n_pick,
  )
  assert picked.teacher_logits is not None  # teacher_fn was given
  return View(
    picked.images, picked.teacher_logits, labels[picked.source], labels[picked.partner], picked.lam
  )


def _same_labels(images, teacher_fn, labels) -> View:
  """A view that keeps each image's own label (no mixing: λ = 1)."""
  lam = jnp.ones(labels.shape[:1], jnp.float32)
  return View(images, teacher_fn(images), labels, labels, lam)


def _pixel_map(input_range, view_name: str):
  """(scale, low) with pixels = (x − low) · scale, from the (low, high) of normalised inputs."""
  if input_range is None:
    raise ValueError(
      f"the {view_name} view works on pixel values: it needs input_range, the "
      "(low, high) per channel of normalised inputs (preprocess.valid_range())."
    )
  low, high = (jnp.asarray(v, jnp.float32) for v in input_range)
  return 255.0 / (high - low), low


def identity_view(key, images, labels, teacher_fn, student_fn, hparams) -> View:
  """x' = x: the KD term counted twice on the same batch (the study's baseline scheme)."""
  del key, student_fn, hparams
  return _same_labels(images, teacher_fn, labels)


def flip_view(key, images, labels, teacher_fn, student_fn, hparams, *, per_image: bool) -> View:
  """x' = x flipped horizontally with probability 1/2."""
  del student_fn, hparams
  flipped = augment.random_crop_flip(key, images, pad=0, flip=True, per_image=per_image)
  return _same_labels(flipped, teacher_fn, labels)


def crop_flip_view(
  key,
  images,
  labels,
  teacher_fn,
  student_fn,
  hparams,
  *,
  pad: int,
  flip: bool,
  per_image: bool,
  input_range,
) -> View:
  """x' = a random crop of x padded with ``pad`` black pixels, then a random flip."""
  del student_fn, hparams
  scale, low = _pixel_map(input_range, "crop_flip")
  del scale  # padding is black (pixel 0), the normalised value ``low``
  shifted = augment.random_crop_flip(
    key, images - low.astype(images.dtype), pad=pad, flip=flip, per_image=per_image
  )
  return _same_labels(shifted + low.astype(images.dtype), teacher_fn, labels)


def cutout_view(
  key, images, labels, teacher_fn, student_fn, hparams, *, size: int, per_image: bool
) -> View:
  """x' = Cutout(x): a ``size``-pixel square of the normalised batch set to 0 (the mean
  colour, as the official code multiplies the normalised batch by its mask)."""
  del student_fn, hparams
  return _same_labels(augment.cutout(key, images, size, per_image=per_image), teacher_fn, labels)


def autoaugment_view(
  key,
  images,
  labels,
  teacher_fn,
  student_fn,
  hparams,
  *,
  policy,
  fill,
  per_image: bool,
  input_range,
) -> View:
  """x' = AutoAugment(x) (kd_jax.policies.autoaugment_batch) on the pixel values of x."""
  del student_fn, hparams
  augmented = on_pixels(
    images,
    input_range,
    lambda pixels: policies.autoaugment_batch(key, pixels, policy, fill=fill, per_image=per_image),
  )
  return _same_labels(augmented, teacher_fn, labels)


def randaugment_view(
  key,
  images,
  labels,
  teacher_fn,
  student_fn,
  hparams,
  *,
  num_ops: int,
  magnitude: int,
  bins: int,
  random_magnitude: bool,
  fill,
  per_image: bool,
  input_range,
) -> View:
  """x' = RandAugment(x) (kd_jax.policies.randaugment_batch) on the pixel values of x."""
  del student_fn, hparams
  augmented = on_pixels(
    images,
    input_range,
    lambda pixels: policies.randaugment_batch(
      key,
      pixels,
      num_ops,
      magnitude,
      bins=bins,
      random_magnitude=random_magnitude,
      fill=fill,
      per_image=per_image,
    ),
  )
  return _same_labels(augmented, teacher_fn, labels)


def on_pixels(images, input_range, augment_pixels):
  """``augment_pixels`` applied to the pixel values of the normalised ``images``: mapped back
  to levels 0..255 with ``input_range`` (rounded to whole levels), augmented, normalised
  again in the dtype of ``images``."""
  scale, low = _pixel_map(input_range, "pixel")
  pixels = jnp.clip(jnp.round((images.astype(jnp.float32) - low) * scale), 0, 255)
  return (augment_pixels(pixels) / scale + low).astype(images.dtype)


def identity() -> ViewMaker:
  """The identity view maker (x' = x)."""
  return ViewMaker(identity_view, "identity")


def flip(*, per_image: bool = True) -> ViewMaker:
  """The horizontal-flip view maker."""
  return ViewMaker(functools.partial(flip_view, per_image=per_image), "flip")


def crop_flip(
  *, pad: int = 4, flip: bool = True, per_image: bool = True, input_range=None
) -> ViewMaker:
  """The crop+flip view maker: ``pad`` black pixels each side, random crop, random flip."""
  if pad < 0:
    raise ValueError(f"crop_flip pad must be ≥ 0; got {pad}.")
  _pixel_map(input_range, "crop_flip")
  return ViewMaker(
    functools.partial(
      crop_flip_view, pad=pad, flip=flip, per_image=per_image, input_range=input_range
    ),
    "crop_flip",
  )


def cutout(*, size: int = 8, per_image: bool = True) -> ViewMaker:
  """The Cutout view maker (``size``: 16 on CIFAR-10 and 8 on CIFAR-100 in the official
  code, which scale to 4 and 2 pixels on 8×8 digits). The square spans centre ± size//2,
  as the official code's, so an odd size cuts size − 1 pixels a side."""
  if size < 2:
    raise ValueError(
      f"cutout size must be ≥ 2 pixels (the square is centre ± size//2); got {size}."
    )
  return ViewMaker(functools.partial(cutout_view, size=size, per_image=per_image), "cutout")


def autoaugment(
  *, policy="cifar10", fill: float = 0.0, per_image: bool = True, input_range=None
) -> ViewMaker:
  """The AutoAugment view maker (``policy``: "cifar10" | "imagenet" | sub-policies; the
  official code uses cifar10 on CIFAR and imagenet on (Tiny) ImageNet)."""
  policies.encode_autoaugment(policy)  # checks the policy
  _pixel_map(input_range, "autoaugment")
  return ViewMaker(
    functools.partial(
      autoaugment_view, policy=policy, fill=fill, per_image=per_image, input_range=input_range
    ),
    "autoaugment",
  )


def dual_view(
  key, images, labels, teacher_fn, student_fn, hparams, *, strong: ViewMaker, cutout_size: int
) -> View:
  """x' = the strong view of x (``strong``), then Cutout of ``cutout_size`` pixels (0: none);
  the teacher labels x' as the student sees it."""
  strong_key, cutout_key = jax.random.split(key)
  made = strong(strong_key, images, labels, teacher_fn, student_fn, hparams)
  if not cutout_size:
    return made
  # The teacher labels the cut images; under jit a strong view's own last teacher pass on the
  # uncut ones is dead code and dropped (passes it scored with, as CutMix-pick's, remain).
  cut = augment.cutout(cutout_key, made.inputs, cutout_size)
  return made._replace(inputs=cut, teacher_logits=teacher_fn(cut))


DUAL_TERMS = ("objective", "kd")
# Views whose samples mix two images (their hard label is ambiguous).
MIXING_VIEWS = ("mixup", "cutmix", "cutmix_pick")


def dual(
  *,
  strong: str | ViewMaker = "randaugment",
  strong_options: Mapping[str, Any] | None = None,
  cutout_size: int = 0,
  term: str = "objective",
  input_range=None,
) -> ViewMaker:
  """The weak/strong dual view maker: x is the weak view (the standard crop/flip), x' a
  strong one, and the student learns from the teacher on both.

  ``strong``: a view name (made with ``strong_options`` and ``input_range``; the default,
  RandAugment) or any view maker; ``cutout_size``: Cutout after it (the mean colour, as
  the standard stage), 0 for none. ``term``: what the student gets on x' —
  ``"objective"`` (default) the method's whole objective, as on x (CE and KD on both views,
  as the multi-level KD code trains: kd_jax.methods.mlkd), or ``"kd"`` the view's KD term
  alone (as Wang et al.'s views).
  """
  if term not in DUAL_TERMS:
    raise ValueError(f"unknown dual term {term!r}; valid: {', '.join(DUAL_TERMS)}.")
  if cutout_size < 0 or cutout_size == 1:
    raise ValueError(
      f"dual cutout_size must be 0 (none) or ≥ 2 pixels (the square is centre ± size//2); "
      f"got {cutout_size}."
    )
  if isinstance(strong, str):
    from kd_jax import methods  # the registry imports this module

    if strong == "dual":
      raise ValueError("the dual view's strong view cannot be another dual view.")
    maker = methods.make_view(strong, "image", input_range=input_range, **(strong_options or {}))
    if maker is None:
      raise ValueError("the dual view needs a strong view; got 'none'.")
    strong = maker
  elif strong_options:
    raise ValueError("strong_options configure a strong view given by name, not a view maker.")
  if term == "objective" and (strong.label_mixing or strong.name in MIXING_VIEWS):
    raise ValueError(
      f"the dual view's objective on x' takes one label per image; the {strong.name} view "
      "mixes two: use term='kd' (the teacher-labelled KD term) with a mixing strong view."
    )
  return ViewMaker(
    functools.partial(dual_view, strong=strong, cutout_size=cutout_size),
    "dual",
    strong.label_mixing,
    term,
  )


def randaugment(
  *,
  num_ops: int = 2,
  magnitude: int = 9,
  bins: int = policies.RANDAUGMENT_BINS,
  random_magnitude: bool = False,
  fill: float = 0.0,
  per_image: bool = True,
  input_range=None,
) -> ViewMaker:
  """The RandAugment view maker: ``num_ops`` operations at magnitude bin ``magnitude`` of
  ``bins`` per image (torchvision's defaults N = 2, M = 9 of 31; ``random_magnitude``: a
  bin drawn from 0..magnitude per operation, as the MLKD code's strong view)."""
  policies.check_randaugment(num_ops, magnitude, bins)
  _pixel_map(input_range, "randaugment")
  return ViewMaker(
    functools.partial(
      randaugment_view,
      num_ops=num_ops,
      magnitude=magnitude,
      bins=bins,
      random_magnitude=random_magnitude,
      fill=fill,
      per_image=per_image,
      input_range=input_range,
    ),
    "randaugment",
  )


def mixup(*, alpha: float = 1.0, label_mixing: bool = False) -> ViewMaker:
  """The mixup view maker (λ ~ Beta(α, α))."""
  validation.check_positive("mixup alpha", alpha)
  return ViewMaker(functools.partial(mixup_view, alpha=alpha), "mixup", label_mixing)


def cutmix(*, alpha: float = 1.0, label_mixing: bool = False) -> ViewMaker:
  """The CutMix view maker (λ ~ Beta(α, α), box of side √(1 − λ))."""
  validation.check_positive("cutmix alpha", alpha)
  return ViewMaker(functools.partial(cutmix_view, alpha=alpha), "cutmix", label_mixing)


def cutmix_pick(
  *,
  alpha: float = 1.0,
  pool_rounds: int = 2,
  score: str = "teacher_entropy",
  n_pick: int | None = None,
  label_mixing: bool = False,
) -> ViewMaker:
  """The CutMix-pick view maker: ``n_pick`` of ``pool_rounds`` CutMix draws by ``score``."""
  if score not in SCORES:
    raise ValueError(f"unknown pick score {score!r}; valid names: {', '.join(SCORES)}.")
  validation.check_positive("cutmix_pick alpha", alpha)
  if pool_rounds < 1:
    raise ValueError(f"pool_rounds must be ≥ 1; got {pool_rounds}.")
  if n_pick is not None and n_pick < 1:
    raise ValueError(f"n_pick must be ≥ 1 or None (the batch size); got {n_pick}.")
  return ViewMaker(
    functools.partial(
      cutmix_pick_view, alpha=alpha, pool_rounds=pool_rounds, score=score, n_pick=n_pick
    ),
    "cutmix_pick",
    label_mixing,
  )
