"""The experiment scripts run end to end on tiny settings and write their reports."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def _run(module, *arguments, package="kd_jax.experiments"):
  """Runs ``python -m <package>.<module>`` from the root (package "experiments": the
  clone-only scripts)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, "-m", f"{package}.{module}", *arguments],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_toy_continuation_writes_table_and_plot(tmp_path):
  _run("toy_continuation", "--seeds=0", "--epochs=3", f"--out_dir={tmp_path}")
  report = (tmp_path / "toy_continuation.md").read_text()
  assert "| continuation_kd |" in report
  assert "Command: python -m kd_jax.experiments.toy_continuation" in report
  assert (tmp_path / "toy_continuation.png").stat().st_size > 0


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


def test_sweep_then_agreement_and_teacher_stddev(tmp_path):
  digits = os.path.join(ROOT, "kd_jax", "experiments", "configs", "digits.py")
  runs = tmp_path / "runs"
  # A teacher and a student per seed, named as the demo names them.
  _run("sweep", f"--config={digits}:teacher", "--config.num_epochs=1",
       "--config.model=mlp_small", "--seeds=0", f"--workdir={runs / 'teacher_'}",
       f"--out={tmp_path / 'sweep.md'}", "--sweep=optimizer.learning_rate=0.05")
  os.rename(runs / "teacher_" / "optimizer.learning_rate-0.05" / "seed0", runs / "teacher_seed0")
  _run("sweep", f"--config={digits}:kd", "--config.num_epochs=1", "--seeds=0",
       f"--teacher_pattern={runs / 'teacher_seed{seed}'}", f"--workdir={runs / 'kd_'}",
       "--sweep=backward.step_size=0.03", "--config.method=backward_kd",
       f"--out={tmp_path / 'sweep2.md'}")
  os.rename(runs / "kd_" / "backward.step_size-0.03" / "seed0", runs / "backward_kd_seed0")
  assert "| backward.step_size=0.03 |" in (tmp_path / "sweep2.md").read_text()
  _run("agreement", f"--runs={runs}", "--rows=backward_kd", "--seeds=0",
       f"--out={tmp_path / 'agreement.md'}")
  assert "| backward_kd |" in (tmp_path / "agreement.md").read_text()
  _run("teacher_stddev", f"--teacher_workdir={runs / 'teacher_seed0'}", "--batches=8",
       "--blocks_of=2", f"--out={tmp_path / 'stddev.md'}")
  report = (tmp_path / "stddev.md").read_text()
  assert "| cutmix_pick |" in report and "| none |" in report
  # Wang et al.'s study on three of its schemes (the student-scored pick loads the student),
  # and the long-schedule rows at k = 1 and 2, from the same teacher.
  _run("augmentation_study", "--schemes=identity,flip,autoaugment,cutmix_pick_s", "--seeds=0",
       f"--teacher_pattern={runs / 'teacher_seed{seed}'}", f"--workdir={runs / 'study'}",
       "--num_epochs=1", "--batches=6", "--blocks_of=2", f"--out={tmp_path / 'study.md'}")
  report = (tmp_path / "study.md").read_text()
  for label in ("| identity |", "| AutoAugment |", "| CutMix-pick (S-entropy) |",
                "| of the seed means |", "Pearson | Spearman | Kendall",
                "| of the seed means, any one scheme left out: min – max |"):
    assert label in report
  assert (tmp_path / "study.png").stat().st_size > 0
  _run("long_schedule", "--seeds=0", "--factors=1,2", "--num_epochs=1",
       f"--teacher_pattern={runs / 'teacher_seed{seed}'}", f"--workdir={runs / 'long'}",
       f"--out={tmp_path / 'long.md'}")
  report = (tmp_path / "long.md").read_text()
  assert "| k = 1 (1 epochs) | k = 2 (2 epochs) | k = 2 minus k = 1 |" in report
  assert "| KD + CutMix-pick |" in report and "| CE (no teacher) |" in report
  assert (tmp_path / "long.png").stat().st_size > 0


