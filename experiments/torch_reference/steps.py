"""PyTorch versions of the distillation losses and training steps, computed the way the
methods' official code computes them, for parity tests and benchmarks.

  * KD (RepDistiller ``DistillKL``): ``kl_div(log_softmax(s/τ), softmax(t/τ), 'sum') · τ² / B``
    and ``ce_weight·CE + kd_weight·KD``, SGD with momentum and weight decay.
  * Views (Wang et al.'s code): mixup / CutMix of the batch with a permutation of itself, box
    pasted by slicing ``x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]``; CutMix-pick scores
    R CutMix draws and keeps the top ``n_pick``; the view is labelled by the teacher only.
  * Backward-pass KD: K steps along the normalised autograd input gradient of the summed
    teacher–student divergence, both networks in eval mode, projection and clipping.
  * Continuation-KD / Annealing-KD: ``ψ·CE + (1 − ψ)·max(0, Σ_c (s − φ·t)² − m·φ)`` (the
    class mean with ``hparams["reduction"] = "mean"``).

Like kd_jax's compiled step, the student sees the batch and its extra view in one
training-mode forward pass of their concatenation. The random draws of a view (λ, the
partner permutation, the CutMix box) are arguments, so a parity test can hand both sides the
same draws; ``draw_view`` makes them from a NumPy generator for benchmarks.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, temperature: float):
  """Batch-mean τ²·KL(p_T^τ ‖ p_S^τ), as RepDistiller's DistillKL."""
  log_p_student = F.log_softmax(student_logits / temperature, dim=1)
  p_teacher = F.softmax(teacher_logits / temperature, dim=1)
  return (F.kl_div(log_p_student, p_teacher, reduction="sum") * temperature ** 2
          / student_logits.shape[0])


def standardized_kd_loss(student_logits, teacher_logits, temperature: float):
  """Batch-mean KD on z-scored logits, as the logit-standardisation code (Sun et al. 2024):
  ``(z − mean) / (1e-7 + std)`` with PyTorch's sample std, then τ²·KL at τ."""
  def normalize(logits):
    mean = logits.mean(dim=-1, keepdim=True)
    return (logits - mean) / (1e-7 + logits.std(dim=-1, keepdim=True))
  return kd_loss(normalize(student_logits), normalize(teacher_logits), temperature)


def dkd_loss(student_logits, teacher_logits, labels, alpha: float, beta: float,
             temperature: float):
  """Batch-mean decoupled KD as mdistiller writes it: the binary target / non-target
  distributions from masked probability sums, the non-target softmax by subtracting 1000
  from the target's scaled logit."""
  target = torch.zeros_like(student_logits).scatter_(1, labels.unsqueeze(1), 1).bool()
  p_student = F.softmax(student_logits / temperature, dim=1)
  p_teacher = F.softmax(teacher_logits / temperature, dim=1)

  def binary(p):
    return torch.cat([(p * target).sum(1, keepdim=True), (p * ~target).sum(1, keepdim=True)], 1)

  batch = student_logits.shape[0]
  tckd = (F.kl_div(torch.log(binary(p_student)), binary(p_teacher), reduction="sum")
          * temperature ** 2 / batch)
  p_teacher_rest = F.softmax(teacher_logits / temperature - 1000.0 * target, dim=1)
  log_p_student_rest = F.log_softmax(student_logits / temperature - 1000.0 * target, dim=1)
  nckd = (F.kl_div(log_p_student_rest, p_teacher_rest, reduction="sum")
          * temperature ** 2 / batch)
  return alpha * tckd + beta * nckd


