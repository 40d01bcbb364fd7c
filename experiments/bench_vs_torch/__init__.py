"""Each method's training step in kd_jax against the same step in PyTorch, side by side.

  python -m experiments.bench_vs_torch [--suites=images,rolewise,text --batch=64
      --repeats=20 --torch_compile --out=results/bench_vs_torch_cpu.md]
  python -m experiments.bench_vs_torch --suites=imagenet [--imagenet_batch=256
      --imagenet_image_size=224 --peak_tflops=0 --out=results/bench_vs_torch_imagenet_gpu.md]

Run from a clone's root: the PyTorch side is experiments/torch_reference, which is not
installed with the library.

One table per suite, all timed in one process; a module per suite holds its networks, its
kd_jax and PyTorch runners and its ``*_suite(settings, sides, device, mesh)``:
  images    (images.py) every image method: KD, mixup, CutMix, CutMix-pick, backward-pass
            KD, Continuation-KD, Annealing-KD, teacher ``--teacher`` → student ``--student``;
  rolewise  (rolewise.py) role-wise KD's stage-2 step (PBA policy augmentation, frozen
            full-precision teacher, 2-bit student) beside plain KD with crop/flip on the same
            two networks; kd_jax augments on device inside the compiled step, the PyTorch side
            with PIL on the host, image by image, as PBA's data pipeline does;
  text      (text.py) BERT-style KD, token-level backward-pass KD and Continuation-KD on
            MiniLM-shaped encoders against Hugging Face's BertForSequenceClassification;
  imagenet  (imagenet.py; only when named in ``--suites``) Wang et al.'s ImageNet pair at
            full size: torchvision's ResNet-34 → ResNet-18 (``--imagenet_teacher``,
            ``--imagenet_student``; the tests take small networks), 1,000 classes, batches of
            ``--imagenet_batch`` 224×224 crops (``--imagenet_image_size``), KD, KD +
            CutMix-pick and backward-pass KD (K = 1) in bfloat16, with each step's
            model-FLOPs utilisation. The images suite's runners with ImageNet's settings:
            the crop made on the host as in a kd_jax ImageNet run, so the step flips and
            normalises; kd_jax computes in bfloat16 with float32 parameters, optimiser state
            and losses (``config.dtype = "bfloat16"``); PyTorch as its users set it up for
            speed, ``torch.autocast(bfloat16)`` over float32 parameters and optimiser, model
            and input in ``channels_last``, on a GPU ``cudnn.benchmark``. On a GPU the batch
            is 256 or the largest that fits (experiments/gpu_imagenet_bench.sh falls back to
            128). MFU is the compiled JAX step's FLOPs (XLA's cost analysis) ÷ (median step
            time × the accelerator's dense bf16 peak: harness.BF16_PEAK_FLOPS by
            ``jax.devices()[0].device_kind``, or ``--peak_tflops``), the PyTorch rows counted
            with the same FLOPs (the same models doing the same work); '—' on a CPU or an
            unknown device, the table's note saying why.
harness.py holds what they share (settings, runners, compiling, PyTorch's peak memory, MFU,
the tables and the chart); __main__.py the command line.

Both sides get the same models (the PyTorch twins start from the Flax initial weights), batch,
dtype (float32 storage; the imagenet suite computes in bfloat16) and thread count. On a GPU
both sides also get the same arithmetic for float32 matrix products and convolutions
(``--gpu_precision``): TF32 (the default, what a GPU run uses for speed; PyTorch's own
defaults differ, TF32 for cuDNN convolutions but not for matmuls, so without this the text
suite would compare TF32 JAX with full-float32 PyTorch) or full float32. A step does the whole
job from raw inputs (uint8 images or token ids): augmentation, the frozen teacher, the
method's extra view, the student's forward/backward pass and the update (SGD with momentum 0.9
and weight decay 5e-4 for images, AdamW for text). PyTorch runs eagerly and, with
``--torch_compile``, with its networks wrapped in ``torch.compile``. After a warm-up every
implementation takes its turn step by step, round after round, so that drifts in machine load
hit them all alike (kd_jax.experiments.benchmark). Reported: median (min–max) step time,
examples/s, JAX ÷ PyTorch speed, compile time (JAX: lowering + XLA compilation; PyTorch: the
first call), peak memory, each step's time ÷ its side's plain KD step, and the compiled JAX
step's FLOPs ÷ the KD step's (XLA's cost analysis), which is what the method's extra passes
predict.

Peak memory. JAX: XLA's buffer plan of the compiled step, ``Compiled.memory_analysis``
(arguments + outputs + temporaries − donated aliases). PyTorch: on GPU the caching
allocator's peak over one step (``torch.cuda.max_memory_allocated``) less what it held
before the runner built its models (the runners built earlier stay alive); on CPU the peak
of the profiler's memory timeline over one step. Both count parameters, optimiser state, the batch
and every intermediate, and neither the runtime's code nor its caches.
"""

