"""Downloads and prepares a TFDS dataset, on a machine with internet access.

  python -m kd_jax.experiments.prepare_data --dataset cifar100 --data_dir ~/tensorflow_datasets

Copy the resulting directory to offline machines and pass --config.data_dir there.
"""

from absl import app, flags

from kd_jax.data import TFDS_DATASETS
from kd_jax.data import tfds_loaders

_DATASET = flags.DEFINE_enum("dataset", None, list(TFDS_DATASETS), "TFDS dataset to prepare.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's own).")
flags.mark_flag_as_required("dataset")


def main(argv):
  del argv
  builder = tfds_loaders.prepare(_DATASET.value, _DATA_DIR.value, download=True)
  print(f"prepared {_DATASET.value} in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