def test_bench_vs_torch_reports_both_sides_and_a_chart(tmp_path):
  import pytest
  pytest.importorskip("torch")
  out = tmp_path / "vs_torch.md"
  _run("bench_vs_torch", "--teacher=cnn_small", "--student=cnn_tiny",
       "--rolewise_teacher=cnn_small", "--rolewise_student=cnn_tiny", "--batch=8",
       "--image_size=8", "--classes=10", "--text_size=tiny", "--text_batch=2",
       "--text_length=8", "--repeats=1", "--warmup=1", "--methods=kd_cutmix,backward_kd,mlkd+none",
       "--torch_compile=false", f"--out={out}", package="experiments")
  report = out.read_text()
  for row in ("| kd | JAX |", "| kd | PyTorch eager |", "| kd_cutmix | PyTorch eager |",
              "| backward_kd (K = 1) | JAX |", "| mlkd (objective on x) | PyTorch eager |",
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


def test_rolewise_compare_report_lists_every_stage_command(tmp_path):
  config = f"--config={os.path.join(ROOT, 'kd_jax', 'experiments', 'configs')}/rolewise.py:digits"
  tiny = ["--config.search.population=2", "--config.search.epochs=1",
          "--config.search.exploit_every=1", "--config.search.train_examples=100",
          "--config.num_epochs=1", "--config.seeds=(0,)"]
  workdir = tmp_path / "rolewise"
  for stage in ("teacher", "student_search"):
    _run("rolewise", config, f"--workdir={workdir}", f"--stage={stage}", *tiny)
  out = tmp_path / "rolewise.md"
  _run("rolewise", config, f"--workdir={workdir}", "--stage=compare", *tiny, f"--out={out}")
  lines = out.read_text().splitlines()
  assert "| student | last epoch | best epoch |" in lines
  rows = [line.split(" | ") for line in lines if line.startswith("| KD, ")]
  assert len(rows) == 3
  for row in rows:  # one seed: "a ± 0.00"; a member's best epoch is at least its last
    last, best = (float(cell.strip(" |").split(" ± ")[0]) for cell in row[1:3])
    assert 0 <= last <= best <= 100
  machines = [line for line in lines if line.startswith("Machines of the stages it read: ")]
  assert len(machines) == 1
  recorded = machines[0].removeprefix("Machines of the stages it read: ").split("; ")
  assert [m.split(": ")[0] for m in recorded] == ["teacher", "student_search"]
  for machine in recorded:  # each recorded by the stage that ran it
    assert "CPU device(s)" in machine and "not recorded" not in machine
  commands = [line for line in lines if line.startswith("Command: ")]
  assert len(commands) == 3
  for command, stage in zip(commands, ("teacher", "student_search", "compare")):
    assert f"--stage={stage}" in command and f"--workdir={workdir}" in command
    assert "'--config.seeds=(0,)'" in command  # overrides kept, quoted for the shell


def test_rolewise_stage_records_say_which_machine_is_not_recorded(tmp_path):
  """Stages finished before machines were recorded (commands.json only) are named as such;
  a stage recorded later adds its machine beside them."""
  import json
  from kd_jax.experiments import rolewise
  with open(tmp_path / "commands.json", "w") as f:
    json.dump({"teacher": "python -m ... --stage=teacher",
               "student_search": "python -m ... --stage=student_search"}, f)
  assert rolewise.earlier_stages(str(tmp_path)) == ["teacher", "student_search"]
  assert (rolewise.stage_machines(str(tmp_path), ["teacher", "student_search"])
          == "teacher: not recorded; student_search: not recorded")
  rolewise.record_stage(str(tmp_path), "student", "python -m ... --stage=student", "GPU box")
  assert rolewise.earlier_stages(str(tmp_path)) == ["teacher", "student_search", "student"]
  assert (rolewise.stage_machines(str(tmp_path), rolewise.earlier_stages(str(tmp_path)))
          == "teacher: not recorded; student_search: not recorded; student: GPU box")
  assert rolewise.recorded_commands(str(tmp_path))["student"] == "python -m ... --stage=student"


def test_rolewise_stages_name_the_missing_stage(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "kd_jax.experiments.rolewise",
       f"--config={os.path.join(ROOT, 'kd_jax', 'experiments', 'configs', 'rolewise.py')}:digits",
       f"--workdir={tmp_path}", "--stage=student_search"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "run --stage=teacher first" in result.stderr


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
