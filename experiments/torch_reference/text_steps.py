"""PyTorch twins of the text side: Hugging Face's BertForSequenceClassification built from
kd_jax.models.bert parameters, and the text KD / token-level backward-pass KD step computed
the explicit way, with a relaxed one-hot ``X`` (batch × length × vocabulary) that requires
grad and ``inputs_embeds = X·E`` for each model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from experiments.torch_reference import steps


def hf_model_from_flax(params, config):
  """A transformers BertForSequenceClassification with the same weights (dropout as config)."""
  import dataclasses
  from transformers import BertConfig, BertForSequenceClassification
  from kd_jax.models import bert
  fields = dataclasses.asdict(config)
  hf = BertForSequenceClassification(BertConfig(**fields, hidden_act="gelu"))
  state = {f"bert.{k}": torch.from_numpy(np.array(v)) for k, v in
           bert.params_to_hf(params, config).items()}
  state["classifier.weight"] = torch.from_numpy(np.array(params["classifier"]["kernel"]).T.copy())
  state["classifier.bias"] = torch.from_numpy(np.array(params["classifier"]["bias"]))
  missing, unexpected = hf.load_state_dict(state, strict=False)
  missing = [k for k in missing if not k.endswith("position_ids")]
  if missing or unexpected:
    raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")
  return hf


def make_adamw(model, *, learning_rate: float, weight_decay: float, warmup_fraction: float,
               total_steps: int):
  """kd_jax.train.optim.make_optimizer(name="adamw") in PyTorch: AdamW (β 0.9/0.999, ε 1e-6, weight
  decay on matrices only) with the learning rate warmed up linearly from 0 over
  ``int(warmup_fraction · total_steps)`` steps, then decayed linearly to 0 at
  ``total_steps``. Returns (optimizer, scheduler); call ``scheduler.step()`` per step."""
  decay = [p for p in model.parameters() if p.dim() > 1]
  no_decay = [p for p in model.parameters() if p.dim() <= 1]
  optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=learning_rate, betas=(0.9, 0.999), eps=1e-6)
  warmup = max(int(warmup_fraction * total_steps), 1)
  decay_steps = max(total_steps - warmup, 1)
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda s: s / warmup if s < warmup else max(0.0, 1 - (s - warmup) / decay_steps))
  return optimizer, scheduler


def logits(model, ids, types, mask, embeds=None):
  if embeds is None:
    return model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
  return model(inputs_embeds=embeds, token_type_ids=types, attention_mask=mask).logits


def token_auxiliary_embeddings(teacher, student, ids, types, mask, perturb, *, steps: int,
                               step_size: float, normalize: str = "l2"):
  """K ascent steps on the relaxed one-hot X; returns (X·E_T, X·E_S) of the result."""
  table_t = teacher.bert.embeddings.word_embeddings.weight.detach()
  table_s = student.bert.embeddings.word_embeddings.weight.detach()
  x = F.one_hot(ids, table_t.shape[0]).float()
  for _ in range(steps):
    x = x.detach().requires_grad_(True)
    log_p_s = F.log_softmax(logits(student, ids, types, mask, x @ table_s), -1)
    p_t = F.softmax(logits(teacher, ids, types, mask, x @ table_t), -1)
    F.kl_div(log_p_s, p_t, reduction="sum").backward()
    g = x.grad * perturb[..., None]
    if normalize == "l2":
      g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    x = x + step_size * g
  return (x @ table_t).detach(), (x @ table_s).detach()


def text_kd_step(student, teacher, optimizer, scheduler, ids, types, mask, labels, perturb, *,
                 hparams: dict, objective: str = "kd", backward_options=None):
  """One text distillation step: ``objective`` ("ce", "kd", "continuation", "annealing", as
  ``steps.objective_loss``) on the batch, plus token-level backward KD when
  ``backward_options`` is given. ``hparams``: temperature, ce_weight, kd_weight, view_weight,
  phi, psi, margin (those the objective uses)."""
  teacher_logits = None
  if teacher is not None:
    teacher.eval()
    with torch.no_grad():
      teacher_logits = logits(teacher, ids, types, mask)
  view = None
  if backward_options:
    student.eval()
    e_t, e_s = token_auxiliary_embeddings(teacher, student, ids, types, mask, perturb,
                                          **backward_options)
    with torch.no_grad():
      view = (e_s, logits(teacher, ids, types, mask, e_t))
  student.train()
  out = logits(student, ids, types, mask)
  loss = steps.objective_loss(objective, out, teacher_logits, labels, hparams)
  if view is not None:
    loss = loss + hparams["view_weight"] * hparams["kd_weight"] * steps.kd_loss(
        logits(student, ids, types, mask, view[0]), view[1], hparams["temperature"])
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  scheduler.step()
  return float(loss.detach())
