"""Model adapters: how the one training step calls a model, whatever its kind.

The step builder (kd_jax.train.step) never calls ``module.apply`` itself; it calls an adapter:

  * ``apply_train(variables, inputs, key) -> (logits, updated_state)``: training mode. The
    student's gradient is taken through this call; ``updated_state`` holds the non-parameter
    collections the call changed (BatchNorm running statistics), ``{}`` for stateless models.
  * ``predict(variables, inputs) -> logits``: inference mode, no state change. The frozen
    teacher always runs this way, and so does the student when a view maker scores or
    grows samples with it.
  * ``init(key, inputs) -> variables``: ``{"params": ..., "batch_stats": ...}``.

``variables`` is always ``{"params", "batch_stats"}`` (``batch_stats`` empty for models
without running statistics), which is the layout the checkpoints store.

``joint_views`` says how an extra view x' meets the student: ``True`` runs x and x' as one
concatenated batch (one forward pass, BatchNorm statistics over both views; kd_jax's default
for image models), ``False`` runs x' as a second forward pass (what text models with dropout
do, and what Wang et al.'s official image code does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

if TYPE_CHECKING:
  from kd_jax.models.bert import BertClassifier

# ``{"params": ..., "batch_stats": ...}`` (pytrees of arrays).
Variables = Mapping[str, Any]
# A batch of normalised NHWC images, or a dict of token arrays (``TEXT_FIELDS``).
Inputs = jax.Array | Mapping[str, jax.Array]


class Predictor(Protocol):
  """What every adapter offers for inference: ``predict(variables, inputs) -> logits``."""

  def predict(self, variables: Variables, inputs: Any, /) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class LinenImageModel:
  """A Flax Linen image classifier called as ``module.apply(variables, x, train=...)``.

  Running statistics live in the ``batch_stats`` collection (models without BatchNorm have
  none). Inputs are normalised NHWC images.
  """

  module: nn.Module
  joint_views: bool = True
  modality: str = "image"

  def init(self, key: jax.Array, inputs: jax.Array) -> dict[str, Any]:
    variables = self.module.init(key, inputs, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  def apply_train(
    self, variables: Variables, inputs: jax.Array, key: jax.Array | None
  ) -> tuple[jax.Array, Any]:
    del key  # the bundled image models have no dropout
    logits, updated = self.module.apply(variables, inputs, train=True, mutable=["batch_stats"])
    return logits, updated.get("batch_stats", {})

  def predict(self, variables: Variables, inputs: jax.Array) -> jax.Array:
    # Flax types apply's result as the output or (output, state); without `mutable` it is
    # the output.
    return cast(jax.Array, self.module.apply(variables, inputs, train=False))


TEXT_FIELDS = ("input_ids", "token_type_ids", "attention_mask")


@dataclasses.dataclass(frozen=True)
class BertModel:
  """A kd_jax.models.bert.BertClassifier on token batches.

  ``inputs`` is a dict with ``token_type_ids``, ``attention_mask`` and either
  ``input_ids`` (int32 ``[B, L]``) or ``word_embeddings`` (``[B, L, hidden]``: the input
  of token-level backward KD, which moves sentences in embedding space). Dropout draws its
  randomness from the key ``apply_train`` gets.
  """

  module: BertClassifier
  joint_views: bool = False
  modality: str = "text"

  def init(self, key: jax.Array, inputs: Mapping[str, jax.Array]) -> dict[str, Any]:
    from kd_jax.models import bert

    return {
      "params": bert.init_params(self.module, key, inputs["input_ids"].shape[-1]),
      "batch_stats": {},
    }

  def _call(
    self,
    variables: Variables,
    inputs: Mapping[str, jax.Array],
    train: bool,
    rngs: dict[str, jax.Array] | None = None,
  ) -> jax.Array:
    logits = self.module.apply(
      {"params": variables["params"]},
      inputs.get("input_ids"),
      inputs["token_type_ids"],
      inputs["attention_mask"],
      word_embeddings=inputs.get("word_embeddings"),
      train=train,
      rngs=rngs,
    )
    return cast(jax.Array, logits)  # without `mutable`, apply gives the output alone

  def apply_train(
    self, variables: Variables, inputs: Mapping[str, jax.Array], key: jax.Array
  ) -> tuple[jax.Array, Any]:
    return self._call(variables, inputs, True, {"dropout": key}), {}

  def predict(self, variables: Variables, inputs: Mapping[str, jax.Array]) -> jax.Array:
    return self._call(variables, inputs, False)

  def embedding_matrix(self, variables: Variables) -> jax.Array:
    from kd_jax.models import bert

    return bert.word_embedding_matrix(variables["params"])


@dataclasses.dataclass(frozen=True)
class FunctionModel:
  """Any model given as functions: NNX (through ``nnx.split``/``nnx.merge``), Equinox, Haiku.

  ``apply_fn(variables, inputs, train: bool, key) -> logits`` or, with ``stateful=True``,
  ``-> (logits, updated_batch_stats)`` in training mode (the updated non-parameter state,
  e.g. an NNX ``BatchStat`` state); ``init_fn(key, inputs) -> {"params", "batch_stats"}``.
  """

  apply_fn: Callable[..., Any]
  init_fn: Callable[..., Any] | None = None
  stateful: bool = False
  joint_views: bool = True
  modality: str = "image"

  def init(self, key: jax.Array, inputs: Inputs) -> Any:
    if self.init_fn is None:
      raise ValueError(
        "FunctionModel.init needs init_fn(key, inputs) -> {'params', 'batch_stats'}."
      )
    return self.init_fn(key, inputs)

  def apply_train(
    self, variables: Variables, inputs: Inputs, key: jax.Array | None
  ) -> tuple[jax.Array, Any]:
    out = self.apply_fn(variables, inputs, True, key)
    if self.stateful:
      return out
    return out, variables.get("batch_stats", {})

  def predict(self, variables: Variables, inputs: Inputs) -> jax.Array:
    out = self.apply_fn(variables, inputs, False, None)
    return out[0] if self.stateful else out


@dataclasses.dataclass(frozen=True)
class Bound:
  """A model bound to variables in inference mode: ``inputs -> logits``.

  What view makers get as ``teacher_fn`` / ``student_fn``: callable like a plain function,
  and still carrying the model and its variables for views that need more than logits
  (token-level backward KD reads the embedding tables), plus ``constants`` precomputed from
  frozen variables (the teacher's embedding Gram matrix).
  """

  model: Any
  variables: Any
  constants: Any = None

  def __call__(self, inputs: Inputs) -> jax.Array:
    return self.model.predict(self.variables, inputs)


def example_inputs(batch: Mapping[str, Any], modality: str) -> Inputs:
  """The ``inputs`` an adapter takes, from a host or device batch (for ``init``)."""
  if modality == "text":
    return {k: jnp.asarray(batch[k]) for k in TEXT_FIELDS}
  return jnp.asarray(batch["image"], jnp.float32)


__all__ = [
  "TEXT_FIELDS",
  "BertModel",
  "Bound",
  "FunctionModel",
  "LinenImageModel",
  "Predictor",
  "example_inputs",
]
