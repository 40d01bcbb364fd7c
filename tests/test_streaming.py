"""Streamed input: host crops, the record pipeline, the builders on raw-format fakes, and runs
that stream Tiny ImageNet end to end (kill -9 and resume, two processes = one).

The fakes are written by tests/raw_datasets.py in each dataset's published layout; one
prepared Tiny ImageNet is shared by the module's runs.
"""

import io
import os
import signal
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from kd_jax.data import EpochSampler, RecordError, RecordSplit, images, open_images, streamed
from kd_jax.experiments.configs import tiny_imagenet
from kd_jax.train import loop
from tests import raw_datasets
from tests.conftest import ROOT, override
from tests.test_loop import _final_variables
from tests.test_processes import (_checkpoint_steps, _run, _run_two_processes,
                                  _start_and_signal, multihost_flags)

TINY_CONFIG = os.path.join(ROOT, "kd_jax", "experiments", "configs", "tiny_imagenet.py")
# A short Tiny ImageNet run: 400 fake images, batches of 40, a tiny model at 32 × 32.
SHORT = {"model": "cnn_tiny", "num_epochs": 1, "batch_size": 40, "eval_batch_size": 100,
         "input.image_size": 32, "augment.crop_pad": 4, "progress_bar": False,
         "checkpoint_every_steps": 0, "log_every_steps": 0}


def _overrides(**extra):
  return [f"--config.{key}={value}" for key, value in {**SHORT, **extra}.items()]


def _config(argument, data_dir, **extra):
  return override(tiny_imagenet.get_config(argument), {**SHORT, "data_dir": data_dir, **extra})


def test_crop_boxes_match_hand_computed_values():
  # Too wide for any try: the whole height, the widest 4:3 box, centred.
  assert images.random_resized_crop_box(1000, 10, np.random.default_rng(0)) == (493, 0, 13, 10)
  box = images.random_resized_crop_box(500, 375, np.random.default_rng(0))
  left, top, width, height = box
  assert 0 <= left and left + width <= 500 and 0 <= top and top + height <= 375
  assert 0.08 * 500 * 375 * 0.98 <= width * height <= 500 * 375
  assert 3 / 4 * 0.98 <= width / height <= 4 / 3 * 1.02
  assert images.resized_shorter_side(500, 375, 256) == (341, 256)
  assert images.resized_shorter_side(300, 400, 256) == (256, 341)
  assert images.center_crop_box(256, 300, 224) == (16, 38, 224, 224)
  with pytest.raises(ValueError, match="smaller than the 224×224 crop"):
    images.center_crop_box(200, 300, 224)


def _jpeg(label, size=(90, 70)):
  return raw_datasets.class_image(label, np.random.default_rng(label), size)


def test_record_pipeline_is_a_pure_function_of_seed_and_step_on_any_number_of_processes():
  """Resuming at step s gives the uninterrupted run's batches; two processes' shares make
  the one-process batch; the worker count changes nothing; the crops are random."""
  source = [{"image": _jpeg(i, (60 + i, 50 + 2 * i)), "label": i % 5} for i in range(24)]
  split = lambda workers: RecordSplit(source, images.train_transform(16),
                                      images.eval_transform(16), name="fake", workers=workers)
  sampler = EpochSampler(len(source), 8, seed=3)
  straight = list(split(1).train_batches(sampler, 0, 6))
  assert len(straight) == 6 and straight[0]["image"].shape == (8, 16, 16, 3)
  resumed = list(split(3).train_batches(sampler, 4, 6))
  for a, b in zip(resumed, straight[4:]):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  halves = [list(split(2).train_batches(EpochSampler(24, 8, 3, rank, 2), 0, 6))
            for rank in range(2)]
  for step in range(6):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][step]["image"], halves[1][step]["image"]]),
        straight[step]["image"])
  # The same example at two steps (epochs 0 and 2) gets two different crops.
  first = sampler.global_indices(0)[0]
  later = [(s, list(sampler.global_indices(s)).index(first)) for s in (6, 7, 8)
           if first in sampler.global_indices(s)][0]
  again = list(split(1).train_batches(sampler, later[0], later[0] + 1))[0]
  assert not np.array_equal(again["image"][later[1]], straight[0]["image"][0])
  # Evaluation: sequential, the last batch padded and masked, the same on 2 processes.
  batches = list(split(2).eval_batches(10))
  assert [b["mask"].sum() for b in batches] == [10, 10, 4]
  np.testing.assert_array_equal(batches[0]["label"], [i % 5 for i in range(10)])
  share = list(split(2).eval_batches(10, process_index=1, process_count=2))
  np.testing.assert_array_equal(share[2]["mask"], [0, 0, 0, 0, 0])
  np.testing.assert_array_equal(share[0]["image"], batches[0]["image"][5:])


