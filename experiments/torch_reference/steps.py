"""PyTorch versions of the distillation losses and steps, computed the way the methods'
official code computes them, for parity tests and benchmarks.

  * KD (RepDistiller ``DistillKL``): ``kl_div(log_softmax(s/τ), softmax(t/τ), 'sum') · τ² / B``
    and the step ``ce_weight·CE + kd_weight·KD``, SGD with momentum and weight decay.
  * Backward-pass KD's input gradient: autograd of the summed teacher–student KL with
    respect to the input, through both networks in eval mode.
  * Continuation-KD's hinge on logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, temperature: float):
  """Batch-mean τ²·KL(p_T^τ ‖ p_S^τ), as RepDistiller's DistillKL."""
  log_p_student = F.log_softmax(student_logits / temperature, dim=1)
  p_teacher = F.softmax(teacher_logits / temperature, dim=1)
  return (F.kl_div(log_p_student, p_teacher, reduction="sum") * temperature ** 2
          / student_logits.shape[0])


def continuation_hinge(student_logits, teacher_logits, phi: float, margin: float):
  """Per-example ``max(0, mean_c (s − φ·t)² − m·φ)``."""
  gap = ((student_logits - phi * teacher_logits) ** 2).mean(dim=1)
  return torch.clamp(gap - margin * phi, min=0.0)


def kd_train_step(student, teacher, optimizer, images, labels, *, temperature: float,
                  ce_weight: float, kd_weight: float) -> float:
  """One vanilla-KD step: teacher in eval mode under no_grad, student in train mode."""
  teacher.eval()
  student.train()
  with torch.no_grad():
    teacher_logits = teacher(images)
  student_logits = student(images)
  loss = (ce_weight * F.cross_entropy(student_logits, labels)
          + kd_weight * kd_loss(student_logits, teacher_logits, temperature))
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  return float(loss.detach())


def divergence_input_grad(teacher, student, images, temperature: float = 1.0):
  """∇_x Σ_i KL(p_T^τ(x_i) ‖ p_S^τ(x_i)), both networks in eval mode."""
  teacher.eval()
  student.eval()
  x = images.clone().requires_grad_(True)
  log_p_student = F.log_softmax(student(x) / temperature, dim=1)
  p_teacher = F.softmax(teacher(x) / temperature, dim=1)
  F.kl_div(log_p_student, p_teacher, reduction="sum").backward()
  return x.grad
