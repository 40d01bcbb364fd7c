"""The imagenet suite: Wang et al.'s ImageNet pair at full size, kd_jax against PyTorch, in
bfloat16, with each step's model-FLOPs utilisation.

Teacher ResNet-34 → student ResNet-18 (torchvision's architectures, 1,000 classes; the
imagenet config's models; ``--imagenet_teacher`` and ``--imagenet_student`` take others, the
tests small ones), random uint8 batches of 224×224 crops (``--imagenet_image_size``),
KD, KD + CutMix-pick and backward-pass KD (K = 1): the images suite's steps and runners
(images.py) with ImageNet's settings. As in kd_jax's ImageNet run, the random-resized crop is
made on the host (not timed), so the step flips, normalises with ImageNet's statistics and
computes in bfloat16 (kd_jax: the models' and preprocessing's ``dtype``, parameters,
optimiser state and losses float32, as ``config.dtype = "bfloat16"``; PyTorch:
``torch.autocast(bfloat16)`` with float32 parameters and optimiser, model and input in
``channels_last``, ``cudnn.benchmark`` on a GPU, eagerly and under ``torch.compile``). SGD
(momentum 0.9, weight decay 5e-4) on both sides, as in the images suite.

On a GPU, both frameworks share its memory: run with XLA_PYTHON_CLIENT_PREALLOCATE=false, as
experiments/gpu_imagenet_bench.sh does, or JAX takes 75 % of it before PyTorch starts.

MFU: the compiled JAX step's FLOPs (XLA's cost analysis) ÷ (median step time × the
accelerator's dense bf16 peak, harness.BF16_PEAK_FLOPS by device kind or ``--peak_tflops``),
the same FLOPs for the PyTorch rows; '—' on a CPU or an unknown device.
"""

from __future__ import annotations

import jax

from experiments.bench_vs_torch import harness, images
from experiments.bench_vs_torch.harness import Settings, Suite
from kd_jax.data.streamed import IMAGENET_STATS

METHODS = ("kd", "kd_cutmix_pick", "backward_kd")
CLASSES = 1000


def imagenet_suite(settings: Settings, sides, device, mesh) -> Suite:
  """KD, KD + CutMix-pick and backward-pass KD (those of ``settings.methods``, plain KD
  always) on ResNet-34 → ResNet-18 in bfloat16, on every side, with an MFU column."""
  cases = images.select_cases(settings.methods,
                              [c for c in images.IMAGE_CASES if c[1] in METHODS])
  size = settings.imagenet_image_size
  pair = images.ImagePair(settings.imagenet_teacher, settings.imagenet_student,
                          settings.imagenet_batch, (size, size, 3), CLASSES, *IMAGENET_STATS,
                          crop_pad=0, dtype="bfloat16", torch_tuned=True)
  device_info = jax.devices()[0]
  peak, source = harness.bf16_peak(device_info.platform, device_info.device_kind,
                                   settings.peak_tflops)
  title = (f"ImageNet: teacher {pair.teacher_name} → student {pair.student_name}, batch "
           f"{pair.batch}, {size}×{size}×3 uint8 (host-cropped; the step flips and "
           f"normalises) → bfloat16 compute, float32 parameters, optimiser state and losses; "
           f"PyTorch under torch.autocast(bfloat16), channels_last"
           f"{', cudnn.benchmark' if device.type == 'cuda' else ''}; {CLASSES} classes.")
  notes = ()
  if device_info.platform == "cpu":
    notes = (f"On a CPU these times say little about the GPU job this suite is for (batch "
             f"256 on one GPU: experiments/gpu_imagenet_bench.sh): a batch of {pair.batch} "
             "and the CPU's bfloat16 kernels (oneDNN's in PyTorch, XLA's own in JAX) decide "
             "them.",)
  return images.build_suite(title, pair, cases, sides, device, mesh, precision="bfloat16",
                            mfu=True, peak_flops=peak, peak_source=source, notes=notes)
