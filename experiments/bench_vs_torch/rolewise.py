"""The rolewise suite: role-wise KD's stage-2 step beside plain KD with crop/flip.

Both steps train the same low-bit student from the same frozen full-precision teacher. The
stage-2 step augments with a PBA policy (plus pad-crop/flip and cutout): kd_jax applies it on
device inside the compiled step (kd_jax.pba's member step); the PyTorch side applies it as
PBA's data pipeline does, image by image with PIL on the host
(experiments/torch_reference/pil_policy.py), before the twins' KD step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_vs_torch import harness
from experiments.bench_vs_torch.harness import HPARAMS, Runner, Settings, Suite
from experiments.bench_vs_torch.images import (ImagePair, MEAN, STD, jax_image_runner,
                                               sgd_optimizer, torch_image_runner, view_config)
from kd_jax import pba

ROLEWISE_KD, ROLEWISE = "kd, crop/flip", "role-wise stage 2, PBA policy"
FILL = tuple(int(round(255 * m)) for m in MEAN)  # PBA fills with the dataset mean
ROLEWISE_CUTOUT = 8  # role-wise KD's CIFAR-100 pipeline


def rolewise_policy() -> np.ndarray:
  """A fixed policy with every operation possible (probabilities 0..10, magnitudes 0..9)."""
  rng = np.random.default_rng(7)
  return np.stack([rng.integers(0, 11, 30), rng.integers(0, 10, 30)], axis=1).astype(np.int32)


def jax_rolewise_runner(pair: ImagePair) -> Runner:
  """kd_jax.pba's member step (the core step with the role-wise policy preprocess): policy,
  pad/crop/flip/cutout and KD in one compiled program."""
  member = pba.MemberSetup(pair.student, sgd_optimizer(), MEAN, STD, FILL, pad=4, flip=True,
                          cutout_size=ROLEWISE_CUTOUT, teacher_model=pair.teacher)
  state = jax.tree.map(lambda x: x[0], pba.init_population(
      pair.student, member.optimizer, pair.image_shape, [0],
      init_variables=pair.student_variables))
  step = jax.jit(pba.make_member_step(member), donate_argnums=(0,))
  hparams = {k: jnp.float32(HPARAMS[k])
             for k in ("temperature", "ce_weight", "kd_weight", "view_weight")}
  return harness.jax_runner(
      step, state, {"image": jnp.asarray(pair.images), "label": jnp.asarray(pair.labels)},
      pair.teacher_variables, {**hparams, "policy": jnp.asarray(rolewise_policy())}, {})


def torch_rolewise_runner(pair: ImagePair, device, compile_models) -> Runner:
  """PBA's host pipeline (PIL, image by image), then the KD step of the PyTorch twins."""
  import torch
  from experiments.torch_reference import pil_policy, steps as torch_steps
  allocated_before = harness.torch_allocated(device)
  student, teacher = pair.torch_twins(device, compile_models)
  optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  labels = torch.from_numpy(pair.labels).long().to(device)
  policy = rolewise_policy()
  rng = np.random.default_rng(0)
  mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
  std = torch.tensor(STD, device=device).view(1, -1, 1, 1)

  def run():
    augmented = pil_policy.augment_batch(rng, pair.images, policy, fill=FILL, pad=4,
                                         flip=True, cutout_size=ROLEWISE_CUTOUT)
    x = torch.from_numpy(augmented).to(device).permute(0, 3, 1, 2).float() / 255.0
    torch_steps.distill_step(student, teacher, optimizer, (x - mean) / std, labels,
                             objective="kd", hparams=HPARAMS)
    harness.synchronize(device)

  return harness.torch_timed(run, device, allocated_before)


def rolewise_suite(settings: Settings, sides, device, mesh) -> Suite:
  """Plain KD with crop/flip, then the stage-2 step, on ``settings``' role-wise networks."""
  shape = (settings.image_size, settings.image_size, 3)
  pair = ImagePair(settings.rolewise_teacher, settings.rolewise_student, settings.batch, shape,
                   settings.classes)
  kd_view = view_config("kd")
  runners = {(ROLEWISE_KD, "JAX"): jax_image_runner(pair, "kd", kd_view, mesh),
             (ROLEWISE, "JAX"): jax_rolewise_runner(pair)}
  for side in sides[1:]:
    harness.reset_torch_compile(side)
    runners[ROLEWISE_KD, side] = torch_image_runner(pair, "kd", kd_view, device,
                                                    side == "torch.compile")
    harness.reset_torch_compile(side)
    runners[ROLEWISE, side] = torch_rolewise_runner(pair, device, side == "torch.compile")
  print("role-wise: built", flush=True)
  title = (f"Role-wise KD, stage 2: teacher {pair.teacher_name} → student "
           f"{pair.student_name}, batch {pair.batch}, {shape[0]}×{shape[1]}×3, "
           f"{pair.classes} classes; policy + pad-crop/flip + cutout {ROLEWISE_CUTOUT} "
           "(kd_jax: on device in the step; PyTorch: PIL on the host, as PBA's pipeline).")
  return Suite(title, "images", pair.batch, [ROLEWISE_KD, ROLEWISE], runners)
