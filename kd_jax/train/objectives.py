"""Objectives on the original view and the registry of distillation methods.

A method is a recipe of two independent parts (DESIGN.md): a view maker that may add an
extra view x' of the batch, and an objective on the original view. Objectives share one
signature, ``(student_logits, teacher_logits, labels, hparams) -> [batch]``, where
``hparams`` holds the schedule values (temperature, weights, ...) as arrays so that changing
them never recompiles the step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from kd_jax import losses


def ce_objective(student_logits, teacher_logits, labels, hparams):
  """Plain cross-entropy: teacher training and students from scratch."""
  del teacher_logits, hparams
  return losses.cross_entropy(student_logits, labels)


def kd_objective(student_logits, teacher_logits, labels, hparams):
  """Hinton KD: ``ce_weight·CE + kd_weight·τ²·KL(p_T^τ || p_S^τ)``."""
  return losses.kd_objective(student_logits, teacher_logits, labels,
                             temperature=hparams["temperature"],
                             ce_weight=hparams["ce_weight"], kd_weight=hparams["kd_weight"])


def continuation_objective(student_logits, teacher_logits, labels, hparams):
  """Continuation-KD: ``ψ·CE + (1 − ψ)·max(0, mean_c (z_S − φ·z_T)² − m·φ)``."""
  hinge = losses.continuation_hinge(student_logits, teacher_logits, hparams["phi"],
                                    hparams["margin"])
  ce = losses.cross_entropy(student_logits, labels)
  return hparams["psi"] * ce + (1 - hparams["psi"]) * hinge


def annealing_objective(student_logits, teacher_logits, labels, hparams):
  """Annealing-KD: the continuation objective with margin 0 (ψ steps from 0 to 1)."""
  return continuation_objective(student_logits, teacher_logits, labels,
                                {**hparams, "margin": 0.0})


OBJECTIVES: dict[str, Callable] = {"ce": ce_objective, "kd": kd_objective,
                                   "continuation": continuation_objective,
                                   "annealing": annealing_objective}


@dataclasses.dataclass(frozen=True)
class Method:
  """A named recipe: which objective, which extra view, whether it needs a teacher."""
  name: str
  objective: str
  view: str = "none"
  description: str = ""

  @property
  def needs_teacher(self) -> bool:
    return self.objective != "ce" or self.view != "none"


METHODS: dict[str, Method] = {
    "ce": Method("ce", "ce", description="cross-entropy only: teachers, students from scratch"),
    "kd": Method("kd", "kd", description="vanilla KD (Hinton et al. 2015)"),
    "kd_mixup": Method("kd_mixup", "kd", "mixup",
                       "KD + teacher-labelled mixup view (Wang et al. 2022)"),
    "kd_cutmix": Method("kd_cutmix", "kd", "cutmix",
                        "KD + teacher-labelled CutMix view (Wang et al. 2022)"),
    "kd_cutmix_pick": Method("kd_cutmix_pick", "kd", "cutmix_pick",
                             "KD + CutMix-pick: most informative of R CutMix draws "
                             "(Wang et al. 2022)"),
    "backward_kd": Method("backward_kd", "kd", "backward",
                          "KD + auxiliary samples from the divergence's input gradient "
                          "(Jafari et al. 2023)"),
    "continuation_kd": Method("continuation_kd", "continuation",
                              description="Continuation-KD (Jafari et al. 2022)"),
    "annealing_kd": Method("annealing_kd", "annealing",
                           description="Annealing-KD (Jafari et al. 2021)"),
}


def get_method(name: str, view: str = "") -> Method:
  """The method called ``name``; a non-empty ``view`` replaces its view maker.

  Objectives and views compose freely: ``get_method("continuation_kd", "cutmix_pick")``
  is Continuation-KD on x plus the KD term on a CutMix-pick view.
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid names: {', '.join(sorted(METHODS))}.")
  method = METHODS[name]
  if view:
    method = dataclasses.replace(method, name=f"{name}+{view}", view=view)
  return method


def get_objective(name: str) -> Callable:
  if name not in OBJECTIVES:
    raise ValueError(f"unknown objective {name!r}; valid names: {', '.join(sorted(OBJECTIVES))}.")
  return OBJECTIVES[name]
