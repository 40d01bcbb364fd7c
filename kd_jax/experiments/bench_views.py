"""Cost of each extra view over the plain KD step, measured against what its passes predict.

Views: mixup, CutMix, CutMix-pick (three scores) and backward-pass KD with K = 1, 2, 4.

  python -m kd_jax.experiments.bench_views [--teacher=resnet20 --student=resnet8 --batch=64
      --image_size=32 --repeats=20 --out=results/bench_views_cpu.md]

In one process: time a teacher forward, a student forward and a student forward+backward on
one batch (the pass costs), then every method's full compiled training step, alternating
between methods round by round after a warm-up (kd_jax.experiments.benchmark), and report the
median step time (with its min–max over the rounds) divided by the plain KD step's.
The predicted ratio adds up the passes each step runs:
  kd                         T(B) + S_fb(B)
  kd_mixup, kd_cutmix        T(B) + T(B) [teacher on x'] + S_fb(2B) [x and x' together]
  kd_cutmix_pick, teacher    T(B) + T(R·B) [score the pool] + S_fb(2B)
  kd_cutmix_pick, student    T(B) + S(R·B) [score] + T(B) [teacher on picks] + S_fb(2B)
  kd_cutmix_pick, kl         T(B) + T(R·B) + S(R·B) + S_fb(2B)
  backward_kd, K steps       T(B) + K·(T_in(B) + S_in(B)) [input gradients] + T(B) + S_fb(2B)
with pass costs measured at the batch sizes used (T = teacher forward, S = student forward,
S_fb = student forward + backward to the parameters, T_in / S_in = forward + backward to the
input).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from kd_jax import methods, models
from kd_jax.experiments import benchmark, reporting
from kd_jax.experiments.configs import common
from kd_jax.train import optim, setup, sharding
from kd_jax.train import preprocess as preprocess_lib
from kd_jax.train import state as state_lib

_TEACHER = flags.DEFINE_string("teacher", "resnet20", "Teacher model.")
_STUDENT = flags.DEFINE_string("student", "resnet8", "Student model.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size B.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Square image side (3 channels).")
_CLASSES = flags.DEFINE_integer("classes", 100, "Number of classes.")
_POOL_ROUNDS = flags.DEFINE_integer("pool_rounds", 2, "R, CutMix draws in the pick pool.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed rounds (each runs every method once).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed rounds after the first (compiling) call.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")

# (label, method, pick score or backward steps K)
CASES = (
  ("kd", "kd", None),
  ("backward_kd, K = 1", "backward_kd", 1),
  ("backward_kd, K = 2", "backward_kd", 2),
  ("backward_kd, K = 4", "backward_kd", 4),
  ("kd_mixup", "kd_mixup", None),
  ("kd_cutmix", "kd_cutmix", None),
  ("kd_cutmix_pick (teacher entropy)", "kd_cutmix_pick", "teacher_entropy"),
  ("kd_cutmix_pick (student entropy)", "kd_cutmix_pick", "student_entropy"),
  ("kd_cutmix_pick (KL)", "kd_cutmix_pick", "kl"),
)


def pass_costs(
  teacher: nn.Module,
  teacher_variables: Mapping[str, Any],
  student: nn.Module,
  student_variables: Mapping[str, Any],
  batch: int,
  image_shape: Sequence[int],
  pool_rounds: int,
  warmup: int = 3,
  repeats: int = 10,
) -> dict[str, benchmark.Timing]:
  """Times of the passes a step is made of, at the batch sizes steps use, taking turns."""
  rng = np.random.default_rng(0)

  def images(n):
    return jnp.asarray(rng.normal(size=(n, *image_shape)), jnp.float32)

  def forward(module: nn.Module, variables: Mapping[str, Any], x: jax.Array) -> jax.Array:
    return cast(jax.Array, module.apply(variables, x, train=False))  # no `mutable`: logits

  teacher_forward = jax.jit(lambda x: forward(teacher, teacher_variables, x))
  student_forward = jax.jit(lambda x: forward(student, student_variables, x))

  def student_loss(params, x):
    logits, _ = student.apply(
      {"params": params, "batch_stats": student_variables["batch_stats"]},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.mean(logits**2)

  student_fb = jax.jit(jax.grad(student_loss))
  teacher_in = jax.jit(jax.grad(lambda x: jnp.sum(forward(teacher, teacher_variables, x))))
  student_in = jax.jit(jax.grad(lambda x: jnp.sum(forward(student, student_variables, x))))
  x_b, x_2b, x_pool = images(batch), images(2 * batch), images(pool_rounds * batch)
  return benchmark.time_alternating(
    {
      "T_in(B)": lambda: teacher_in(x_b),
      "S_in(B)": lambda: student_in(x_b),
      "T(B)": lambda: teacher_forward(x_b),
      "T(RB)": lambda: teacher_forward(x_pool),
      "S(RB)": lambda: student_forward(x_pool),
      "S_fb(B)": lambda: student_fb(student_variables["params"], x_b),
      "S_fb(2B)": lambda: student_fb(student_variables["params"], x_2b),
    },
    warmup=warmup,
    repeats=repeats,
    first_call=True,
  )


def predicted_seconds(method: str, score: str | int | None, c: Mapping[str, float]) -> float:
  """The step's predicted seconds from the pass costs ``c`` (median seconds by pass)."""
  if method == "backward_kd":
    steps = cast(int, score)  # backward KD's case gives its number of steps
    return 2 * c["T(B)"] + steps * (c["T_in(B)"] + c["S_in(B)"]) + c["S_fb(2B)"]
  if method == "kd":
    return c["T(B)"] + c["S_fb(B)"]
  if method in ("kd_mixup", "kd_cutmix"):
    return 2 * c["T(B)"] + c["S_fb(2B)"]
  if score == "teacher_entropy":
    return c["T(B)"] + c["T(RB)"] + c["S_fb(2B)"]
  if score == "student_entropy":
    return 2 * c["T(B)"] + c["S(RB)"] + c["S_fb(2B)"]
  return c["T(B)"] + c["T(RB)"] + c["S(RB)"] + c["S_fb(2B)"]