def test_prefetch_raises_where_the_item_was_and_closes_at_any_point():
  import threading
  from kd_jax.data import pipeline
  ours = lambda: sum(t.name == "kd_jax-prefetch" for t in threading.enumerate())
  before = ours()

  def failing():
    yield 1
    raise KeyError("record 7")

  items = pipeline.prefetch(failing(), 2, lambda x: x * 10)
  assert next(items) == 10
  with pytest.raises(KeyError, match="record 7"):
    next(items)
  unstarted = pipeline.prefetch(iter(range(1000)), 2)
  unstarted.close()  # before its first item: the thread stops
  assert list(pipeline.prefetch(iter(range(5)), 3)) == [0, 1, 2, 3, 4]
  assert ours() == before


def test_a_corrupt_record_is_named():
  source = [{"image": _jpeg(0), "label": 0}, {"image": b"\xff\xd8 not a jpeg", "label": 1}]
  split = RecordSplit(source, images.train_transform(8), images.eval_transform(8),
                      name="shard-00003")
  with pytest.raises(RecordError, match=r"shard-00003: record 1 cannot be decoded"):
    list(split.eval_batches(2))


def test_host_transforms_decode_any_image_to_fixed_size_rgb():
  gray = io.BytesIO()
  Image.fromarray(np.full((40, 30), 200, np.uint8)).save(gray, format="PNG")
  record = {"image": gray.getvalue(), "label": 7}
  out = images.train_transform(24)(record, np.random.default_rng(0))
  assert out["image"].shape == (24, 24, 3) and out["image"].dtype == np.uint8
  assert out["label"] == 7 and np.all(out["image"] == 200)
  assert images.eval_transform(24)(record)["image"].shape == (24, 24, 3)
  # Already the size, "resize" leaves the pixels alone (Tiny ImageNet's 64 × 64 JPEGs).
  pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  same = images.train_transform(8, "resize")({"image": pixels, "label": 0}, None)
  np.testing.assert_array_equal(same["image"], pixels)
  # The JPEG draft path keeps the crop's content (a flat colour stays that colour).
  flat = io.BytesIO()
  Image.fromarray(np.full((400, 400, 3), (10, 120, 240), np.uint8)).save(flat, format="JPEG")
  drafted = images.train_transform(32, jpeg_draft=True)({"image": flat.getvalue(), "label": 0},
                                                        np.random.default_rng(1))["image"]
  np.testing.assert_allclose(drafted.reshape(-1, 3).mean(0), (10, 120, 240), atol=3)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  """A fake Tiny ImageNet written as the folder, prepared by the command line."""
  root = tmp_path_factory.mktemp("tiny")
  raw = str(root / "raw")
  raw_datasets.write_tiny_imagenet(raw)
  data_dir = str(root / "prepared")
  result = _run([sys.executable, "-m", "kd_jax.experiments.prepare_data",
                 "--dataset=tiny_imagenet", f"--manual_dir={raw}", f"--data_dir={data_dir}"])
  assert "prepared tiny_imagenet" in result.stdout
  return data_dir


