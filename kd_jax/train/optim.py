"""SGD with momentum, weight decay and a multi-step learning-rate schedule.

The field's CIFAR protocol (RepDistiller): lr 0.05, momentum 0.9, weight decay 5e-4 on every
parameter (PyTorch's ``weight_decay``: ``wd·w`` added to the gradient before momentum),
lr × 0.1 at epochs 150, 180 and 210 of 240. optax's ``sgd`` keeps the momentum buffer
``t ← g + μ·t`` and updates by ``−lr·t``, exactly like ``torch.optim.SGD``.
"""

from __future__ import annotations

from typing import Sequence

import optax


def multistep_schedule(base_lr: float, milestones: Sequence[int], decay: float,
                       steps_per_epoch: int) -> optax.Schedule:
  """lr for the update at step s: ``base_lr · decay^(#milestones ≤ s // steps_per_epoch)``."""
  boundaries: dict[int, float] = {}
  for milestone in milestones:
    boundary = int(milestone) * steps_per_epoch
    boundaries[boundary] = boundaries.get(boundary, 1.0) * decay
  return optax.piecewise_constant_schedule(base_lr, boundaries)


def make_optimizer(config, steps_per_epoch: int, epoch_factor: int = 1
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimiser described by ``config`` (an ml_collections ConfigDict).

  Reads ``config.name`` ("sgd"), ``learning_rate``, ``momentum``, ``nesterov``,
  ``weight_decay``, ``lr_milestones`` (epochs) and ``lr_decay``. ``epoch_factor`` k
  multiplies the milestones, for runs whose epochs were multiplied by k (Wang et al.).
  """
  if config.name != "sgd":
    raise ValueError(f"unknown optimizer {config.name!r}; valid names: sgd.")
  if not isinstance(epoch_factor, int) or epoch_factor < 1:
    raise ValueError(f"epoch_factor must be a positive int; got {epoch_factor!r}.")
  milestones = [m * epoch_factor for m in config.lr_milestones]
  schedule = multistep_schedule(config.learning_rate, milestones, config.lr_decay,
                                steps_per_epoch)
  transforms = []
  if config.weight_decay:
    transforms.append(optax.add_decayed_weights(config.weight_decay))
  transforms.append(optax.sgd(schedule, momentum=config.momentum or None,
                              nesterov=config.nesterov))
  return optax.chain(*transforms), schedule
