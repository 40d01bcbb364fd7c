"""The "T. stddev" diagnostic of Wang et al. (2022) for each view maker, from a teacher run.

  python -m kd_jax.experiments.teacher_stddev --teacher_workdir=runs/demo5/teacher_seed0 \
      [--dataset=digits --batches=200 --blocks_of=4 --out=results/teacher_stddev_digits.md]

For each view (none, mixup, cutmix, cutmix_pick): walk the training batches a run would see
(same sampler, same crop/flip), make x' on device, collect the teacher's probabilities
(τ = 1) of x and x', and report kd_jax.diagnostics.teacher_stddev over blocks of
``blocks_of`` batches. Lower went with lower student test loss in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from kd_jax import diagnostics
from kd_jax.data import load_dataset
from kd_jax.experiments import launch, reporting, shared
from kd_jax.experiments.configs import common
from kd_jax.train import setup, sharding

# Views a teacher alone can make (backward samples and student-scored picks need a student).
STDDEV_VIEWS = ("none", "mixup", "cutmix", "cutmix_pick")

_TEACHER = flags.DEFINE_string(
  "teacher_workdir", None, "Run directory of the teacher.", required=True
)
_DATASET = flags.DEFINE_string("dataset", "digits", "Dataset the teacher was trained on.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch size.")
_BATCHES = flags.DEFINE_integer("batches", 200, "How many training batches to walk.")
_BLOCKS_OF = flags.DEFINE_integer("blocks_of", 4, "Batches per block of the diagnostic.")
_CROP_PAD = flags.DEFINE_integer("crop_pad", 1, "Crop padding of the standard view.")
_FLIP = flags.DEFINE_bool("flip", False, "Random horizontal flips in the standard view.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampler and augmentation seed.")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown table here.")


def stddev_lines(
  teacher_workdir: str,
  dataset: str,
  *,
  batch_size: int = 64,
  batches: int = 200,
  blocks_of: int = 4,
  crop_pad: int = 1,
  flip: bool = False,
  seed: int = 0,
) -> list[str]:
  """The report's table: T. stddev of every view of STDDEV_VIEWS for one teacher run."""
  data = load_dataset(dataset, "train")
  mesh = sharding.make_data_mesh()
  teacher, teacher_variables = setup.load_trained(teacher_workdir, data, mesh)
  config = common.base_config()
  lines = [
    f"T. stddev of teacher {teacher_workdir} on {dataset}: {batches} "
    f"batches of {batch_size}, blocks of {blocks_of} batches, seed "
    f"{seed}.",
    "",
    "| view | samples per batch seen | T. stddev |",
    "|---|---|---|",
  ]
  for view_name in STDDEV_VIEWS:
    probabilities, per_batch = shared.teacher_probabilities(
      view_name,
      teacher,
      teacher_variables,
      data,
      config.get(view_name, {}),
      batch_size=batch_size,
      batches=batches,
      crop_pad=crop_pad,
      flip=flip,
      seed=seed,
    )
    value = diagnostics.teacher_stddev(probabilities, per_batch * blocks_of)
    lines.append(f"| {view_name} | {per_batch} | {float(value):.5f} |")
  return lines


def main(argv: Sequence[str]) -> None:
  del argv
  launch.configure_logging()
  lines = stddev_lines(
    _TEACHER.value,
    _DATASET.value,
    batch_size=_BATCH.value,
    batches=_BATCHES.value,
    blocks_of=_BLOCKS_OF.value,
    crop_pad=_CROP_PAD.value,
    flip=_FLIP.value,
    seed=_SEED.value,
  )
  reporting.finish_report(lines, "teacher_stddev", _OUT.value)


if __name__ == "__main__":
  launch.run_app(main)