def mlkd_loss(student_logits, teacher_logits, temperatures, logit_stand: bool = False):
  """The multi-level terms of one view as the MLKD code writes them (weights left out):
  for each τ, the batch-mean τ²·KD, ‖P_Tᵀ P_T − P_Sᵀ P_S‖² / C and ‖P_T P_Tᵀ − P_S P_Sᵀ‖² / B,
  each reduced to a scalar and then multiplied by a confidence mask and averaged
  (``(loss * mask).mean()``): the instance and batch terms by the mask of examples whose
  teacher confidence is ≤ the median, the class term by that of classes whose summed
  probability is; both from the teacher at τ = 1, with NumPy's percentile, as the code."""
  batch, classes = teacher_logits.shape
  p_teacher = F.softmax(teacher_logits.detach(), dim=1)
  confidence = p_teacher.max(dim=1).values
  example_mask = confidence.le(float(np.percentile(confidence.detach().cpu().numpy(), 50)))
  class_mass = p_teacher.sum(dim=0)
  class_mask = class_mass.le(float(np.percentile(class_mass.detach().cpu().numpy(), 50)))

  def normalize(logits):
    return (logits - logits.mean(dim=-1, keepdim=True)) / (1e-7 + logits.std(dim=-1,
                                                                             keepdim=True))

  total = 0.0
  for tau in temperatures:
    kd_student = normalize(student_logits) if logit_stand else student_logits
    kd_teacher = normalize(teacher_logits) if logit_stand else teacher_logits
    kd = kd_loss(kd_student, kd_teacher, tau)
    p_s, p_t = F.softmax(student_logits / tau, dim=1), F.softmax(teacher_logits / tau, dim=1)
    class_term = ((p_t.t() @ p_t - p_s.t() @ p_s) ** 2).sum() / classes
    batch_term = ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / batch
    total = total + (kd * example_mask).mean() + (class_term * class_mask).mean() + (
        batch_term * example_mask).mean()
  return total


def continuation_hinge(student_logits, teacher_logits, phi: float, margin: float,
                       reduction: str = "sum"):
  """Per-example ``max(0, r_c (s − φ·t)² − m·φ)``, ``r_c`` the sum (the paper's squared norm)
  or the mean over classes."""
  squared = (student_logits - phi * teacher_logits) ** 2
  gap = squared.sum(dim=1) if reduction == "sum" else squared.mean(dim=1)
  return torch.clamp(gap - margin * phi, min=0.0)


# The objective (as ``objective_loss`` names it) of each kd_jax method.
OBJECTIVE_OF_METHOD = {"ce": "ce", "kd": "kd", "kd_mixup": "kd", "kd_cutmix": "kd",
                       "kd_cutmix_pick": "kd", "backward_kd": "kd",
                       "continuation_kd": "continuation", "annealing_kd": "annealing",
                       "dkd": "dkd", "mlkd": "mlkd"}


def objective_loss(objective: str, student_logits, teacher_logits, labels, hparams: dict):
  """Batch-mean objective on the original view: "ce", "kd", "dkd", "mlkd", "continuation"
  or "annealing"."""
  ce = F.cross_entropy(student_logits, labels)
  if objective == "ce":
    return ce
  if objective == "kd":
    return (hparams["ce_weight"] * ce
            + hparams["kd_weight"] * kd_loss(student_logits, teacher_logits,
                                             hparams["temperature"]))
  if objective == "dkd":
    return ce * hparams["ce_weight"] + hparams["dkd_warmup"] * dkd_loss(
        student_logits, teacher_logits, labels, hparams["dkd_alpha"], hparams["dkd_beta"],
        hparams["temperature"])
  if objective == "mlkd":
    temperatures = (hparams["temperature"], 3.0, 5.0, 2.0, 6.0)
    return hparams["ce_weight"] * ce + hparams["kd_weight"] * mlkd_loss(
        student_logits, teacher_logits, temperatures)
  if objective in ("continuation", "annealing"):
    margin = 0.0 if objective == "annealing" else hparams["margin"]
    hinge = continuation_hinge(student_logits, teacher_logits, hparams["phi"], margin,
                               hparams.get("reduction", "sum")).mean()
    return hparams["psi"] * ce + (1 - hparams["psi"]) * hinge
  raise ValueError(f"unknown objective {objective!r}")


