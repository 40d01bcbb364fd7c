"""The toy experiment of Continuation-KD (Jafari et al. 2022, Fig. 2), on a CPU in minutes.

  python -m kd_jax.experiments.toy_continuation [--seeds=0,1,2,3,4 --epochs=200 --margin=0.05
      --out_dir=results]

The teacher is a low-frequency sinusoid plus high-frequency sinusoidal "noise",
``t(x) = sin(x) + a·sin(ω·x)``, on 3,000 points drawn uniformly from [−π, π]. A student MLP
1→128→128→1 (ReLU) is fitted to the teacher's outputs (no labels) with:
  * KD: the squared error to the teacher, ``(s − t)²``;
  * Annealing-KD: ``(s − φ·t)²`` with φ rising from 1/T_max to 1 (T steps down per epoch);
  * Continuation-KD: ``max(0, (s − φ·t)² − m·φ)``, the same φ and a margin m that hides
    gaps below ``m·φ``.
φ follows kd_jax.continuation (T_max = 10), the hinge is kd_jax.losses.continuation_hinge on
1-dimensional "logits". Reported: the mean squared error of each student to the smooth part
``sin(x)`` and to the teacher on a dense grid, mean ± std over seeds, and a plot.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from kd_jax import continuation, losses
from kd_jax.experiments import reporting

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data, init, minibatches).")
_EPOCHS = flags.DEFINE_integer("epochs", 200, "Epochs of 30 minibatches of 100.")
_T_MAX = flags.DEFINE_integer("t_max", 10, "T_max of the phi schedule.")
_MARGIN = flags.DEFINE_float("margin", 0.05, "Continuation-KD margin m.")
_NOISE_AMPLITUDE = flags.DEFINE_float("noise_amplitude", 0.2, "a, the noise sinusoid's size.")
_NOISE_FREQUENCY = flags.DEFINE_float("noise_frequency", 15.0, "omega, its angular frequency.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Write toy_continuation.{md,json,png} here.")

NUM_SAMPLES, BATCH, HIDDEN = 3000, 100, 128
METHODS = ("kd", "annealing_kd", "continuation_kd")
# The MLP's (weight, bias) per layer.
Params = list[tuple[jax.Array, jax.Array]]
# {method: {"smooth": [MSE per seed], "teacher": [MSE per seed]}}
Errors = dict[str, dict[str, list[float]]]


def smooth_part(x: jax.Array) -> jax.Array:
  return jnp.sin(x)


def teacher(x: jax.Array, amplitude: float = 0.2, frequency: float = 15.0) -> jax.Array:
  """The smooth part plus the sinusoidal "noise" ``amplitude·sin(frequency·x)``."""
  return smooth_part(x) + amplitude * jnp.sin(frequency * x)


def init_mlp(key: jax.Array) -> Params:
  sizes = (1, HIDDEN, HIDDEN, 1)
  params = []
  for k, (fan_in, fan_out) in zip(jax.random.split(key, 3), itertools.pairwise(sizes)):
    bound = 1.0 / np.sqrt(fan_in)  # PyTorch's nn.Linear default
    wk, bk = jax.random.split(k)
    params.append(
      (
        jax.random.uniform(wk, (fan_in, fan_out), minval=-bound, maxval=bound),
        jax.random.uniform(bk, (fan_out,), minval=-bound, maxval=bound),
      )
    )
  return params


def mlp(params: Params, x: jax.Array) -> jax.Array:
  h = x
  for w, b in params[:-1]:
    h = jax.nn.relu(h @ w + b)
  w, b = params[-1]
  return h @ w + b


def loss_fn(
  method: str,
  params: Params,
  x: jax.Array,
  phi: float | jax.Array,
  margin: float,
  amplitude: float = 0.2,
  frequency: float = 15.0,
) -> jax.Array:
  s, t = mlp(params, x), teacher(x, amplitude, frequency)
  if method == "kd":
    return jnp.mean((s - t) ** 2)
  if method == "annealing_kd":
    return jnp.mean(losses.continuation_hinge(s, t, phi, 0.0))
  return jnp.mean(losses.continuation_hinge(s, t, phi, margin))


def fit(
  method: str,
  seed: int,
  *,
  epochs: int = 200,
  t_max: int = 10,
  margin: float = 0.05,
  amplitude: float = 0.2,
  frequency: float = 15.0,
) -> Params:
  """Trains one student; returns its parameters."""
  data_key, init_key, order_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  x_train = jax.random.uniform(data_key, (NUM_SAMPLES, 1), minval=-np.pi, maxval=np.pi)
  params = init_mlp(init_key)
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def epoch(params, opt_state, key, phi):
    order = jax.random.permutation(key, NUM_SAMPLES).reshape(-1, BATCH)

    def step(carry, index):
      params, opt_state = carry
      grads = jax.grad(
        lambda p: loss_fn(method, p, x_train[index], phi, margin, amplitude, frequency)
      )(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state

  for e in range(1, epochs + 1):
    temperature = continuation.temperature_at(e, epochs, t_max)
    phi = jnp.float32(continuation.phi(temperature, t_max))
    params, opt_state = epoch(params, opt_state, jax.random.fold_in(order_key, e), phi)
  return params


def run(
  seeds: list[int],
  *,
  epochs: int = 200,
  t_max: int = 10,
  margin: float = 0.05,
  amplitude: float = 0.2,
  frequency: float = 15.0,
) -> tuple[Errors, dict[str, np.ndarray], jax.Array]:
  """Every method over the seeds: ({method: {"smooth": [...], "teacher": [...]}}, the first
  seed's prediction curve per method, the grid)."""
  grid = jnp.linspace(-np.pi, np.pi, 2001)[:, None]
  errors: Errors = {m: {"smooth": [], "teacher": []} for m in METHODS}
  curves: dict[str, np.ndarray] = {}
  for method in METHODS:
    for seed in seeds:
      params = fit(
        method,
        seed,
        epochs=epochs,
        t_max=t_max,
        margin=margin,
        amplitude=amplitude,
        frequency=frequency,
      )
      prediction = mlp(params, grid)
      errors[method]["smooth"].append(float(jnp.mean((prediction - smooth_part(grid)) ** 2)))
      errors[method]["teacher"].append(
        float(jnp.mean((prediction - teacher(grid, amplitude, frequency)) ** 2))
      )
      if seed == seeds[0]:
        curves[method] = np.asarray(prediction[:, 0])
      print(
        f"{method} seed {seed}: MSE to smooth part {errors[method]['smooth'][-1]:.5f}", flush=True
      )
  return errors, curves, grid


def report_lines(
  errors: Errors,
  seeds: Sequence[int],
  *,
  epochs: int,
  t_max: int,
  margin: float,
  amplitude: float,
  frequency: float,
) -> list[str]:
  noise_power = amplitude**2 / 2
  lines = [
    f"Teacher sin(x) + {amplitude}·sin({frequency:g}x), "
    f"{NUM_SAMPLES} samples, MLP 1→128→128→1, Adam 1e-3, {epochs} epochs, "
    f"T_max {t_max}, margin {margin}; seeds {', '.join(map(str, seeds))} "
    f"(mean ± std). The noise itself has mean square {noise_power:.5f}: a student equal "
    f"to the teacher scores that against the smooth part.",
    "",
    "| student | MSE to smooth part sin(x) | MSE to teacher |",
    "|---|---|---|",
  ]
  for method in METHODS:
    lines.append(
      f"| {method} | {reporting.mean_std(errors[method]['smooth'], 5)} | "
      f"{reporting.mean_std(errors[method]['teacher'], 5)} |"
    )
  return lines


def plot(
  path: str,
  curves: Mapping[str, np.ndarray],
  grid: jax.Array,
  seed: int,
  amplitude: float,
  frequency: float,
) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  x = np.asarray(grid[:, 0])
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.plot(
    x, np.asarray(teacher(grid, amplitude, frequency)[:, 0]), color="0.75", lw=1, label="teacher"
  )
  ax.plot(x, np.asarray(smooth_part(grid)[:, 0]), "k--", lw=1.5, label="smooth part sin(x)")
  for method, color in zip(METHODS, ("tab:red", "tab:orange", "tab:blue")):
    ax.plot(x, curves[method], color=color, lw=1.5, label=f"{method} student")
  ax.set(xlabel="x", ylabel="output", title=f"Students fitted to a noisy teacher (seed {seed})")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str]) -> None:
  del argv
  seeds = [int(s) for s in _SEEDS.value]
  settings: dict[str, Any] = dict(  # run's and report_lines' keyword arguments
    epochs=_EPOCHS.value,
    t_max=_T_MAX.value,
    margin=_MARGIN.value,
    amplitude=_NOISE_AMPLITUDE.value,
    frequency=_NOISE_FREQUENCY.value,
  )
  errors, curves, grid = run(seeds, **settings)
  out_dir = _OUT_DIR.value
  out_path = os.path.join(out_dir, "toy_continuation.md") if out_dir else None
  reporting.finish_report(report_lines(errors, seeds, **settings), "toy_continuation", out_path)
  if out_dir:
    with open(os.path.join(out_dir, "toy_continuation.json"), "w") as f:
      json.dump(errors, f, indent=1)
    plot(
      os.path.join(out_dir, "toy_continuation.png"),
      curves,
      grid,
      seeds[0],
      settings["amplitude"],
      settings["frequency"],
    )


if __name__ == "__main__":
  app.run(main)
