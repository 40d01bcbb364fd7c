"""Optimisers: SGD with a multi-step schedule (CIFAR protocols), AdamW with warm-up (BERT) and
Adam with L2 weight decay and a multi-step schedule (role-wise KD's official code).

``sgd``, the field's CIFAR protocol (RepDistiller): lr 0.05, momentum 0.9, weight decay 5e-4 on
every parameter (PyTorch's ``weight_decay``: ``wd·w`` added to the gradient before momentum),
lr × 0.1 at epochs 150, 180 and 210 of 240. optax's ``sgd`` keeps the momentum buffer
``t ← g + μ·t`` and updates by ``−lr·t``, exactly like ``torch.optim.SGD``.

``adamw``, BERT fine-tuning: AdamW (β 0.9/0.999, ε 1e-6, decoupled weight decay on matrices
only, not on biases and LayerNorm scales) with a linear warm-up over ``warmup_fraction`` of
the steps to ``learning_rate`` and a linear decay to 0.

``adam``, role-kd's (bigaidream-projects/role-kd, ``pba/kd/op_util.py``,
``Optimizer_w_MHGD``): Adam (β 0.9/0.999, ε ``adam_eps``, role-kd's 1e-5) on the loss plus
an L2 penalty ``wd/2·Σ w²`` over the weight matrices and kernels only (their ``'weights'``
variables; not biases nor BatchNorm), i.e. ``wd·w`` added to the gradient before the moments
(torch's ``Adam(weight_decay=...)`` rule, not AdamW's decoupled decay), with the same
multi-step schedule as ``sgd`` (role-kd: lr × 0.1 at 30 %, 60 % and 80 % of the epochs).
role-kd runs TensorFlow's Adam, which adds ε to the uncorrected √v; optax adds it to the
bias-corrected √v̂: the two differ by ε·(1/√(1−β2^t) − 1), which only matters while
√v̂ is itself near ε.

``clip_global_norm`` (any optimiser; None = off): the loss gradient is first scaled to at
most that global L2 norm (``optax.clip_by_global_norm``), before weight decay and the
optimiser. With None the optimisers are exactly those without the key.

The ImageNet recipes' options (Goyal et al. 2017, torchvision's references), for any of the
three optimisers; each one's default leaves the optimisers above exactly as they were:

- ``schedule``: "" (the optimiser's own: "step" for sgd and adam, "linear" for adamw),
  "step" (× ``lr_decay`` at each of ``lr_milestones``), "cosine" (half a cosine from the peak
  down to 0 after the last step) or "linear" (likewise linearly; with BERT's warm-up over
  ``warmup_fraction`` of the steps, which starts at 0).
- ``warmup_epochs`` (step and cosine schedules): the lr rises linearly to its peak over that
  many epochs, reaching ``(s + 1)/w`` of it at step s so that no step is taken with lr 0. It
  is not multiplied by ``epoch_factor`` (a warm-up is about the first steps, not the run's
  length); the cosine's length is the whole (multiplied) run.
- ``decay_norm_and_bias``: None (the optimiser's own: sgd decays every parameter, as
  PyTorch's ``weight_decay`` does; adam and adamw only kernels) or True / False: whether
  parameters with at most one dimension (BatchNorm and LayerNorm scales and shifts, biases)
  are decayed as well.
- ``lr_reference_batch``: 0 uses ``learning_rate`` as given; N > 0 scales it linearly with the
  global batch, ``learning_rate · global_batch / N`` (Goyal et al.'s rule: ImageNet's
  lr 0.1 is for batch 256).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

OPTIMIZER_NAMES = ("sgd", "adamw", "adam")
SCHEDULE_NAMES = ("step", "cosine", "linear")
_OWN_SCHEDULE = {"sgd": "step", "adam": "step", "adamw": "linear"}
_DECAYS_NORM_AND_BIAS = {"sgd": True, "adam": False, "adamw": False}


def multistep_schedule(
  base_lr: float, milestones: Sequence[int], decay: float, steps_per_epoch: int
) -> optax.Schedule:
  """lr for the update at step s: ``base_lr · decay^(#milestones ≤ s // steps_per_epoch)``."""
  boundaries: dict[int, float] = {}
  for milestone in milestones:
    boundary = int(milestone) * steps_per_epoch
    boundaries[boundary] = boundaries.get(boundary, 1.0) * decay
  return optax.piecewise_constant_schedule(base_lr, boundaries)


def warmup_linear_decay_schedule(
  learning_rate: float, total_steps: int, warmup_fraction: float
) -> optax.Schedule:
  """0 → ``learning_rate`` linearly over ``int(warmup_fraction·total_steps)`` steps (at
  least 1), then linearly to 0 at ``total_steps``."""
  warmup = max(int(warmup_fraction * total_steps), 1)
  return optax.join_schedules(
    [
      optax.linear_schedule(0.0, learning_rate, warmup),
      optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1)),
    ],
    [warmup],
  )


def with_warmup(schedule: optax.Schedule, warmup_steps: int, peak: float) -> optax.Schedule:
  """``schedule`` after a linear warm-up: ``peak·(s + 1)/warmup_steps`` for the first
  ``warmup_steps`` steps (the last of them at the peak), then ``schedule(s)`` (its own step
  count, not restarted)."""
  if warmup_steps <= 0:
    return schedule

  def warmed_up(step: ArrayLike) -> jax.Array:
    step = jnp.asarray(step)
    return jnp.where(step < warmup_steps, peak * (step + 1) / warmup_steps, schedule(step))

  return warmed_up


