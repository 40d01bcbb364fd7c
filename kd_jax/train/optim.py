"""Optimisers: SGD with a multi-step schedule (CIFAR protocols) and AdamW with warm-up (BERT).

``sgd``, the field's CIFAR protocol (RepDistiller): lr 0.05, momentum 0.9, weight decay 5e-4 on
every parameter (PyTorch's ``weight_decay``: ``wd·w`` added to the gradient before momentum),
lr × 0.1 at epochs 150, 180 and 210 of 240. optax's ``sgd`` keeps the momentum buffer
``t ← g + μ·t`` and updates by ``−lr·t``, exactly like ``torch.optim.SGD``.

``adamw``, BERT fine-tuning: AdamW (β 0.9/0.999, ε 1e-6, decoupled weight decay on matrices
only, not on biases and LayerNorm scales) with a linear warm-up over ``warmup_fraction`` of
the steps to ``learning_rate`` and a linear decay to 0.
"""

from __future__ import annotations

from typing import Sequence

import jax
import optax

OPTIMIZER_NAMES = ("sgd", "adamw")


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
                   warmup_fraction: float = 0.1, epoch_factor: int = 1
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser ``name`` ("sgd" | "adamw") and its learning-rate schedule.

  ``epoch_factor`` k multiplies the sgd milestones, for runs whose epochs were multiplied
  by k (Wang et al.); ``num_epochs`` (already multiplied) sets adamw's decay length. Keys that
  the chosen optimiser does not read are ignored (one config block serves both).
  """
  if name not in OPTIMIZER_NAMES:
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}.")
  if not isinstance(epoch_factor, int) or epoch_factor < 1:
    raise ValueError(f"epoch_factor must be a positive int; got {epoch_factor!r}.")
  if name == "adamw":
    if not num_epochs:
      raise ValueError("adamw's linear decay needs num_epochs.")
    schedule = warmup_linear_decay_schedule(learning_rate, num_epochs * steps_per_epoch,
                                            warmup_fraction)
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay,
                       mask=lambda params: jax.tree.map(lambda x: x.ndim > 1, params)), schedule
  milestones = [m * epoch_factor for m in lr_milestones]
  schedule = multistep_schedule(learning_rate, milestones, lr_decay, steps_per_epoch)
  transforms = []
  if weight_decay:
    transforms.append(optax.add_decayed_weights(weight_decay))
  transforms.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
  return optax.chain(*transforms), schedule
