"""Datasets: the embedded digits, the seeded resumable sampler, TFDS CIFAR builders offline."""

import os
from unittest import mock

import numpy as np
import pytest

from kd_jax.data import DATASET_NAMES, EpochSampler, ImageDataset, eval_batches, load_dataset


def test_digits_split_is_fixed_and_stratified():
  train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
  assert (len(train), len(test)) == (1438, 359)
  assert train.images.dtype == np.uint8 and train.image_shape == (8, 8, 1)
  assert train.images.max() == 255
  assert set(np.unique(test.labels)) == set(range(10))
  assert np.array_equal(load_dataset("digits", "test").labels, test.labels)
  # No test image is also a training image (by index of the 1,797 originals: disjoint).
  train_rows = {row.tobytes() for row in train.images}
  duplicates = sum(row.tobytes() in train_rows for row in test.images)
  assert duplicates <= 2  # the UCI set itself has a couple of identical images


def test_sampler_is_a_pure_function_of_seed_and_step():
  sampler = EpochSampler(100, 32, seed=7)
  assert sampler.steps_per_epoch == 3
  epoch0 = np.concatenate([sampler.global_indices(s) for s in range(3)])
  assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch, 4 dropped
  again = EpochSampler(100, 32, seed=7)
  assert np.array_equal(again.global_indices(4), sampler.global_indices(4))  # resume mid-epoch
  assert not np.array_equal(sampler.global_indices(3), sampler.global_indices(0))
  assert not np.array_equal(EpochSampler(100, 32, seed=8).global_indices(0),
                            sampler.global_indices(0))
  assert sampler.position(4) == {"epoch": 1, "batch_in_epoch": 1}


def test_sampler_process_slices_make_up_the_global_batch():
  parts = [EpochSampler(100, 32, 0, process_index=p, process_count=4).local_indices(5)
           for p in range(4)]
  assert np.array_equal(np.concatenate(parts), EpochSampler(100, 32, 0).global_indices(5))


def test_sampler_bad_batch_sizes():
  with pytest.raises(ValueError, match="batch size"):
    EpochSampler(10, 11, 0)
  with pytest.raises(ValueError, match="divisible"):
    EpochSampler(100, 30, 0, process_count=4)


def test_eval_batches_pad_and_mask():
  data = ImageDataset("x", np.zeros((10, 2, 2, 1), np.uint8), np.arange(10) % 3, 3, (0.0,), (1.0,))
  batches = list(eval_batches(data, 4))
  assert [b["image"].shape[0] for b in batches] == [4, 4, 4]
  assert sum(b["mask"].sum() for b in batches) == 10
  assert batches[-1]["mask"].tolist() == [1, 1, 0, 0]


def test_dataset_validation():
  with pytest.raises(ValueError, match="uint8"):
    ImageDataset("x", np.zeros((2, 2, 2, 1), np.float32), np.zeros(2, int), 2, (0.0,), (1.0,))
  with pytest.raises(ValueError, match="labels must lie"):
    ImageDataset("x", np.zeros((2, 2, 2, 1), np.uint8), np.array([0, 5]), 2, (0.0,), (1.0,))


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match="unknown dataset 'mnist3'.*digits.*cifar100"):
    load_dataset("mnist3", "train")
  assert "cifar10" in DATASET_NAMES


# --- TFDS: the real cifar builders, run on tiny files in CIFAR's own binary format. ---

def _write_cifar_binary(path, labels_per_record, images):
  """CIFAR binary records: label byte(s), then 3072 bytes of R, G and B planes."""
  with open(path, "wb") as f:
    for labels, image in zip(labels_per_record, images):
      f.write(bytes(labels))
      f.write(image.transpose(2, 0, 1).tobytes())


def _fake_cifar_archive(root, name, rng):
  """Writes the extracted archive layout that the TFDS builder expects; returns the data."""
  if name == "cifar10":
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder)
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
      f.write("\n".join(f"class{i}" for i in range(10)) + "\n")
    files = {f"data_batch_{i}.bin": 3 for i in range(1, 6)}
    files["test_batch.bin"] = 4
    num_classes, label_count = 10, 1
  else:
    folder = os.path.join(root, "cifar-100-binary")
    os.makedirs(folder)
    for names_file, count in (("coarse_label_names.txt", 20), ("fine_label_names.txt", 100)):
      with open(os.path.join(folder, names_file), "w") as f:
        f.write("\n".join(f"c{i}" for i in range(count)) + "\n")
    files = {"train.bin": 6, "test.bin": 4}
    num_classes, label_count = 100, 2
  written = {"train": [], "test": []}
  for filename, count in files.items():
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    fine = rng.integers(0, num_classes, count)
    labels = [[int(l)] if label_count == 1 else [int(l) // 5, int(l)] for l in fine]
    _write_cifar_binary(os.path.join(folder, filename), labels, images)
    split = "test" if filename.startswith("test") else "train"
    written[split].extend(zip(images, fine))
  return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_tfds_cifar_builder_on_tiny_binary_files(tmp_path, name):
  tfds = pytest.importorskip("tensorflow_datasets")
  rng = np.random.default_rng(0)
  raw_dir = tmp_path / "raw"
  written = _fake_cifar_archive(str(raw_dir), name, rng)
  data_dir = str(tmp_path / "tfds")
  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                         return_value=str(raw_dir)):
    data = load_dataset(name, "train", data_dir=data_dir, download=True)
  test = load_dataset(name, "test", data_dir=data_dir)  # prepared now: no download needed
  assert len(data) == len(written["train"]) and len(test) == len(written["test"])
  assert data.images.dtype == np.uint8 and data.image_shape == (32, 32, 3)
  assert data.num_classes == (10 if name == "cifar10" else 100)
  # The examples come back intact (TFDS may shuffle them): match images to labels.
  expected = {image.tobytes(): int(label) for image, label in written["train"]}
  assert {img.tobytes(): int(l) for img, l in zip(data.images, data.labels)} == expected


def test_unprepared_tfds_dataset_offline_says_how_to_prepare(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from kd_jax.data.tfds_loaders import DatasetNotPreparedError
  with pytest.raises(DatasetNotPreparedError, match="not prepared.*experiments.prepare_data"):
    load_dataset("cifar10", "train", data_dir=str(tmp_path))
