"""Teacher–student agreement on held-out inputs, clean and perturbed, for finished runs.

  python -m kd_jax.experiments.agreement --runs=runs/demo5 --rows=scratch,kd,backward_kd \
      --seeds=0,1,2,3,4 [--out=results/agreement_digits.md]

(runs/demo5: the 5-seed demo's runs, see kd_jax/experiments/demo.py; expected result:
results/agreement_digits.md, whose last line is its full command.)

Backward-pass KD claims a closer match between student and teacher, not only at the training
points. For each row (run directories ``<runs>/<row>_seed<s>``, teacher
``<runs>/teacher_seed<s>``, as kd_jax.experiments.demo writes them) this measures, on the test set:
top-1 agreement and KL(teacher ‖ student) on the clean inputs; agreement under Gaussian
noise (σ in normalised units); and agreement and KL on inputs moved by one signed gradient
step of size η up the teacher–student KL of *that* student (the worst nearby points).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import flags
from jax.sharding import Mesh

from kd_jax import backward, losses
from kd_jax.data import ImageDataset, eval_batches, load_dataset
from kd_jax.experiments import launch, reporting
from kd_jax.train import preprocess as preprocess_lib
from kd_jax.train import setup, sharding

_RUNS = flags.DEFINE_string("runs", "runs/demo", "Directory with the demo's runs.")
_ROWS = flags.DEFINE_list("rows", ["scratch", "kd", "backward_kd"], "Run name prefixes.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Dataset of the runs.")
_NOISE = flags.DEFINE_float("noise", 0.5, "σ of the Gaussian noise (normalised units).")
_STEP = flags.DEFINE_float("step_size", 0.1, "η of the gradient perturbation.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")


def measure(
  student_dir: str,
  teacher_dir: str,
  data: ImageDataset,
  mesh: Mesh,
  noise: float = 0.5,
  step_size: float = 0.1,
) -> dict[str, float]:
  """Agreement (%) and KL of one student with its teacher on ``data``: clean, noisy, moved."""
  student, student_variables = setup.load_trained(student_dir, data, mesh)
  teacher, teacher_variables = setup.load_trained(teacher_dir, data, mesh)
  preprocess = preprocess_lib.image_preprocess(data.mean, data.std)
  low, high = preprocess.valid_range()

  @jax.jit
  def batch_sums(images, mask, key):
    x = preprocess(key, {"image": images}, None, train=False)  # eval mode: key unused
    teacher_fn = lambda v: teacher.predict(teacher_variables, v)
    student_fn = lambda v: student.predict(student_variables, v)
    noisy = x + noise * jax.random.normal(key, x.shape)
    moved = backward.auxiliary_samples(
      teacher_fn, student_fn, x, steps=1, step_size=step_size, clip=(low, high)
    )
    sums = {}
    for name, inputs in (("clean", x), ("noise", noisy), ("gradient", moved)):
      t, s = teacher_fn(inputs), student_fn(inputs)
      sums[f"agree_{name}"] = jnp.sum((jnp.argmax(t, -1) == jnp.argmax(s, -1)) * mask)
      sums[f"kl_{name}"] = jnp.sum(losses.kd_kl(s, t, 1.0) * mask)
    sums["count"] = jnp.sum(mask)
    return sums

  totals = {}
  for index, batch in enumerate(eval_batches(data, 128)):
    sums = jax.device_get(batch_sums(batch["image"], batch["mask"], jax.random.PRNGKey(index)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  count = totals.pop("count")
  return {k: (100.0 if k.startswith("agree") else 1.0) * v / count for k, v in totals.items()}


def agreement_table(
  runs: str,
  rows: list[str],
  seeds: list[int],
  data: ImageDataset,
  mesh: Mesh,
  noise: float = 0.5,
  step_size: float = 0.1,
) -> dict:
  """{row: {measure: [value per seed]}} for ``<runs>/<row>_seed<s>`` against their teachers."""
  table = {}
  for row in rows:
    results = [
      measure(
        os.path.join(runs, f"{row}_seed{seed}"),
        os.path.join(runs, f"teacher_seed{seed}"),
        data,
        mesh,
        noise,
        step_size,
      )
      for seed in seeds
    ]
    table[row] = {k: [r[k] for r in results] for k in results[0]}
  return table


def report_lines(
  table: dict, dataset: str, runs: str, seeds: list[int], noise: float, step_size: float
) -> list[str]:
  lines = [
    f"Teacher–student agreement on the {dataset} test set, runs in "
    f"{runs}, seeds {', '.join(map(str, seeds))} (mean ± std). Noise σ = "
    f"{noise}; gradient: one signed step of η = {step_size} up the KL of each "
    "student, clipped to valid pixels.",
    "",
    "| student | agreement clean (%) | KL clean | agreement noise (%) | "
    "agreement gradient-perturbed (%) | KL gradient-perturbed |",
    "|---|---|---|---|---|---|",
  ]
  for row, values in table.items():
    lines.append(
      f"| {row} | {reporting.mean_std(values['agree_clean'])} | "
      f"{reporting.mean_std(values['kl_clean'], 3)} | {reporting.mean_std(values['agree_noise'])} | "
      f"{reporting.mean_std(values['agree_gradient'])} | {reporting.mean_std(values['kl_gradient'], 3)} |"
    )
  return lines


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  data = load_dataset(_DATASET.value, "test")
  mesh = sharding.make_data_mesh()
  seeds = [int(s) for s in _SEEDS.value]
  table = agreement_table(_RUNS.value, _ROWS.value, seeds, data, mesh, _NOISE.value, _STEP.value)
  lines = report_lines(table, _DATASET.value, _RUNS.value, seeds, _NOISE.value, _STEP.value)
  reporting.finish_report(lines, "agreement", _OUT.value)


if __name__ == "__main__":
  launch.run_app(main)