def _records(data_dir, name, split):
  """The split's records in their stored order: (file name, label, bytes)."""
  directory = streamed.prepared_directory(name, data_dir)
  import tensorflow_datasets as tfds
  source = tfds.builder_from_directory(directory).as_data_source(
      split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return [(r["file_name"], r["label"], r["image"]) for r in source]


def test_tiny_imagenet_from_the_zip_equals_from_the_folder_and_faults_are_named(
    tiny_data, tmp_path):
  from kd_jax.data import builders
  from kd_jax.experiments import prepare_data
  raw = str(tmp_path / "raw")
  raw_datasets.write_tiny_imagenet(raw, as_zip=True)
  zipped = str(tmp_path / "prepared")
  prepare_data.prepare("tiny_imagenet", zipped, raw)
  for split in ("train", "validation"):  # the same records in the same order
    assert _records(zipped, "tiny_imagenet", split) == _records(tiny_data, "tiny_imagenet",
                                                                split)
  train = open_images("tiny_imagenet", "train", tiny_data)
  assert (len(train), train.num_classes, train.image_shape) == (400, 200, (64, 64, 3))
  # Decoded once into memory (its training transform draws nothing) or per batch: the same.
  streaming = open_images("tiny_imagenet", "train", tiny_data, cache="stream")
  assert type(train.split).__name__ == "ArraySplit"
  assert type(streaming.split).__name__ == "RecordSplit"
  sampler = EpochSampler(400, 40, seed=1)
  for a, b in zip(train.split.train_batches(sampler, 9, 12),
                  streaming.split.train_batches(sampler, 9, 12)):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert len(open_images("tiny_imagenet", "test", tiny_data)) == 200
  labels = [label for _, label, _ in _records(tiny_data, "tiny_imagenet", "train")]
  assert np.bincount(labels).tolist() == [2] * 200  # sorted wnids, two images each
  # Faults name what is wrong.
  folder = str(tmp_path / "broken")
  root = raw_datasets.write_tiny_imagenet(folder)
  os.remove(os.path.join(root, "val", "val_annotations.txt"))
  with pytest.raises(builders.ManualDataError, match="no val/val_annotations.txt"):
    prepare_data.prepare("tiny_imagenet", str(tmp_path / "out"), folder)
  with pytest.raises(builders.ManualDataError, match="neither tiny-imagenet-200/ nor"):
    prepare_data.prepare("tiny_imagenet", str(tmp_path / "out"), str(tmp_path))
  with pytest.raises(streamed.DatasetNotPreparedError,
                     match="not prepared in .*prepare_data --dataset=tiny_imagenet"):
    open_images("tiny_imagenet", "train", str(tmp_path / "nothing"))
  assert not os.path.exists(tmp_path / "out" / "tiny_imagenet" / "1.0.0")


def test_a_damaged_shard_is_named(tiny_data, tmp_path):
  import shutil
  copy = str(tmp_path / "data")
  shutil.copytree(tiny_data, copy)
  directory = streamed.prepared_directory("tiny_imagenet", copy)
  shard = os.path.join(directory, "tiny_imagenet-train.array_record-00000-of-00001")
  with open(shard, "r+b") as f:  # scramble 400 bytes in the middle of the file
    f.seek(os.path.getsize(shard) // 2)
    data = f.read(400)
    f.seek(os.path.getsize(shard) // 2)
    f.write(bytes(b ^ 0xFF for b in data))
  named = (r"tiny_imagenet train: record \d+ \(shard .*tiny_imagenet-train.array_record-"
           r"00000-of-00001, record \d+\) cannot be read .*Corrupted")
  train = open_images("tiny_imagenet", "train", copy, cache="stream")
  with pytest.raises(RecordError, match=named):
    list(train.split.train_batches(EpochSampler(len(train), 40, 0), 0, 10))
  with pytest.raises(RecordError, match=named):  # decoding it into memory meets it at once
    open_images("tiny_imagenet", "train", copy)


def test_image_folder_with_and_without_val(tmp_path):
  from kd_jax.data import builders
  from kd_jax.experiments import prepare_data
  with_val = raw_datasets.write_image_folder(str(tmp_path / "a"), train_per_class=4,
                                             val_per_class=2)
  out = str(tmp_path / "out_a")
  prepare_data.prepare("image_folder", out, with_val)
  train, test = (open_images("image_folder", split, out, image_size=24)
                 for split in ("train", "test"))
  assert (len(train), len(test), train.num_classes) == (12, 6, 3)
  batch = next(iter(test.split.eval_batches(6)))
  assert batch["image"].shape == (6, 24, 24, 3)
  np.testing.assert_array_equal(np.sort(batch["label"]), [0, 0, 1, 1, 2, 2])
  alone = raw_datasets.write_image_folder(str(tmp_path / "b"), train_per_class=10)
  out_b = str(tmp_path / "out_b")
  prepare_data.prepare("image_folder", out_b, alone, holdout_fraction=0.2)
  assert (len(open_images("image_folder", "train", out_b)),
          len(open_images("image_folder", "test", out_b))) == (24, 6)
  prepare_data.prepare("image_folder", out_b, alone, holdout_fraction=0.2)  # done: no-op
  with pytest.raises(ValueError, match="prepared from other files .* Use another --data_dir"):
    prepare_data.prepare("image_folder", out_b, with_val)
  # A run resumed on another prepared folder (same classes, other images) is refused.
  config = _config("scratch,cnn_tiny", out, dataset="image_folder", batch_size=4,
                   eval_batch_size=6, **{"input.image_size": 16, "augment.crop_pad": 2})
  loop.train_and_evaluate(config, str(tmp_path / "run"))
  config.data_dir = out_b
  with pytest.raises(loop.ConfigChangedError, match="another dataset"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  os.makedirs(tmp_path / "c" / "empty_class")
  with pytest.raises(ValueError, match="would freeze one random crop per image"):
    open_images("image_folder", "train", out_b, cache="memory")
  with pytest.raises(builders.ManualDataError, match="no class sub-folders|hold no images"):
    prepare_data.prepare("image_folder", str(tmp_path / "out_c"), str(tmp_path / "c"))
  with open(os.path.join(alone, "cat", "cat_0.jpg"), "wb") as f:
    f.write(b"\xff\xd8 truncated")
  with pytest.raises(builders.ManualDataError, match="cat_0.jpg is not a readable image"):
    prepare_data.prepare("image_folder", str(tmp_path / "out_d"), alone)


@pytest.fixture(scope="module")
def imagenet_data(tmp_path_factory):
  """A fake ILSVRC2012: three classes of four JPEGs in the train tarball, eight in val."""
  import tensorflow_datasets as tfds
  from kd_jax.experiments import prepare_data
  root = tmp_path_factory.mktemp("imagenet")
  wnids = open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read().split()
  raw_datasets.write_imagenet(str(root / "raw"), wnids[:3], train_per_class=4, num_val=8)
  prepare_data.prepare("imagenet2012", str(root / "out"), str(root / "raw"))
  return str(root / "out"), wnids


def test_imagenet_prepares_from_its_tarballs(imagenet_data, tmp_path):
  from kd_jax.experiments import prepare_data
  out, wnids = imagenet_data
  with pytest.raises(FileNotFoundError, match="no ILSVRC2012_img_train.tar and no "
                                              "ILSVRC2012_img_val.tar"):
    prepare_data.prepare("imagenet2012", str(tmp_path / "out"), str(tmp_path))
  train = open_images("imagenet2012", "train", out)
  assert (len(train), train.num_classes, train.image_shape) == (12, 1000, (224, 224, 3))
  assert type(train.split).__name__ == "RecordSplit"  # a random crop per step: streamed
  for file_name, label, _ in _records(out, "imagenet2012", "train"):
    assert wnids[label] == file_name.decode().split("_")[0]
  test = open_images("imagenet2012", "test", out, image_size=32)
  batch = next(iter(test.split.eval_batches(4)))
  assert batch["image"].shape == (4, 32, 32, 3)


def test_imagenet_config_roles_stream_end_to_end(imagenet_data, tmp_path):
  """imagenet.py's roles on the fake ImageNet: a teacher, then KD, KD + CutMix-pick,
  backward KD and Continuation-KD from it (a kd_jax run in place of the default torchvision
  file), each streaming random-resized crops."""
  from kd_jax.experiments.configs import imagenet
  out, _ = imagenet_data

  def config(role, **extra):
    return override(imagenet.get_config(role), {
        "data_dir": out, "model": "cnn_tiny", "num_epochs": 1, "batch_size": 4,
        "eval_batch_size": 4, "input.image_size": 32, "progress_bar": False,
        "checkpoint_every_steps": 0, "log_every_steps": 0,
        "teacher_workdir": str(tmp_path / "teacher"), "teacher_checkpoint": "",
        "teacher_model": "", **extra})

  assert imagenet.get_config("kd").teacher_checkpoint == imagenet.TEACHER_CHECKPOINT
  loop.train_and_evaluate(config("teacher", teacher_workdir=""), str(tmp_path / "teacher"))
  for role, extra in (("kd", {}), ("kd_cutmix_pick", {}), ("kd", {"method": "backward_kd"}),
                      ("kd", {"method": "continuation_kd"})):
    summary = loop.train_and_evaluate(config(role, **extra),
                                      str(tmp_path / f"{role}_{extra.get('method', '')}"))
    assert summary["steps"] == 3 and summary["train_step_compilations"] == 1
    assert np.isfinite(summary["last_loss"]) and 0 <= summary["last_agreement"] <= 100


@pytest.fixture(scope="module")
def tiny_teacher(tiny_data, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tiny_teacher"))
  _run([sys.executable, "-m", "kd_jax.experiments.train_teacher",
        f"--config={TINY_CONFIG}:teacher,cnn_tiny", f"--workdir={workdir}",
        f"--config.data_dir={tiny_data}", *_overrides()])
  return workdir


@pytest.mark.parametrize("argument,extra", [
    ("kd,resnet56-resnet20", {}),
    ("kd_cutmix_pick,resnet56-resnet20", {}),
    ("kd,resnet56-resnet20", {"method": "backward_kd"}),
    ("kd,resnet56-resnet20", {"method": "continuation_kd"}),
])
def test_methods_stream_tiny_imagenet_end_to_end(tiny_data, tiny_teacher, argument, extra,
                                                 tmp_path):
  # Decoded per batch (input.cache "stream"; "auto" would hold this split in memory, which
  # test_tiny_imagenet_from_the_zip_... shows gives the same batches).
  config = _config(argument, tiny_data, teacher_workdir=tiny_teacher,
                   **{"input.cache": "stream", **extra})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["dataset"] == "tiny_imagenet" and summary["steps"] == 10
  assert summary["train_step_compilations"] == 1
  assert np.isfinite(summary["last_loss"]) and 0 <= summary["last_agreement"] <= 100


def test_pooled_backward_kd_is_refused_on_a_streamed_dataset(tiny_data, tmp_path):
  config = _config("kd", tiny_data, method="backward_kd", teacher_workdir=str(tmp_path),
                   **{"backward.pool_every_epochs": 1})
  with pytest.raises(ValueError, match="per-step variant, --config.backward.pool_every_"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_streamed_run_killed_or_stopped_resumes_bit_identical_and_two_processes_equal_one(
    tiny_data, tmp_path):
  command = lambda workdir, *extra: [
      sys.executable, "-m", "kd_jax.experiments.train_teacher",
      f"--config={TINY_CONFIG}:scratch,cnn_tiny", f"--workdir={workdir}",
      f"--config.data_dir={tiny_data}",
      *_overrides(num_epochs=3, checkpoint_every_steps=5, **{"input.cache": "stream"}),
      *extra]
  straight = str(tmp_path / "straight")
  _run(command(straight))
  expected, step = _final_variables(straight)
  assert step == 30
  killed = str(tmp_path / "killed")
  returncode, _ = _start_and_signal(command(killed), killed, signal.SIGKILL, min_checkpoints=2)
  assert returncode == -signal.SIGKILL and _checkpoint_steps(killed)[-1] < 30
  # Resumed, then SIGTERM: it saves and exits 143; the third start finishes the run.
  returncode, stderr = _start_and_signal(command(killed), killed, signal.SIGTERM, 0,
                                         beyond_step=_checkpoint_steps(killed)[-1])
  assert returncode == 143, stderr[-2000:]
  _run(command(killed))
  resumed, _ = _final_variables(killed)
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)
  multi = str(tmp_path / "multi")
  _run_two_processes(lambda rank, port: command(multi, *multihost_flags(rank, port)))
  actual, multi_step = _final_variables(multi)
  assert multi_step == 30
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), actual,
               expected)


def test_a_pytorch_teacher_file_distils_on_streamed_imagenet_and_its_top1_comes_first(
    imagenet_data, tmp_path, caplog):
  """--config.teacher_checkpoint: torchvision's ResNet-18 layout saved by torch, read without
  torch (kd_jax.models.from_pytorch); its top-1 is logged before the first step."""
  import logging
  torch = pytest.importorskip("torch")
  from experiments.torch_reference import models as torch_models
  from kd_jax.experiments.configs import imagenet
  out, _ = imagenet_data
  torch.manual_seed(0)
  path = str(tmp_path / "resnet18.pth")
  torch.save({"model": torch_models.create_torch_model("imagenet_resnet18", 1000).state_dict()},
             path)
  config = override(imagenet.get_config("kd"), {
      "data_dir": out, "model": "cnn_tiny", "num_epochs": 1, "batch_size": 4,
      "eval_batch_size": 4, "progress_bar": False, "log_every_steps": 0,
      "teacher_workdir": "", "teacher_checkpoint": path, "teacher_model": "imagenet_resnet18",
      "input.image_size": 32})
  with caplog.at_level(logging.INFO, logger="kd_jax"):
    summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
  lines = [r.getMessage() for r in caplog.records if r.name.startswith("kd_jax")]
  first = next(i for i, line in enumerate(lines) if "teacher imagenet_resnet18 from" in line)
  assert "top-1" in lines[first] and first < next(i for i, line in enumerate(lines)
                                                  if "epoch 1/1 done" in line)
  assert summary["steps"] == 3 and 0 <= summary["last_teacher_top1"] <= 100
  config.teacher_model = ""
  with pytest.raises(ValueError, match="teacher_checkpoint needs config.teacher_model"):
    loop.train_and_evaluate(config, str(tmp_path / "other"))
