"""The benchmark scripts run end to end on tiny settings and write their reports (in a file
of their own, so that the test workers share the scripts' long runs evenly)."""

from tests.conftest import run_script as _run


def test_bench_views_reports_every_method(tmp_path):
  out = tmp_path / "bench.md"
  _run("bench_views", "--teacher=cnn_tiny", "--student=mlp_tiny", "--batch=8", "--image_size=8",
       "--classes=10", "--repeats=2", f"--out={out}")
  report = out.read_text()
  for label in ("| kd |", "kd_mixup", "kd_cutmix_pick (KL)", "backward_kd, K = 4"):
    assert label in report


def test_bench_input_reports_every_path(tmp_path):
  out = tmp_path / "bench.md"
  _run("bench_input", "--images=20", "--small_images=24", "--batch=4", "--size=16",
       "--repeats=1", "--student=mlp_tiny", "--teacher=cnn_tiny", "--step_image_size=8",
       "--step_batch=2", f"--out={out}")
  report = out.read_text()
  for label in ("| floor |", "| pipeline, 2 workers |", "evaluation transform", "in memory",
                "64 × 64 decoded once into memory",
                "The KD step (mlp_tiny student, cnn_tiny teacher"):
    assert label in report


def test_bench_vs_torch_reports_both_sides_and_a_chart(tmp_path):
  import pytest
  pytest.importorskip("torch")
  out = tmp_path / "vs_torch.md"
  _run("bench_vs_torch", "--teacher=cnn_small", "--student=cnn_tiny",
       "--rolewise_teacher=cnn_small", "--rolewise_student=cnn_tiny", "--batch=8",
       "--image_size=8", "--classes=10", "--text_size=tiny", "--text_batch=2",
       "--text_length=8", "--repeats=1", "--warmup=1", "--methods=kd_cutmix,mlkd+none",
       "--torch_compile=false", f"--out={out}", package="experiments")
  report = out.read_text()
  for row in ("| kd | JAX |", "| kd | PyTorch eager |", "| kd_cutmix | PyTorch eager |",
              "| mlkd (objective on x) | JAX |", "| mlkd (objective on x) | PyTorch eager |",
              "| kd, crop/flip | JAX |",
              "| role-wise stage 2, PBA policy | PyTorch eager |", "| text kd | JAX |",
              "| text backward_kd (K = 1) | PyTorch eager |",
              "| text continuation_kd | JAX |"):
    assert row in report
  # Each table's cost-over-KD summary has a FLOPs ratio from XLA's cost analysis.
  summary = [line for line in report.splitlines() if line.startswith("| kd_cutmix | ")][-1]
  assert 1.2 < float(summary.split("|")[2]) < 3.0  # the mixed view doubles both passes
  assert "torch.compile" not in report
  assert (tmp_path / "vs_torch.png").stat().st_size > 0


def test_bench_xla_flags_runs_each_setting_in_its_own_process(tmp_path):
  import pytest
  pytest.importorskip("torch")
  out = tmp_path / "flags.md"
  _run("bench_xla_flags", "--xla_flags=,--xla_cpu_enable_fast_math=true", "--runs=1",
       "--teacher=cnn_small", "--student=cnn_tiny", "--batch=8", "--image_size=8",
       "--classes=10", "--repeats=1", "--warmup=1", f"--out={out}", package="experiments")
  report = out.read_text()
  assert "| (none) |" in report and "| --xla_cpu_enable_fast_math=true |" in report
  assert "Command: python -m experiments.bench_xla_flags --xla_flags=" in report


def test_bench_policies_times_both_loops(tmp_path):
  out = tmp_path / "policies.md"
  _run("bench_policies", "--batch=2", "--image_size=8", "--repeats=1", f"--out={out}")
  report = out.read_text()
  assert "| map |" in report and "| vmap |" in report


def test_bench_population_compares_three_ways(tmp_path):
  out = tmp_path / "population.md"
  _run("bench_population", "--population=2", "--model=mlp_tiny", "--teacher=", "--batch=4",
       "--repeats=1", f"--out={out}")
  report = out.read_text()
  for row in ("one vmapped step", "one after another", "P processes"):
    assert row in report


def test_bench_vs_torch_gpu_peak_leaves_out_the_runners_built_before(monkeypatch):
  """On a GPU the caching allocator's peak counts every live tensor, also those of the
  runners built earlier in the suite: a runner's figure is that peak less what was held
  before it built its models (simulated allocator: 300 MiB held by earlier runners)."""
  import types
  import pytest
  torch = pytest.importorskip("torch")
  from experiments.bench_vs_torch import harness
  mib = 2 ** 20
  held = {"now": 300 * mib, "peak": 0}
  monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: held["now"])
  monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                      lambda device=None: held.update(peak=held["now"]))
  monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: held["peak"])
  device = types.SimpleNamespace(type="cuda")
  before = harness.torch_allocated(device)
  held["now"] += 40 * mib  # this runner's models, optimiser state and batch

  def step():  # 25 MiB of activations and gradients at the step's peak, freed after
    held["peak"] = max(held["peak"], held["now"] + 25 * mib)

  assert harness.torch_peak_memory(step, device, before) == 65 * mib
  assert harness.torch_allocated(types.SimpleNamespace(type="cpu")) == 0


def test_bench_vs_torch_sets_the_same_float32_precision_on_both_sides():
  import jax
  import pytest
  torch = pytest.importorskip("torch")
  from experiments.bench_vs_torch import set_float32_precision
  matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
  saved = (jax.config.jax_default_matmul_precision, matmul.fp32_precision,
           conv.fp32_precision)
  try:
    set_float32_precision("float32")
    assert (jax.config.jax_default_matmul_precision, matmul.fp32_precision,
            conv.fp32_precision) == ("float32", "ieee", "ieee")
    set_float32_precision("tf32")
    assert (jax.config.jax_default_matmul_precision, matmul.fp32_precision,
            conv.fp32_precision) == ("tensorfloat32", "tf32", "tf32")
  finally:
    jax.config.update("jax_default_matmul_precision", saved[0])
    matmul.fp32_precision, conv.fp32_precision = saved[1:]
