"""The text suite: BERT-style KD, token-level backward-pass KD and Continuation-KD.

MiniLM-shaped encoders by default (a 6 × 384 teacher, a student of its layers 0, 2 and 4;
random weights, as speed does not depend on them) on padded random token ids, AdamW with
the text configs' schedule. The PyTorch side is Hugging Face's BertForSequenceClassification
with the same weights; its token-level backward KD builds the explicit one-hot
(batch × length × vocabulary) tensor, where kd_jax goes through the embedding Gram matrix.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_vs_torch import harness
from experiments.bench_vs_torch.harness import HPARAMS, Runner, Settings, Suite
from kd_jax.experiments.configs import text_common
from kd_jax import methods
from kd_jax.methods import backward_kd
from kd_jax.models import adapters, bert
from kd_jax.train import optim, preprocess as preprocess_lib, setup, sharding
from kd_jax.train import step as step_lib

TEXT_CASES = (("text kd", "kd"), ("text backward_kd (K = 1)", "backward_kd"),
              ("text continuation_kd", "continuation_kd"))
SPECIAL_IDS = (0, 101, 102)  # [PAD], [CLS], [SEP] in BERT's vocabulary
TEXT_TOTAL_STEPS = 10_000  # the learning-rate schedule's length (both sides)


def text_configs(text_size: str, length: int) -> tuple[bert.BertConfig, tuple[int, ...]]:
  """The teacher's shape and the teacher layers the student keeps."""
  if text_size == "minilm":
    return bert.BertConfig(), (0, 2, 4)
  return bert.BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=length), (0,)


