"""experiments.bench_vs_torch's imagenet suite (ResNet-34 → ResNet-18 in bfloat16 with an MFU
column): end to end on the CPU with small networks, its default pair's weights in their PyTorch
twins, and its MFU arithmetic on hand-computed values."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ROWS = ("kd", "kd_cutmix_pick", "backward_kd (K = 1)")


def test_imagenet_suite_reports_three_methods_with_mfu_on_the_cpu(tmp_path):
  pytest.importorskip("torch")
  out = tmp_path / "imagenet.md"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  # Small networks, 2 images of 32×32: one run of the suite's machinery (bfloat16 on both
  # sides, channels_last, ImageNet's normalisation, the MFU column) in seconds, where
  # compiling ResNet-34 → ResNet-18's three steps alone takes a minute on two cores.
  result = subprocess.run(
      [sys.executable, "-m", "experiments.bench_vs_torch", "--suites=imagenet",
       "--imagenet_teacher=cnn_small", "--imagenet_student=cnn_tiny", "--imagenet_batch=2",
       "--imagenet_image_size=32", "--repeats=1", "--warmup=0", "--torch_compile=false",
       f"--out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = out.read_text()
  assert "### ImageNet: teacher cnn_small → student cnn_tiny, batch 2, 32×32×3" in report
  assert "bfloat16 compute" in report and "torch.autocast(bfloat16), channels_last" in report
  header = next(line for line in report.splitlines() if line.startswith("| method | impl"))
  assert header.endswith("| peak memory (MiB) | MFU |")
  rows = [line.split("|")[1:-1] for line in report.splitlines()
          if line.startswith("| ") and line.split("|")[2].strip() in ("JAX", "PyTorch eager")]
  assert [(r[0].strip(), r[1].strip()) for r in rows] == [
      (label, side) for label in ROWS for side in ("JAX", "PyTorch eager")]
  assert all(len(r) == 9 and r[-1].strip() == "—" for r in rows)  # no peak for a CPU
  assert "MFU '—': a CPU has no bf16 peak" in report
  assert "On a CPU these times say little about the GPU job" in report
  assert "torch.compile" not in report
  # The cost-over-KD summary: the FLOPs of XLA's cost analysis, CutMix-pick's pool and
  # backward-pass KD's input-gradient passes more than KD's.
  for label in ROWS[1:]:
    summary = [line for line in report.splitlines() if line.startswith(f"| {label} | ")][-1]
    assert 1.5 < float(summary.split("|")[2]) < 4.0
  assert (tmp_path / "imagenet.png").stat().st_size > 0


def test_the_default_pairs_weights_fit_their_pytorch_twins():
  # ResNet-34 and ResNet-18 (torchvision's key names) take kd_jax's variables, by shape
  # alone: no initialisation, no compiling.
  torch = pytest.importorskip("torch")
  import jax
  import numpy as np
  from experiments.bench_vs_torch import Settings
  from experiments.torch_reference import convert, models as torch_models
  from kd_jax import models
  for name in (Settings.imagenet_teacher, Settings.imagenet_student):
    shapes = jax.eval_shape(lambda name=name: models.init_variables(
        models.create_model(name, 1000), jax.random.PRNGKey(0), (32, 32, 3)))
    variables = jax.tree.map(lambda leaf: np.full(leaf.shape, 0.5, np.float32), shapes)
    twin = torch_models.create_torch_model(name, 1000)
    convert.flax_to_torch(variables, twin)
    assert all(bool((value == 0.5).all()) for key, value in twin.state_dict().items()
               if not key.endswith("num_batches_tracked"))
    assert twin.state_dict()["conv1.weight"].shape == torch.Size([64, 3, 7, 7])


def test_mfu_and_the_peak_of_each_device_kind():
  from experiments.bench_vs_torch import harness
  from kd_jax.experiments import benchmark
  peak = harness.bf16_peak
  assert peak("gpu", "NVIDIA H100 80GB HBM3")[0] == 989e12
  assert peak("gpu", "NVIDIA H100 PCIe")[0] == 756e12
  assert peak("gpu", "NVIDIA H200")[0] == 989e12
  assert peak("gpu", "NVIDIA A100-SXM4-80GB")[0] == 312e12
  assert peak("tpu", "TPU v5 lite")[0] == 197e12 and peak("tpu", "TPU v5")[0] == 459e12
  assert peak("cpu", "cpu") == (None, "a CPU has no bf16 peak in the table (--peak_tflops "
                                      "sets one)")
  unknown, why = peak("gpu", "NVIDIA GeForce RTX 4090")
  assert unknown is None and "'NVIDIA GeForce RTX 4090'" in why
  assert peak("cpu", "cpu", 100.0) == (100e12, "100 TFLOP/s, given by --peak_tflops")
  with pytest.raises(ValueError, match="peak_tflops must be ≥ 0"):
    peak("gpu", "NVIDIA H200", -1.0)
  # 2.5 TFLOP in 10 ms on a 1 PFLOP/s chip: 2.5e12 / (0.01 × 1e15) = 25 %.
  assert harness.mfu(2.5e12, 0.01, 1e15) == pytest.approx(0.25)
  assert harness.mfu(None, 0.01, 1e15) is None and harness.mfu(2.5e12, 0.01, None) is None
  # In the table every side is counted with the JAX step's FLOPs: PyTorch at 20 ms, 12.5 %.
  runners = {("kd", "JAX"): harness.Runner(None, 1.0, None, 2.5e12),
             ("kd", "PyTorch eager"): harness.Runner(None, 0.1, None, None)}
  suite = harness.Suite("t", "images", 8, ["kd"], runners, mfu=True, peak_flops=1e15,
                        peak_source="1000 TFLOP/s, given by --peak_tflops")
  times = {("kd", "JAX"): benchmark.from_samples([0.01, 0.01, 0.011]),
           ("kd", "PyTorch eager"): benchmark.from_samples([0.02, 0.02, 0.08])}
  lines = harness.suite_lines(suite, ["JAX", "PyTorch eager"], times)
  assert lines[4].endswith("| 25.0 % |") and lines[5].endswith("| 12.5 % |")
  assert "(XLA cost analysis: kd 2.5 TFLOP a step)" in lines[7]
  assert lines[7].endswith("Peak: 1000 TFLOP/s, given by --peak_tflops.")
  # A step whose slowest round took 4× its fastest is named under the table.
  assert lines[9].startswith("Uneven rounds (slowest ÷ fastest over 3×): kd PyTorch eager 4×.")