def crop_flip_normalize(images_uint8, generator, *, pad: int, mean, std):
  """uint8 NHWC batch → zero-pad + random crop, random horizontal flip, normalised NCHW
  float32, on the batch's device (what kd_jax's compiled step does before the models)."""
  x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
  batch, channels, height, width = x.shape
  if pad:
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator).to(x.device)
    rows = (offsets[0][:, None] + torch.arange(height, device=x.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(width, device=x.device))[:, None, None, :]
    x = padded[torch.arange(batch, device=x.device)[:, None, None, None],
               torch.arange(channels, device=x.device)[None, :, None, None], rows, cols]
  flip = (torch.rand(batch, generator=generator) < 0.5).to(x.device)
  x = torch.where(flip[:, None, None, None], x.flip(3), x)
  mean = torch.as_tensor(mean, device=x.device).view(1, -1, 1, 1)
  std = torch.as_tensor(std, device=x.device).view(1, -1, 1, 1)
  return (x - mean) / std


# --- The random draws of a view. ---

class MixDraw(NamedTuple):
  """One mixing draw: partner permutation, λ, and the CutMix box rows/cols (or None)."""
  perm: torch.Tensor
  lam: float
  box: tuple | None = None  # (y1, y2, x1, x2), half-open


def draw_mix(rng: np.random.Generator, batch: int, height: int, width: int, alpha: float,
             cutmix: bool) -> MixDraw:
  """λ ~ Beta(α, α), a fixed-point-free cyclic shift, and (CutMix) the official box rule."""
  lam = float(rng.beta(alpha, alpha))
  shift = int(rng.integers(1, batch))
  perm = (torch.arange(batch) + shift) % batch
  if not cutmix:
    return MixDraw(perm, lam)
  ratio = (1.0 - lam) ** 0.5
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
  box = (min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height),
         min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width))
  kept = 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / (height * width)
  return MixDraw(perm, kept, box)


def mix_images(images, draw: MixDraw):
  """mixup (no box) or CutMix (box) of an NCHW batch with ``images[draw.perm]``."""
  if draw.box is None:
    return draw.lam * images + (1 - draw.lam) * images[draw.perm]
  y1, y2, x1, x2 = draw.box
  mixed = images.clone()
  mixed[:, :, y1:y2, x1:x2] = images[draw.perm, :, y1:y2, x1:x2]
  return mixed


def entropy(logits):
  log_p = F.log_softmax(logits, dim=1)
  return -(log_p.exp() * log_p).sum(dim=1)


def cutmix_pick(teacher, student, images, draws, *, score: str, n_pick: int,
                temperature: float):
  """The ``n_pick`` most informative of ``len(draws)`` CutMix draws; returns (x', T(x'))."""
  pool = torch.cat([mix_images(images, d) for d in draws])
  with torch.no_grad():
    if score == "teacher_entropy":
      teacher_logits = teacher(pool)
      scores = entropy(teacher_logits)
    elif score == "student_entropy":
      teacher_logits = None
      scores = entropy(student(pool))
    elif score == "kl":
      teacher_logits = teacher(pool)
      student_logits = student(pool)
      scores = (F.softmax(teacher_logits / temperature, 1)
                * (F.log_softmax(teacher_logits / temperature, 1)
                   - F.log_softmax(student_logits / temperature, 1))).sum(1) * temperature ** 2
    else:
      raise ValueError(f"unknown pick score {score!r}")
    picked = torch.topk(scores, n_pick).indices
    picked_images = pool[picked]
    picked_teacher = teacher(picked_images) if teacher_logits is None else teacher_logits[picked]
  return picked_images, picked_teacher


def _divergence(teacher_logits, student_logits, kind: str, temperature: float):
  if kind == "kl":
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="sum")
  if kind == "l1":
    return (teacher_logits - student_logits).abs().mean(1).sum()
  if kind == "mse":
    return ((teacher_logits - student_logits) ** 2).mean(1).sum()
  raise ValueError(f"unknown divergence {kind!r}")


def divergence_input_grad(teacher, student, images, temperature: float = 1.0,
                          divergence: str = "kl"):
  """∇_x Σ_i D(T(x_i), S(x_i)), both networks in eval mode."""
  teacher.eval()
  student.eval()
  x = images.detach().clone().requires_grad_(True)
  _divergence(teacher(x), student(x), divergence, temperature).backward()
  return x.grad