def view_steps(
  teacher_name: str, student_name: str, batch: int, image_size: int, classes: int, pool_rounds: int
) -> tuple[dict[str, tuple[Callable[[], Any], float]], tuple]:
  """Every case's compiled step, ready to run: {label: (run, compile seconds)}, and the
  networks with their variables (for the pass costs)."""
  image_shape = (image_size, image_size, 3)
  mesh = sharding.make_data_mesh()
  teacher = models.create_model(teacher_name, classes)
  student = models.create_model(student_name, classes)
  teacher_variables = sharding.replicate(
    models.init_variables(teacher, jax.random.PRNGKey(0), image_shape), mesh
  )
  student_variables = models.init_variables(student, jax.random.PRNGKey(1), image_shape)
  config = common.base_config()
  config.cutmix_pick.pool_rounds = pool_rounds
  optimizer, _ = optim.make_optimizer(**config.optimizer.to_dict(), steps_per_epoch=100)
  preprocess = preprocess_lib.image_preprocess((0.5,) * 3, (0.25,) * 3, 4, True)
  rng = np.random.default_rng(0)
  host_batch = {
    "image": rng.integers(0, 256, (batch, *image_shape), dtype=np.uint8),
    "label": rng.integers(0, classes, batch).astype(np.int32),
  }
  device_batch = sharding.global_batch(host_batch, mesh)
  hparams = sharding.replicate(
    {
      "temperature": jnp.float32(4.0),
      "ce_weight": jnp.float32(0.1),
      "kd_weight": jnp.float32(0.9),
      "view_weight": jnp.float32(1.0),
    },
    mesh,
  )

  def runner(step, state):
    holder = {"state": state}

    def run():
      holder["state"], metrics = step(holder["state"], device_batch, teacher_variables, hparams, {})
      return metrics

    return run

  runners = {}
  for label, method, score in CASES:
    view_name = methods.get_method(method).view
    view = ml_collections.ConfigDict(config[view_name].to_dict() if view_name else {})
    if method == "backward_kd":
      view.steps = score
    elif score:
      view.score = score
    step = setup.compiled_image_step(
      student,
      optimizer,
      methods.get_method(method),
      preprocess,
      mesh,
      teacher=teacher,
      view_options=view,
    )
    state = sharding.replicate(
      state_lib.create_train_state(student, optimizer, image_shape, 0), mesh
    )
    run = runner(step, state)
    runners[label] = (run, benchmark.timed_call(run))
  networks = (teacher, teacher_variables, student, student_variables, image_shape)
  return runners, networks


def measure(
  teacher_name: str = "resnet20",
  student_name: str = "resnet8",
  batch: int = 64,
  image_size: int = 32,
  classes: int = 100,
  pool_rounds: int = 2,
  repeats: int = 20,
  warmup: int = 3,
) -> list[str]:
  """The report: every case's step time against its prediction from the pass costs."""
  runners, (teacher, teacher_variables, student, student_variables, image_shape) = view_steps(
    teacher_name, student_name, batch, image_size, classes, pool_rounds
  )
  times = benchmark.time_alternating(
    {label: run for label, (run, _) in runners.items()}, warmup=warmup, repeats=repeats
  )
  costs = pass_costs(
    teacher,
    teacher_variables,
    student,
    student_variables,
    batch,
    image_shape,
    pool_rounds,
    warmup,
    repeats,
  )
  medians = {k: v.median for k, v in costs.items()}
  kd_median = times["kd"].median
  kd_predicted = predicted_seconds("kd", None, medians)
  device = jax.devices()[0]
  lines = [
    f"Teacher {teacher_name} → student {student_name}, batch {batch}, "
    f"{image_shape[0]}×{image_shape[1]}×3, {classes} classes, float32, "
    f"R = {pool_rounds}; {jax.device_count()} {device.platform.upper()} device(s) "
    f"({device.device_kind}), {os.cpu_count()} CPU cores, JAX {jax.__version__}; "
    f"{benchmark.protocol(warmup, repeats)}. Ratios are of medians.",
    "",
    "| method | step (ms) | images/s | measured ÷ KD | predicted ÷ KD | "
    "measured ÷ predicted | compile (s) |",
    "|---|---|---|---|---|---|---|",
  ]
  for label, method, score in CASES:
    median = times[label].median
    measured_ratio = median / kd_median
    predicted_ratio = predicted_seconds(method, score, medians) / kd_predicted
    lines.append(
      f"| {label} | {times[label].ms()} | {batch / median:.0f} | "
      f"{measured_ratio:.2f} | {predicted_ratio:.2f} | "
      f"{measured_ratio / predicted_ratio:.2f} | {runners[label][1]:.1f} |"
    )
  lines += [
    "",
    "Pass costs (ms), median (min–max) over the same number of alternating "
    "rounds: " + ", ".join(f"{k} {v.ms()}" for k, v in costs.items()),
  ]
  return lines


def main(argv: Sequence[str]) -> None:
  del argv
  lines = measure(
    _TEACHER.value,
    _STUDENT.value,
    _BATCH.value,
    _IMAGE_SIZE.value,
    _CLASSES.value,
    _POOL_ROUNDS.value,
    _REPEATS.value,
    _WARMUP.value,
  )
  reporting.finish_report(lines, "bench_views", _OUT.value)


if __name__ == "__main__":
  app.run(main)
