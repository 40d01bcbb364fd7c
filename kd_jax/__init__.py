"""kd_jax: knowledge distillation with data augmentation in JAX/Flax.

Map of the package (each submodule is importable as ``kd_jax.<name>`` and loads on first use,
so ``import kd_jax`` stays cheap):

  Pure functions (import only JAX; use them from your own training code)
    losses         kd_kl, cross_entropy, entropy, kd_objective, continuation_hinge
    augment        random_crop_flip, normalize, mixup, cutmix, cutmix_box, pick_top
    backward       auxiliary_samples (input-gradient samples), token_auxiliary_embeddings
    continuation   Continuation-KD / Annealing-KD schedules: temperature_at, phi, psi_*
    quant          DoReFa low-bit weights and activations
    policies       PBA's operations and policies, on device (role-wise augmentation)
    diagnostics    teacher_stddev (Wang et al.'s "T. stddev")
    validation     argument checks, checked_labels (labels inside jit, with checkify)

  Training core
    methods        every method as one unit: get_method, make_view, hparams_at, METHODS
    models         Flax models (create_model, MODEL_NAMES) and adapters for your own models
    train          step (make_train_step), loop (train_and_evaluate, run_loop), optim,
                   sharding, checkpoint, metrics, preprocess, setup
    pba            population-based augmentation search and schedule training (vmap)
    data           datasets behind one interface (pipeline.Split): open_images, in-memory
                   and streamed splits (ImageNet, Tiny ImageNet, image folders), text datasets

Entry points: ``kd_jax.train_and_evaluate(config, workdir)`` trains one run from a config
(kd_jax/experiments/configs/); ``kd_jax.get_method(name, view)`` gives a method to build a
step with ``kd_jax.train.step.make_train_step``. The scripts are ``kd_jax.experiments``
(``python -m kd_jax.experiments.demo``; they need the ``[experiments]`` extra).
Nothing here imports torch or tensorflow; the TFDS loaders import them lazily.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what __getattr__ loads on first use, spelled out for type checkers and IDEs
  from kd_jax import (
    augment,
    backward,
    continuation,
    data,
    diagnostics,
    losses,
    methods,
    models,
    pba,
    policies,
    quant,
    train,
    validation,
  )
  from kd_jax.methods import get_method, make_view
  from kd_jax.train.loop import train_and_evaluate
  from kd_jax.train.step import make_train_step

__version__ = "0.1.0"

SUBMODULES = (
  "augment",
  "backward",
  "continuation",
  "data",
  "diagnostics",
  "losses",
  "methods",
  "models",
  "pba",
  "policies",
  "quant",
  "train",
  "validation",
)
# Entry points: name -> (module, attribute), loaded on first use.
ENTRY_POINTS = {
  "train_and_evaluate": ("kd_jax.train.loop", "train_and_evaluate"),
  "get_method": ("kd_jax.methods", "get_method"),
  "make_view": ("kd_jax.methods", "make_view"),
  "make_train_step": ("kd_jax.train.step", "make_train_step"),
}

__all__ = [  # SUBMODULES, ENTRY_POINTS and the version (a literal, for type checkers)
  "__version__",
  "augment",
  "backward",
  "continuation",
  "data",
  "diagnostics",
  "get_method",
  "losses",
  "make_train_step",
  "make_view",
  "methods",
  "models",
  "pba",
  "policies",
  "quant",
  "train",
  "train_and_evaluate",
  "validation",
]
assert set(__all__) == {*SUBMODULES, *ENTRY_POINTS, "__version__"}


def __getattr__(name):
  if name in SUBMODULES:
    return importlib.import_module(f"kd_jax.{name}")
  if name in ENTRY_POINTS:
    module, attribute = ENTRY_POINTS[name]
    return getattr(importlib.import_module(module), attribute)
  raise AttributeError(
    f"module 'kd_jax' has no attribute {name!r}; it has: {', '.join([*SUBMODULES, *ENTRY_POINTS])}."
  )


def __dir__():
  return sorted(set(globals()) | set(__all__))