def auxiliary_samples(teacher, student, images, *, steps: int, step_size: float,
                      normalize: str = "sign", epsilon=None, clip=None, divergence="kl",
                      temperature: float = 1.0):
  """K ascent steps on the divergence from x (Jafari et al. 2023's auxiliary samples).

  ``clip``: (low, high) tensors broadcastable to NCHW, or None.
  """
  images = images.detach()
  x_aux = images
  for _ in range(steps):
    grad = divergence_input_grad(teacher, student, x_aux, temperature, divergence)
    if normalize == "sign":
      direction = grad.sign()
    elif normalize == "l2":
      norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
      direction = grad / norm.view(-1, *([1] * (grad.dim() - 1)))
    else:
      direction = grad
    x_aux = x_aux + step_size * direction
    if epsilon:
      delta = x_aux - images
      if normalize == "l2":
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * torch.clamp(epsilon / norm, max=1.0).view(-1, *([1] * (delta.dim() - 1)))
      else:
        delta = delta.clamp(-epsilon, epsilon)
      x_aux = images + delta
    if clip is not None:
      x_aux = torch.maximum(torch.minimum(x_aux, clip[1]), clip[0])
  return x_aux.detach()


def make_view(view: str, teacher, student, images, *, draws=None, options: dict,
              temperature: float):
  """The extra view x' and the teacher's logits on it (both without gradients)."""
  teacher.eval()
  student.eval()
  if view in ("mixup", "cutmix"):
    mixed = mix_images(images, draws[0])
    with torch.no_grad():
      return mixed, teacher(mixed)
  if view == "cutmix_pick":
    return cutmix_pick(teacher, student, images, draws, score=options["score"],
                       n_pick=options.get("n_pick") or images.shape[0], temperature=temperature)
  if view == "backward":
    aux = auxiliary_samples(teacher, student, images, steps=options["steps"],
                            step_size=options["step_size"],
                            normalize=options.get("normalize", "sign"),
                            epsilon=options.get("epsilon"), clip=options.get("clip"),
                            divergence=options.get("divergence", "kl"),
                            temperature=options.get("divergence_temperature", 1.0))
    with torch.no_grad():
      return aux, teacher(aux)
  raise ValueError(f"unknown view {view!r}")


def draw_view(view: str, rng: np.random.Generator, images, options: dict):
  """Random draws for ``make_view`` (None for views without randomness)."""
  batch, _, height, width = images.shape
  if view in ("mixup", "cutmix"):
    return [draw_mix(rng, batch, height, width, options["alpha"], view == "cutmix")]
  if view == "cutmix_pick":
    return [draw_mix(rng, batch, height, width, options["alpha"], True)
            for _ in range(options["pool_rounds"])]
  return None


def distill_step(student, teacher, optimizer, images, labels, *, objective: str = "kd",
                 view: str = "none", draws=None, options: dict | None = None,
                 hparams: dict, forward_context=contextlib.nullcontext) -> float:
  """One training step of any method: objective on x, teacher-labelled KD on the view x'.

  ``hparams``: temperature, ce_weight, kd_weight, view_weight, phi, psi, margin (floats).
  ``forward_context()`` is entered around the forward passes and the loss only (e.g.
  ``torch.autocast``, which PyTorch's documentation keeps out of ``backward()`` and the
  optimiser step). Returns the loss.
  """
  with forward_context():
    teacher_logits = None
    if teacher is not None:
      teacher.eval()
      with torch.no_grad():
        teacher_logits = teacher(images)
    inputs = images
    if view != "none":
      view_images, view_teacher = make_view(view, teacher, student, images, draws=draws,
                                            options=options or {},
                                            temperature=hparams["temperature"])
      inputs = torch.cat([images, view_images])
    student.train()
    logits = student(inputs)
    batch = labels.shape[0]
    loss = objective_loss(objective, logits[:batch], teacher_logits, labels, hparams)
    if view != "none":
      loss = loss + hparams["view_weight"] * hparams["kd_weight"] * kd_loss(
          logits[batch:], view_teacher, hparams["temperature"])
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  return float(loss.detach())
