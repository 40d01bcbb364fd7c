"""The experiment scripts run end to end on tiny settings and write their reports (the
benchmarks' scripts: tests/test_benchmark_scripts.py)."""

import os
import subprocess
import sys

from tests.conftest import ROOT, run_script as _run


def test_toy_continuation_writes_table_and_plot(tmp_path):
  _run("toy_continuation", "--seeds=0", "--epochs=3", f"--out_dir={tmp_path}")
  report = (tmp_path / "toy_continuation.md").read_text()
  assert "| continuation_kd |" in report
  assert "Command: python -m kd_jax.experiments.toy_continuation" in report
  assert (tmp_path / "toy_continuation.png").stat().st_size > 0


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
