"""Diagnostics of distillation runs.

``teacher_stddev`` is the "T. stddev" of Wang et al. (2022, "What makes a good data
augmentation in knowledge distillation"): over the training inputs a method shows the student
(x and its extra views x'), take the teacher's probabilities at τ = 1, average them over
consecutive blocks of samples, and measure how much those block means vary. Lower values
went with lower student test loss in the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["teacher_stddev"]


def teacher_stddev(teacher_probabilities: ArrayLike, block_size: int, ddof: int = 1) -> jax.Array:
  """Mean over classes of the std (over blocks) of the block-mean teacher probabilities.

  Args:
    teacher_probabilities: ``[num_samples, num_classes]``, in the order the samples were
      seen in training; the trailing ``num_samples mod block_size`` samples are dropped.
    block_size: samples per block (Python int ≥ 1), e.g. the number of samples of a few
      training batches.
    ddof: the std's delta degrees of freedom: 1 (default) is the sample std, as the
      official code's ``torch.std``; 0 the population std.

  Returns:
    A scalar: ``mean_c std_b( mean_{i ∈ block b} p_i,c )``.
  """
  probabilities = jnp.asarray(teacher_probabilities, jnp.float32)
  if probabilities.ndim != 2:
    raise ValueError(
      f"teacher_probabilities must have shape [num_samples, num_classes]; got "
      f"{probabilities.shape}."
    )
  num_blocks = probabilities.shape[0] // block_size if block_size >= 1 else 0
  if num_blocks < 2:
    raise ValueError(
      f"need at least 2 blocks of {block_size} samples; got {probabilities.shape[0]} samples."
    )
  blocks = probabilities[: num_blocks * block_size].reshape(num_blocks, block_size, -1)
  return jnp.mean(jnp.std(jnp.mean(blocks, axis=1), axis=0, ddof=ddof))