@dataclasses.dataclass
class TextPair:
  """A BERT teacher and its layer-subset student (modules and parameters) and their batch."""
  batch: int
  length: int
  size: str = "minilm"

  def __post_init__(self):
    self.teacher_config, layers = text_configs(self.size, self.length)
    self.teacher = bert.BertClassifier(self.teacher_config)
    self.teacher_params = jax.device_get(bert.init_params(self.teacher, jax.random.PRNGKey(0)))
    self.student, self.student_params = bert.student_from_teacher(
        self.teacher_params, self.teacher_config, layers, key=jax.random.PRNGKey(1))
    self.student_config = self.student.config
    rng = np.random.default_rng(0)
    vocab = self.teacher_config.vocab_size
    ids = rng.integers(max(SPECIAL_IDS) + 1, vocab, (self.batch, self.length))
    lengths = rng.integers(self.length // 2, self.length + 1, self.batch)
    mask = np.arange(self.length)[None] < lengths[:, None]
    ids[:, 0] = SPECIAL_IDS[1]
    ids[np.arange(self.batch), lengths - 1] = SPECIAL_IDS[2]
    self.ids = np.where(mask, ids, SPECIAL_IDS[0]).astype(np.int32)
    self.mask = mask.astype(np.int32)
    self.types = np.zeros_like(self.ids)
    self.labels = rng.integers(0, self.teacher_config.num_labels, self.batch).astype(np.int32)
    self.perturb = self.mask.astype(bool) & ~np.isin(self.ids, SPECIAL_IDS)


def text_hparams() -> dict:
  """The shared hyperparameters with the text configs' KD temperature and weights."""
  kd = text_common.base_text_config().kd
  return {**HPARAMS, "temperature": kd.temperature, "ce_weight": kd.ce_weight,
          "kd_weight": kd.kd_weight}


def jax_text_runner(pair: TextPair, method_name, mesh) -> Runner:
  """kd_jax's text step; backward KD's options from the text config's ``backward`` block."""
  config = text_common.base_text_config()
  optimizer, _ = optim.make_optimizer(**config.optimizer.to_dict(),
                                      steps_per_epoch=TEXT_TOTAL_STEPS, num_epochs=1)
  method = methods.get_method(method_name)
  student, teacher = adapters.BertModel(pair.student), adapters.BertModel(pair.teacher)
  view = (methods.make_view("backward", "text", **setup.view_keywords(config.backward),
                            special_ids=SPECIAL_IDS) if method.view else None)
  step = step_lib.jit_data_parallel(step_lib.make_train_step(
      student, optimizer, method, preprocess_lib.TextPreprocess(), teacher=teacher, view=view),
      mesh)
  teacher_variables = {"params": pair.teacher_params, "batch_stats": {}}
  # As the loop does: the frozen teacher's Gram matrix once, outside the step.
  constants = backward_kd.teacher_constants(teacher, teacher_variables) if view else {}
  state = sharding.replicate({"step": jnp.zeros((), jnp.int32), "params": pair.student_params,
                              "batch_stats": {}, "opt_state": optimizer.init(pair.student_params),
                              "rng": jax.random.PRNGKey(0)}, mesh)
  batch = sharding.global_batch({"input_ids": pair.ids, "token_type_ids": pair.types,
                                 "attention_mask": pair.mask, "label": pair.labels}, mesh)
  hparams = sharding.replicate({k: jnp.float32(v) for k, v in text_hparams().items()}, mesh)
  return harness.jax_runner(step, state, batch, sharding.replicate(teacher_variables, mesh),
                            hparams, sharding.replicate(constants, mesh))


def torch_text_runner(pair: TextPair, method_name, device, compile_models) -> Runner:
  """Hugging Face BERT twins, the explicit one-hot token backward KD, AdamW + LambdaLR."""
  import torch
  from experiments.torch_reference import text_steps
  from experiments.torch_reference import steps as torch_steps
  allocated_before = harness.torch_allocated(device)
  method = methods.get_method(method_name)
  config = text_common.base_text_config()

  def twin(params, bert_config):
    model = text_steps.hf_model_from_flax(params, bert_config).to(device)
    return torch.compile(model) if compile_models else model

  student = twin(pair.student_params, pair.student_config)
  teacher = twin(pair.teacher_params, pair.teacher_config)
  optimizer, scheduler = text_steps.make_adamw(
      student, learning_rate=config.optimizer.learning_rate,
      weight_decay=config.optimizer.weight_decay,
      warmup_fraction=config.optimizer.warmup_fraction, total_steps=TEXT_TOTAL_STEPS)
  tensors = [torch.from_numpy(a).long().to(device)
             for a in (pair.ids, pair.types, pair.mask, pair.labels)]
  perturb = torch.from_numpy(pair.perturb).float().to(device)
  hparams = text_hparams()
  backward_options = (dict(steps=config.backward.steps, step_size=config.backward.step_size,
                           normalize=config.backward.normalize)
                      if method.view == "backward" else None)

  def run():
    text_steps.text_kd_step(student, teacher, optimizer, scheduler, *tensors[:3], tensors[3],
                            perturb, hparams=hparams,
                            objective=torch_steps.OBJECTIVE_OF_METHOD[method_name],
                            backward_options=backward_options)
    harness.synchronize(device)

  return harness.torch_timed(run, device, allocated_before)


def text_suite(settings: Settings, sides, device, mesh) -> Suite:
  """The text methods on every side; a failed torch.compile build becomes a 'failed' row."""
  pair = TextPair(settings.text_batch, settings.text_length, settings.text_size)
  runners = {}
  for label, method in TEXT_CASES:
    runners[label, "JAX"] = jax_text_runner(pair, method, mesh)
    for side in sides[1:]:
      harness.reset_torch_compile(side)
      try:
        runners[label, side] = torch_text_runner(pair, method, device, side == "torch.compile")
      except Exception as error:  # noqa: BLE001 - reported in the table, not fatal
        if side != "torch.compile":
          raise
        print(f"{label}: torch.compile failed: {error!s:.200}", flush=True)
    print(f"{label}: built", flush=True)
  t, s = pair.teacher_config, pair.student_config
  title = (f"Text: BERT teacher {t.num_hidden_layers} layers × {t.hidden_size} → student "
           f"{s.num_hidden_layers} layers (teacher layers), vocabulary {t.vocab_size}, batch "
           f"{pair.batch} × {pair.length} tokens (padded), dropout 0.1, AdamW; token-level "
           "backward KD: kd_jax via the embedding Gram matrix, PyTorch with the explicit "
           "one-hot (batch × length × vocabulary) tensor.")
  return Suite(title, "sequences", pair.batch, [c[0] for c in TEXT_CASES], runners)