from __future__ import annotations

import os

from kd_jax.experiments import benchmark
from experiments.bench_vs_torch import harness, imagenet, images, rolewise, text
from experiments.bench_vs_torch.harness import DEFAULT_SUITES, SUITES, Settings, Suite

# --gpu_precision: JAX's name for the same arithmetic (jax_default_matmul_precision).
GPU_PRECISIONS = {"tf32": "tensorfloat32", "float32": "float32"}

# How each suite is built: (settings, sides, torch device, JAX mesh) -> Suite.
BUILDERS = {"images": images.image_suite, "rolewise": rolewise.rolewise_suite,
            "text": text.text_suite, "imagenet": imagenet.imagenet_suite}


def check_gpu_precision(precision: str) -> None:
  """Raises ValueError, naming the valid values, for a precision not in GPU_PRECISIONS."""
  if precision not in GPU_PRECISIONS:
    raise ValueError(f"unknown gpu_precision {precision!r}; valid: {', '.join(GPU_PRECISIONS)}")


def set_float32_precision(precision: str) -> None:
  """Float32 matmuls and convolutions on both sides in TF32 (``"tf32"``) or full float32
  (``"float32"``): JAX's default matmul precision, PyTorch's cuBLAS and cuDNN settings
  (the ``fp32_precision`` attributes of PyTorch 2.9 and later, else ``allow_tf32``)."""
  import jax
  import torch
  check_gpu_precision(precision)
  jax.config.update("jax_default_matmul_precision", GPU_PRECISIONS[precision])
  tf32 = precision == "tf32"
  if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
    torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
    torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
  else:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def measure(settings: Settings) -> tuple[list[str], list[Suite], list[str], dict]:
  """Builds the chosen suites and times all their steps in turns: the report's lines, the
  suites, the implementations and the times ({(suite title, (label, side)): Timing}).
  Raises ValueError for an unknown suite, image method or GPU precision."""
  import jax
  import torch
  from kd_jax.train import sharding
  unknown = set(settings.suites) - set(SUITES)
  if unknown:
    raise ValueError(f"unknown suites {sorted(unknown)}; valid: {', '.join(SUITES)}")
  images.check_methods(settings.methods)
  check_gpu_precision(settings.gpu_precision)
  harness.bf16_peak("cpu", "", settings.peak_tflops)  # a negative peak fails before any work
  threads = settings.threads or os.cpu_count()
  torch.set_num_threads(threads)
  on_gpu = jax.default_backend() == "gpu"
  device = torch.device("cuda" if on_gpu and torch.cuda.is_available() else "cpu")
  if on_gpu:  # the same arithmetic on both sides (module docstring)
    set_float32_precision(settings.gpu_precision)
  mesh = sharding.make_data_mesh(jax.devices()[:1])  # one device each side
  sides = ["JAX", "PyTorch eager"] + (["torch.compile"] if settings.torch_compile else [])
  suites = [BUILDERS[name](settings, sides, device, mesh) for name in SUITES
            if name in settings.suites]
  times = benchmark.time_alternating(
      {(suite.title, key): runner.run for suite in suites for key, runner in suite.runners.items()},
      warmup=settings.warmup, repeats=settings.repeats)

  if on_gpu and device.type == "cuda":
    where = (f"1 GPU ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU cores; "
             f"{settings.gpu_precision} matmuls and convolutions on both sides")
  elif on_gpu:
    where = (f"JAX on 1 GPU ({jax.devices()[0].device_kind}), PyTorch on the CPU (it sees "
             f"no CUDA device: not a like-for-like comparison), {os.cpu_count()} CPU cores")
  else:
    where = f"CPU only, {os.cpu_count()} cores ({threads} PyTorch threads, XLA all cores)"
  precisions = {suite.precision for suite in suites}
  precision = (precisions.pop() if len(precisions) == 1 else
               "float32 (the bfloat16 table's title says how it computes)")
  lines = [f"{where}; JAX {jax.__version__}, PyTorch {torch.__version__}; {precision}; step "
           f"times are the {benchmark.protocol(settings.warmup, settings.repeats)}, every "
           "step of every table taking turns in each round; rates and ratios are of medians.",
           ""]
  for suite in suites:
    lines += harness.suite_lines(suite, sides, {key: timing for (title, key), timing
                                                in times.items() if title == suite.title})
  lines += ["'JAX speed ÷ this' above 1 means JAX is faster than that implementation."
            + ("" if device.type == "cuda" else " Peak memory '—': PyTorch's CPU memory "
               "timeline (profiler data-flow analysis) failed on that step.")]
  return lines, suites, sides, times