def cosine_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
  """Linear warm-up (``with_warmup``) then ``base_lr·½(1 + cos(π·t))``, t going from 0 after
  the warm-up to 1 at ``total_steps``."""
  decay = optax.cosine_decay_schedule(base_lr, max(total_steps - warmup_steps, 1))
  return with_warmup(lambda step: decay(step - warmup_steps), warmup_steps, base_lr)


def make_optimizer(
  *,
  name: str = "sgd",
  learning_rate: float,
  steps_per_epoch: int,
  num_epochs: int | None = None,
  momentum: float = 0.9,
  nesterov: bool = False,
  weight_decay: float = 0.0,
  lr_milestones: Sequence[int] = (),
  lr_decay: float = 0.1,
  warmup_fraction: float = 0.1,
  epoch_factor: int = 1,
  clip_global_norm: float | None = None,
  adam_eps: float = 1e-5,
  schedule: str = "",
  warmup_epochs: float = 0.0,
  decay_norm_and_bias: bool | None = None,
  lr_reference_batch: int = 0,
  global_batch: int | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser ``name`` ("sgd" | "adamw" | "adam") and its learning-rate schedule.

  ``epoch_factor`` k multiplies the sgd / adam milestones, for runs whose epochs were
  multiplied by k (Wang et al.); ``num_epochs`` (already multiplied) sets adamw's decay
  length. ``clip_global_norm`` clips the gradient's global norm first (None: no clipping).
  ``schedule``, ``warmup_epochs``, ``decay_norm_and_bias`` and ``lr_reference_batch`` (with
  ``global_batch``, the batch summed over every device and process): the module docstring.
  Keys that the chosen optimiser does not read are ignored (one config block serves all):
  ``momentum`` and ``nesterov`` (sgd), ``adam_eps`` (adam), ``warmup_fraction`` (the linear
  schedule), ``lr_milestones`` and ``lr_decay`` (the step schedule).
  """
  if name not in OPTIMIZER_NAMES:
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}.")
  if not isinstance(epoch_factor, int) or epoch_factor < 1:
    raise ValueError(f"epoch_factor must be a positive int; got {epoch_factor!r}.")
  if clip_global_norm is not None and not clip_global_norm > 0:
    raise ValueError(f"clip_global_norm must be positive or None; got {clip_global_norm!r}.")
  schedule = schedule or _OWN_SCHEDULE[name]
  if schedule not in SCHEDULE_NAMES:
    raise ValueError(
      f"unknown lr schedule {schedule!r}; valid: {', '.join(SCHEDULE_NAMES)} "
      "('' for the optimizer's own)."
    )
  if warmup_epochs < 0:
    raise ValueError(f"warmup_epochs must be >= 0; got {warmup_epochs!r}.")
  if warmup_epochs and schedule == "linear":
    raise ValueError(
      "warmup_epochs is for the step and cosine schedules; the linear schedule "
      "warms up over warmup_fraction of the steps."
    )
  if not isinstance(lr_reference_batch, int) or lr_reference_batch < 0:
    raise ValueError(
      f"lr_reference_batch must be an int >= 0 (0: no scaling); got {lr_reference_batch!r}."
    )
  if lr_reference_batch:
    if not global_batch:
      raise ValueError("lr_reference_batch scales the lr with the global batch: pass global_batch.")
    learning_rate = learning_rate * global_batch / lr_reference_batch
  if decay_norm_and_bias is None:
    decay_norm_and_bias = _DECAYS_NORM_AND_BIAS[name]
  lr_schedule = _schedule(
    schedule,
    learning_rate,
    steps_per_epoch,
    num_epochs,
    lr_milestones,
    lr_decay,
    warmup_fraction,
    warmup_epochs,
    epoch_factor,
  )
  optimizer = _optimizer(
    name, lr_schedule, momentum, nesterov, weight_decay, decay_norm_and_bias, adam_eps
  )
  if clip_global_norm is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(clip_global_norm), optimizer)
  return optimizer, lr_schedule


def _schedule(
  name,
  learning_rate,
  steps_per_epoch,
  num_epochs,
  lr_milestones,
  lr_decay,
  warmup_fraction,
  warmup_epochs,
  epoch_factor,
) -> optax.Schedule:
  if name == "step":
    milestones = [m * epoch_factor for m in lr_milestones]
    return with_warmup(
      multistep_schedule(learning_rate, milestones, lr_decay, steps_per_epoch),
      int(round(warmup_epochs * steps_per_epoch)),
      learning_rate,
    )
  if not num_epochs:
    raise ValueError(f"the {name} lr schedule needs num_epochs (it decays to 0 at the end).")
  total_steps = num_epochs * steps_per_epoch
  if name == "linear":
    return warmup_linear_decay_schedule(learning_rate, total_steps, warmup_fraction)
  warmup_steps = int(round(warmup_epochs * steps_per_epoch))
  if warmup_steps >= total_steps:
    raise ValueError(
      f"warmup_epochs ({warmup_epochs}) must be shorter than the run "
      f"({num_epochs} epochs), or the cosine never decays."
    )
  return cosine_schedule(learning_rate, total_steps, warmup_steps)


def _optimizer(
  name, schedule, momentum, nesterov, weight_decay, decay_norm_and_bias, adam_eps
) -> optax.GradientTransformation:
  mask = (
    None if decay_norm_and_bias else (lambda params: jax.tree.map(lambda x: x.ndim > 1, params))
  )
  if name == "adamw":  # decoupled decay, after the moments
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay, mask=mask)
  transforms = []  # sgd and adam: L2 decay added to the gradient first, as PyTorch's
  if weight_decay:
    transforms.append(optax.add_decayed_weights(weight_decay, mask=mask))
  if name == "adam":
    transforms.append(optax.adam(schedule, b1=0.9, b2=0.999, eps=adam_eps))
  else:
    transforms.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
  return optax.chain(*transforms)
