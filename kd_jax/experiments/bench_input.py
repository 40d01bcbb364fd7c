"""Input pipeline throughput: decoded, cropped ImageNet-size images per second per host core.

  python -m kd_jax.experiments.bench_input [--images=2560 --batch=64 --repeats=5
      --out=results/bench_input_cpu.md]

In one process, side by side (kd_jax.experiments.benchmark: the candidates alternate round
by round, median and min–max over the rounds), each candidate reads the same ``--images``
JPEGs from one prepared ArrayRecord dataset and returns them as 224 × 224 uint8:

- the floor: a plain loop, one thread, that decodes each record with PIL and takes
  torchvision's random-resized crop (kd_jax.data.images' box, PIL's resize), as a PyTorch
  DataLoader worker does;
- kd_jax's pipeline (kd_jax.data.pipeline.RecordSplit through grain threads: sampler, per
  example random stream, batching) with 1 and 2 workers, and with JPEG draft decoding;
- the evaluation transform (resize to 256, centre crop 224) with 2 workers;
- the in-memory path (kd_jax.data.pipeline.ArraySplit) for CIFAR-size images;
- Tiny ImageNet's case: ``--small_images`` 64 × 64 JPEGs, decoded per batch by 2 workers,
  or decoded once into memory (kd_jax.data.streamed's ``cache``; the one-off decode is
  timed too);

and, beside them, the images per second the compiled KD step consumes on this machine
(``--student`` distilled from ``--teacher`` at ``--step_image_size``; the largest models
kd_jax has until the ImageNet ResNets exist). Per-core rates divide by the threads that
decode (1 for the floor and 1-worker pipeline, the worker count otherwise, at most the
cores). The JPEGs are synthetic (smooth colour fields with texture, 500 × 375 on average,
quality 90, about the size of ImageNet's files): no ImageNet is available offline.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np
from absl import app, flags

from kd_jax.data.pipeline import RecordSource, RecordSplit, Split
from kd_jax.experiments import benchmark, reporting

_IMAGES = flags.DEFINE_integer(
  "images",
  2560,
  "JPEGs written (a fifth held out for the evaluation transform, the rest read per timed pass).",
)
_BATCH = flags.DEFINE_integer("batch", 64, "Global batch of the pipeline.")
_SIZE = flags.DEFINE_integer("size", 224, "Crop size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds (each runs every candidate).")
_STUDENT = flags.DEFINE_string("student", "resnet18", "Student of the KD step timed beside.")
_TEACHER = flags.DEFINE_string("teacher", "resnet50", "Teacher of the KD step timed beside.")
_STEP_SIZE = flags.DEFINE_integer("step_image_size", 64, "Image side of the timed KD step.")
_STEP_BATCH = flags.DEFINE_integer("step_batch", 32, "Batch of the timed KD step.")
_SMALL = flags.DEFINE_integer(
  "small_images",
  4096,
  "64 × 64 JPEGs (Tiny ImageNet's size) for the streamed-or-in-memory comparison.",
)
_OUT = flags.DEFINE_string("out", None, "Write the Markdown report here.")


def _streamed(split: Split) -> RecordSplit:
  """``split`` as a RecordSplit (what a streamed split that is not cached in memory is)."""
  if not isinstance(split, RecordSplit):
    raise TypeError(f"expected a streamed split (RecordSplit); got {type(split).__name__}.")
  return split


def synthetic_jpeg(rng: np.random.Generator, size: tuple[int, int] | None = None) -> bytes:
  """A photograph-like JPEG: smooth colour gradients and blobs, fine texture, quality 90;
  about 500 × 375 unless ``size`` (width, height) is given."""
  from PIL import Image

  width, height = size or (int(rng.integers(400, 600)), int(rng.integers(300, 450)))
  y, x = np.mgrid[0:height, 0:width] / max(width, height)
  image = np.zeros((height, width, 3))
  for channel in range(3):
    for _ in range(4):
      fx, fy, phase = [*rng.uniform(0.5, 6, 2).tolist(), rng.uniform(0, 6.3)]
      image[..., channel] += np.sin(2 * np.pi * (fx * x + fy * y) + phase)
  image = 128 + 30 * image + rng.normal(0, 12, image.shape)
  buffer = io.BytesIO()
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def write_folder(
  root: str, count: int, seed: int = 0, size: tuple[int, int] | None = None
) -> float:
  """``count`` synthetic JPEGs in two class folders; returns their mean size in KB."""
  rng = np.random.default_rng(seed)
  sizes = []
  for index in range(count):
    folder = os.path.join(root, f"class_{index % 2}")
    os.makedirs(folder, exist_ok=True)
    data = synthetic_jpeg(rng, size)
    sizes.append(len(data))
    with open(os.path.join(folder, f"{index:05d}.jpg"), "wb") as f:
      f.write(data)
  return float(np.mean(sizes)) / 1024


def plain_loop(source: RecordSource, count: int, size: int, seed: int = 0) -> list[np.ndarray]:
  """The floor: decode and random-resized-crop each record, one thread, no pipeline."""
  from PIL import Image

  from kd_jax.data import images

  rng = np.random.default_rng(seed)
  out = []
  for index in range(count):
    image = Image.open(io.BytesIO(source[index]["image"])).convert("RGB")
    left, top, width, height = images.random_resized_crop_box(*image.size, rng)
    crop = image.crop((left, top, left + width, top + height))  # torchvision's resized_crop
    out.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)))
  return out


def drain(iterator: Iterable[Mapping[str, np.ndarray]]) -> int:
  return sum(len(batch["label"]) for batch in iterator)


def kd_step_rate(
  student: str, teacher: str, image_size: int, batch: int, repeats: int
) -> tuple[float, benchmark.Timing]:
  """Images per second of the compiled KD step (student forward+backward, teacher forward)."""
  from kd_jax import methods, models
  from kd_jax.models import adapters
  from kd_jax.train import optim, sharding
  from kd_jax.train import preprocess as preprocess_lib
  from kd_jax.train import state as state_lib
  from kd_jax.train import step as step_lib

  mesh = sharding.make_data_mesh()
  shape = (image_size, image_size, 3)
  student_model = adapters.LinenImageModel(models.create_model(student, 1000))
  teacher_model = adapters.LinenImageModel(models.create_model(teacher, 1000))
  optimizer, _ = optim.make_optimizer(
    name="sgd",
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    lr_milestones=(),
    steps_per_epoch=1,
  )
  preprocess = preprocess_lib.image_preprocess((0.5,) * 3, (0.25,) * 3, 0, True)
  state = sharding.replicate(
    state_lib.new_train_state(
      models.init_variables(student_model.module, jax.random.PRNGKey(0), shape),
      optimizer,
      jax.random.PRNGKey(1),
    ),
    mesh,
  )
  teacher_variables = sharding.replicate(
    models.init_variables(teacher_model.module, jax.random.PRNGKey(2), shape), mesh
  )
  method = methods.get_method("kd")
  train_step = step_lib.jit_data_parallel(
    step_lib.make_train_step(student_model, optimizer, method, preprocess, teacher=teacher_model),
    mesh,
  )
  rng = np.random.default_rng(0)
  batch_arrays = sharding.global_batch(
    {
      "image": rng.integers(0, 256, (batch, *shape), dtype=np.uint8),
      "label": rng.integers(0, 1000, batch).astype(np.int32),
    },
    mesh,
  )
  hparams = sharding.replicate(
    {k: np.float32(v) for k, v in methods.hparams_at(method, 1, 1, kd={}).items()}, mesh
  )
  holder = {"state": state}

  def run():
    holder["state"], metrics = train_step(
      holder["state"], batch_arrays, teacher_variables, hparams, {}
    )
    return metrics

  timing = benchmark.time_one(run, warmup=1, repeats=repeats)
  return batch / timing.median, timing


def main(argv: Sequence[str]) -> None:
  del argv
  import time

  from kd_jax.data import ArraySplit, EpochSampler, images, open_images
  from kd_jax.experiments import prepare_data

  cores = os.cpu_count() or 1
  count, size, batch = _IMAGES.value, _SIZE.value, _BATCH.value
  with tempfile.TemporaryDirectory() as scratch:
    raw, data_dir = os.path.join(scratch, "raw"), os.path.join(scratch, "prepared")
    mean_kb = write_folder(raw, count)
    prepare_data.prepare("image_folder", data_dir, raw, holdout_fraction=0.2)
    splits = {  # random-resized training crops: always streamed (RecordSplit)
      workers: _streamed(
        open_images("image_folder", "train", data_dir, image_size=size, workers=workers).split
      )
      for workers in (1, 2)
    }
    drafted = open_images(
      "image_folder", "train", data_dir, image_size=size, workers=2, jpeg_draft=True
    ).split
    evaluation = open_images(
      "image_folder", "test", data_dir, image_size=size, workers=2, cache="stream"
    ).split  # decoded per batch, as ImageNet's 50,000
    available = len(splits[1])
    steps = available // batch
    images_per_pass = steps * batch
    sampler = EpochSampler(available, batch, seed=0)
    in_memory = ArraySplit(
      {
        "image": np.random.default_rng(0).integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
        "label": np.zeros(50_000, np.int32),
      }
    )
    memory_sampler = EpochSampler(50_000, batch, seed=0)
    memory_steps = 200
    small_raw, small_dir = os.path.join(scratch, "small"), os.path.join(scratch, "small_prep")
    small_kb = write_folder(small_raw, _SMALL.value, seed=1, size=(64, 64))
    prepare_data.prepare("image_folder", small_dir, small_raw, holdout_fraction=0.01)
    small_source = _streamed(
      open_images("image_folder", "train", small_dir, image_size=64, cache="stream").split
    ).source
    small_stream = RecordSplit(
      small_source,
      images.train_transform(64, "resize"),
      images.eval_transform(64, "resize"),
      workers=2,
    )
    start = time.perf_counter()
    small_memory = small_stream.materialize()
    small_decode_seconds = time.perf_counter() - start
    small_steps = len(small_stream) // batch
    small_sampler = EpochSampler(len(small_stream), batch, seed=0)
    candidates = {
      "floor": lambda: plain_loop(splits[1].source, images_per_pass, size),
      "pipeline, 1 worker": lambda: drain(splits[1].train_batches(sampler, 0, steps)),
      "pipeline, 2 workers": lambda: drain(splits[2].train_batches(sampler, 0, steps)),
      "pipeline, 2 workers, JPEG draft": lambda: drain(drafted.train_batches(sampler, 0, steps)),
      "evaluation transform, 2 workers": lambda: drain(evaluation.eval_batches(batch)),
      "in memory, 32 × 32": lambda: drain(in_memory.train_batches(memory_sampler, 0, memory_steps)),
      "64 × 64 JPEGs streamed, 2 workers": lambda: drain(
        small_stream.train_batches(small_sampler, 0, small_steps)
      ),
      "64 × 64 decoded once into memory": lambda: drain(
        small_memory.train_batches(small_sampler, 0, small_steps)
      ),
    }
    timings = benchmark.time_alternating(candidates, warmup=1, repeats=_REPEATS.value)
    eval_images = len(evaluation)
  images_of = {
    "floor": images_per_pass,
    "evaluation transform, 2 workers": eval_images,
    "in memory, 32 × 32": memory_steps * batch,
    "64 × 64 JPEGs streamed, 2 workers": small_steps * batch,
    "64 × 64 decoded once into memory": small_steps * batch,
  }
  threads = {
    "floor": 1,
    "pipeline, 1 worker": 1,
    "pipeline, 2 workers": 2,
    "pipeline, 2 workers, JPEG draft": 2,
    "evaluation transform, 2 workers": 2,
    "in memory, 32 × 32": 1,
    "64 × 64 JPEGs streamed, 2 workers": 2,
    "64 × 64 decoded once into memory": 1,
  }
  floor_rate = images_per_pass / np.asarray(timings["floor"].samples)
  lines = [
    f"Input pipeline throughput (issue 26): {count} synthetic JPEGs of {mean_kb:.0f} KB on "
    f"average (about 500 × 375, quality 90), cropped to {size} × {size}; batch {batch}; "
    f"{_REPEATS.value} alternating rounds, median (min–max). Machine: {cores} CPU cores, "
    f"{jax.devices()[0].platform.upper()}, JAX {jax.__version__}.",
    "",
    "| path | images/s | images/s per core | per core vs the floor |",
    "|---|---|---|---|",
  ]
  for name, timing in timings.items():
    images = images_of.get(name, images_per_pass)
    rates = images / np.asarray(timing.samples)
    per_core = rates / min(threads[name], cores)
    ratio = per_core / np.median(floor_rate)
    lines.append(
      f"| {name} | {np.median(rates):.0f} ({rates.min():.0f}–{rates.max():.0f}) | "
      f"{np.median(per_core):.0f} | {np.median(ratio):.2f} "
      f"({ratio.min():.2f}–{ratio.max():.2f}) |"
    )
  step_rate, step_timing = kd_step_rate(
    _STUDENT.value, _TEACHER.value, _STEP_SIZE.value, _STEP_BATCH.value, max(2, _REPEATS.value // 2)
  )
  lines += [
    "",
    f"64 × 64 JPEGs ({small_kb:.1f} KB on average): decoding all "
    f"{len(small_memory)} once into memory took {small_decode_seconds:.2f} s with 2 "
    f"workers ({len(small_memory) / small_decode_seconds:.0f} images/s), paid once "
    "per run.",
    "",
    f"The KD step ({_STUDENT.value} student, {_TEACHER.value} teacher, "
    f"{_STEP_SIZE.value} × {_STEP_SIZE.value}, batch {_STEP_BATCH.value}, "
    f"float32) consumes {step_rate:.1f} images/s on this machine (step "
    f"{step_timing.ms(0)} ms).",
  ]
  reporting.finish_report(lines, "bench_input", _OUT.value)


if __name__ == "__main__":
  app.run(main)
