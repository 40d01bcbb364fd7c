# The command line of experiments.bench_vs_torch: its flags are defined and read here only,
# the rest of the package takes arguments.

from __future__ import annotations

from absl import app, flags

from experiments import bench_vs_torch
from kd_jax.experiments import reporting
from experiments.bench_vs_torch import DEFAULT_SUITES, SUITES, Settings, harness, measure

__doc__ = bench_vs_torch.__doc__  # what --help prints: the package's description

_SUITES = flags.DEFINE_list("suites", list(DEFAULT_SUITES),
                            f"Tables to time: {', '.join(SUITES)}.")
_TEACHER = flags.DEFINE_string("teacher", "resnet20", "Image teacher.")
_STUDENT = flags.DEFINE_string("student", "resnet8", "Image student.")
_ROLEWISE_TEACHER = flags.DEFINE_string("rolewise_teacher", "resnet18_narrow",
                                        "Role-wise: full-precision teacher.")
_ROLEWISE_STUDENT = flags.DEFINE_string("rolewise_student", "resnet18_narrow_w2a2",
                                        "Role-wise: low-bit student.")
_BATCH = flags.DEFINE_integer("batch", 64, "Image batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Square image side (3 channels).")
_CLASSES = flags.DEFINE_integer("classes", 100, "Number of image classes.")
_TEXT_SIZE = flags.DEFINE_enum("text_size", "minilm", ["minilm", "tiny"],
                               "minilm: 6 layers × 384, 30,522-token vocabulary (student: "
                               "layers 0, 2, 4); tiny: 2 × 16, 100 tokens (for tests).")
_TEXT_BATCH = flags.DEFINE_integer("text_batch", 16, "Text batch size (sequences).")
_TEXT_LENGTH = flags.DEFINE_integer("text_length", 64, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed rounds (each runs every step once).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed rounds after the first (compiling) call.")
_METHODS = flags.DEFINE_list("methods", None, "Subset of the image methods (default: all).")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile'd models.")
_THREADS = flags.DEFINE_integer("threads", 0, "CPU threads for PyTorch (0: all cores, as "
                                "XLA uses).")
_GPU_PRECISION = flags.DEFINE_enum("gpu_precision", "tf32", ["tf32", "float32"],
                                   "On a GPU, both sides' float32 matmuls and convolutions: "
                                   "TF32 or full float32.")
_IMAGENET_TEACHER = flags.DEFINE_string("imagenet_teacher", Settings.imagenet_teacher,
                                        "ImageNet teacher (the imagenet config's).")
_IMAGENET_STUDENT = flags.DEFINE_string("imagenet_student", Settings.imagenet_student,
                                        "ImageNet student (the imagenet config's).")
_IMAGENET_BATCH = flags.DEFINE_integer("imagenet_batch", 256, "ImageNet batch size (images); "
                                       "on a GPU 256 or the largest that fits.")
_IMAGENET_IMAGE_SIZE = flags.DEFINE_integer("imagenet_image_size", 224,
                                            "ImageNet crop side (smaller for tests).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "The accelerator's dense bf16 peak in "
                                  "TFLOP/s for the ImageNet table's MFU (0: by device kind).")
_OUT = flags.DEFINE_string("out", None, "Write the Markdown tables here (and a .png beside it).")

# Run as ``python -m``, absl files these flags under this file's path; the report's command
# (reporting.command_line) looks them up under the script's module name.
for _holder in (_SUITES, _TEACHER, _STUDENT, _ROLEWISE_TEACHER, _ROLEWISE_STUDENT, _BATCH,
                _IMAGE_SIZE, _CLASSES, _TEXT_SIZE, _TEXT_BATCH, _TEXT_LENGTH, _REPEATS,
                _WARMUP, _METHODS, _TORCH_COMPILE, _THREADS, _GPU_PRECISION, _IMAGENET_TEACHER,
                _IMAGENET_STUDENT, _IMAGENET_BATCH, _IMAGENET_IMAGE_SIZE, _PEAK_TFLOPS, _OUT):
  flags.FLAGS.register_flag_by_module("experiments.bench_vs_torch",
                                      flags.FLAGS[_holder.name])


def main(argv):
  del argv
  settings = Settings(
      suites=tuple(_SUITES.value), teacher=_TEACHER.value, student=_STUDENT.value,
      rolewise_teacher=_ROLEWISE_TEACHER.value, rolewise_student=_ROLEWISE_STUDENT.value,
      batch=_BATCH.value, image_size=_IMAGE_SIZE.value, classes=_CLASSES.value,
      text_size=_TEXT_SIZE.value, text_batch=_TEXT_BATCH.value, text_length=_TEXT_LENGTH.value,
      repeats=_REPEATS.value, warmup=_WARMUP.value,
      methods=tuple(_METHODS.value) if _METHODS.value else None,
      torch_compile=_TORCH_COMPILE.value, threads=_THREADS.value,
      gpu_precision=_GPU_PRECISION.value, imagenet_teacher=_IMAGENET_TEACHER.value,
      imagenet_student=_IMAGENET_STUDENT.value, imagenet_batch=_IMAGENET_BATCH.value,
      imagenet_image_size=_IMAGENET_IMAGE_SIZE.value, peak_tflops=_PEAK_TFLOPS.value)
  try:
    lines, suites, sides, times = measure(settings)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  if _OUT.value:
    lines.append(harness.chart_beside(_OUT.value, suites, sides, times))
  reporting.finish_report(lines, "bench_vs_torch", _OUT.value, package=reporting.CLONE_SCRIPTS)


if __name__ == "__main__":
  app.run(main)
