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
"""

from __future__ import annotations

from typing import Sequence

import jax
import optax

OPTIMIZER_NAMES = ("sgd", "adamw", "adam")


def multistep_schedule(base_lr: float, milestones: Sequence[int], decay: float,
                       steps_per_epoch: int) -> optax.Schedule:
  """lr for the update at step s: ``base_lr · decay^(#milestones ≤ s // steps_per_epoch)``."""
  boundaries: dict[int, float] = {}
  for milestone in milestones:
    boundary = int(milestone) * steps_per_epoch
    boundaries[boundary] = boundaries.get(boundary, 1.0) * decay
  return optax.piecewise_constant_schedule(base_lr, boundaries)


def warmup_linear_decay_schedule(learning_rate: float, total_steps: int,
                                 warmup_fraction: float) -> optax.Schedule:
  """0 → ``learning_rate`` linearly over ``int(warmup_fraction·total_steps)`` steps (at
  least 1), then linearly to 0 at ``total_steps``."""
  warmup = max(int(warmup_fraction * total_steps), 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup),
       optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))], [warmup])


def make_optimizer(*, name: str = "sgd", learning_rate: float, steps_per_epoch: int,
                   num_epochs: int | None = None, momentum: float = 0.9,
                   nesterov: bool = False, weight_decay: float = 0.0,
                   lr_milestones: Sequence[int] = (), lr_decay: float = 0.1,
                   warmup_fraction: float = 0.1, epoch_factor: int = 1,
                   clip_global_norm: float | None = None, adam_eps: float = 1e-5
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser ``name`` ("sgd" | "adamw" | "adam") and its learning-rate schedule.

  ``epoch_factor`` k multiplies the sgd / adam milestones, for runs whose epochs were
  multiplied by k (Wang et al.); ``num_epochs`` (already multiplied) sets adamw's decay
  length. ``clip_global_norm`` clips the gradient's global norm first (None: no clipping).
  Keys that the chosen optimiser does not read are ignored (one config block serves all).
  """
  if name not in OPTIMIZER_NAMES:
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}.")
  if not isinstance(epoch_factor, int) or epoch_factor < 1:
    raise ValueError(f"epoch_factor must be a positive int; got {epoch_factor!r}.")
  if clip_global_norm is not None and not clip_global_norm > 0:
    raise ValueError(f"clip_global_norm must be positive or None; got {clip_global_norm!r}.")
  optimizer, schedule = _optimizer(name, learning_rate, steps_per_epoch, num_epochs, momentum,
                                   nesterov, weight_decay, lr_milestones, lr_decay,
                                   warmup_fraction, epoch_factor, adam_eps)
  if clip_global_norm is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(clip_global_norm), optimizer)
  return optimizer, schedule


def _optimizer(name, learning_rate, steps_per_epoch, num_epochs, momentum, nesterov,
               weight_decay, lr_milestones, lr_decay, warmup_fraction, epoch_factor,
               adam_eps):
  if name == "adamw":
    if not num_epochs:
      raise ValueError("adamw's linear decay needs num_epochs.")
    schedule = warmup_linear_decay_schedule(learning_rate, num_epochs * steps_per_epoch,
                                            warmup_fraction)
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay,
                       mask=lambda params: jax.tree.map(lambda x: x.ndim > 1, params)), schedule
  milestones = [m * epoch_factor for m in lr_milestones]
  schedule = multistep_schedule(learning_rate, milestones, lr_decay, steps_per_epoch)
  if name == "adam":
    transforms = []
    if weight_decay:
      transforms.append(optax.add_decayed_weights(
          weight_decay, mask=lambda params: jax.tree.map(lambda x: x.ndim > 1, params)))
    transforms.append(optax.adam(schedule, b1=0.9, b2=0.999, eps=adam_eps))
    return optax.chain(*transforms), schedule
  transforms = []
  if weight_decay:
    transforms.append(optax.add_decayed_weights(weight_decay))
  transforms.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
  return optax.chain(*transforms), schedule
