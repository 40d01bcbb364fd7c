"""The training state: one pytree that holds everything a run needs to resume.

A plain dict (not a dataclass) so that Orbax can restore it without a target too, which is
how a frozen teacher is read from another run's checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kd_jax import models

TrainState = dict[str, Any]  # {"step", "params", "batch_stats", "opt_state", "rng"}


def new_train_state(
  variables: dict, optimizer: optax.GradientTransformation, rng: jax.Array
) -> TrainState:
  """The state at step 0 from initial ``{"params", "batch_stats"}`` and the run's key."""
  return {
    "step": jnp.zeros((), jnp.int32),
    "params": variables["params"],
    "batch_stats": variables["batch_stats"],
    "opt_state": optimizer.init(variables["params"]),
    "rng": rng,
  }


def create_train_state(
  model: nn.Module, optimizer: optax.GradientTransformation, image_shape: Sequence[int], seed: int
) -> TrainState:
  """Initialises parameters, BatchNorm statistics and optimiser state from ``seed``.

  The stored ``rng`` is raw uint32 key data; each step derives its own key with
  ``fold_in(rng, step)``, so the random stream depends on the step only and a resumed run
  draws exactly the numbers the uninterrupted run would have.
  """
  init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
  return new_train_state(models.init_variables(model, init_key, image_shape), optimizer, step_key)
