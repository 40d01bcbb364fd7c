"""Every results file reruns as written: its commands name real scripts, flags and config
keys, write that very file, and read only run directories that another recorded command
makes; the README's copies of the commands are the files' own. One script is rerun from
its printed command to check that the command is the whole command.
"""

import ast
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Results written by a `python -m kd_jax.experiments.<script>` command, or by one of the
# clone-only scripts (`python -m experiments.<script>`, those that import torch);
# results/mutation.md is a record of shell runs of kd_jax/experiments/mutation/ (checked by its
# own test below).
PACKAGES = {"kd_jax.experiments": os.path.join("kd_jax", "experiments"),
            "experiments": "experiments"}
SHELL_RECORDS = ("mutation.md",)
RESULTS = sorted(path for path in glob.glob(os.path.join(ROOT, "results", "*.md"))
                 if os.path.basename(path) not in SHELL_RECORDS)
# Flags through which a script writes a results file: the file itself, or a folder it
# writes <script's file name> into.
OUTPUT_FILE_FLAGS = ("out",)
OUTPUT_DIR_FLAGS = ("out_dir", "results_dir")
# The scripts that train runs into --workdir, and the run directories each leaves there.
RUN_MAKERS = ("demo", "sweep", "rolewise", "text_demo")


def _relative(path):
  return os.path.relpath(path, ROOT)


def commands_of(path):
  """The ``Command:`` lines of a results file, in the order they must run."""
  with open(path) as f:
    return [line[len("Command: "):].strip() for line in f if line.startswith("Command: ")]


def parse(command):
  """(module, {flag: value} with repeated flags as lists, [--config.key=value overrides])."""
  words = shlex.split(command)
  package, _, module = words[2].rpartition(".") if len(words) > 2 else ("", "", "")
  assert words[:2] == ["python", "-m"] and package in PACKAGES, (
      f"not a 'python -m <{' | '.join(PACKAGES)}>.<script>' command: {command}")
  assert os.path.exists(os.path.join(ROOT, PACKAGES[package], module)) or os.path.exists(
      os.path.join(ROOT, PACKAGES[package], module + ".py")), (
          f"{command}: no script {module} in {PACKAGES[package]}/")
  values, overrides = {}, []
  for word in words[3:]:
    assert word.startswith("--"), f"{command}: {word!r} is not a --flag"
    name, has_value, value = word[2:].partition("=")
    if "." in name:
      overrides.append((name, value))
      continue
    values.setdefault(name, []).append(value if has_value else None)
  return module, {k: v if len(v) > 1 else v[0] for k, v in values.items()}, overrides


def script_module(module):
  """The file that defines a script's flags, relative to the root, without ``.py``: the
  script's own, or for a package its __main__; installed scripts first, then the clone's."""
  for folder in PACKAGES.values():
    if os.path.isdir(os.path.join(ROOT, folder, module)):
      return os.path.join(folder, module, "__main__")
    if os.path.exists(os.path.join(ROOT, folder, module + ".py")):
      return os.path.join(folder, module)
  raise AssertionError(f"no script {module} in {' or '.join(PACKAGES.values())}")


def defined_flags(module):
  """Names of the absl flags the script's source defines (DEFINE_* calls), and which of
  them are boolean or config files."""
  relative = script_module(module) + ".py"
  path = os.path.join(ROOT, relative)
  assert os.path.exists(path), f"{relative} does not exist"
  with open(path) as f:
    tree = ast.parse(f.read())
  names, booleans, configs = set(), set(), set()
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE_") and node.args
        and isinstance(node.args[0], ast.Constant)):
      name = node.args[0].value
      names.add(name)
      if node.func.attr in ("DEFINE_bool", "DEFINE_boolean"):
        booleans.add(name)
      if node.func.attr.startswith("DEFINE_config"):
        configs.add(name)
  return names, booleans, configs


def load_config(spec):
  """The ConfigDict of ``path.py:argument``."""
  path, _, argument = spec.partition(":")
  assert os.path.exists(os.path.join(ROOT, path)), f"config file {path} does not exist"
  loaded = importlib.util.spec_from_file_location("config_under_test", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(loaded)
  loaded.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def has_key(config, dotted):
  target = config
  for part in dotted.split("."):
    if part not in target:
      return False
    target = target[part]
  return True


def all_commands():
  return [(path, command) for path in RESULTS for command in commands_of(path)]


def test_every_results_file_records_its_commands():
  assert RESULTS
  for path in RESULTS:
    assert commands_of(path), f"{_relative(path)} records no 'Command: ' line"


@pytest.mark.parametrize("path", RESULTS, ids=_relative)
def test_flags_and_config_keys_exist(path):
  for command in commands_of(path):
    module, values, overrides = parse(command)
    names, booleans, configs = defined_flags(module)
    for name in values:
      plain = name[2:] if name.startswith("no") and name[2:] in booleans else name
      assert plain in names, f"{_relative(path)}: {module} has no flag --{name}"
    for name, value in overrides:
      flag, _, key = name.partition(".")
      assert flag in configs, f"{_relative(path)}: --{name} overrides no config flag"
      config = load_config(values[flag])
      assert has_key(config, key), f"{_relative(path)}: {values[flag]} has no key {key}"


@pytest.mark.parametrize("path", RESULTS, ids=_relative)
def test_the_last_command_writes_this_file(path):
  _, values, _ = parse(commands_of(path)[-1])
  relative = _relative(path)
  written = [values[f] for f in OUTPUT_FILE_FLAGS if f in values]
  written += [os.path.join(values[f], f"{os.path.basename(relative)}")
              for f in OUTPUT_DIR_FLAGS if f in values]
  written = [os.path.normpath(w) for w in written]
  assert relative in written, f"{relative}: its command writes {written or 'nothing'}"


def _made_runs():
  """{workdir: (script, seeds, command)} for every recorded command that trains runs."""
  made = {}
  for _, command in all_commands():
    module, values, _ = parse(command)
    if module in RUN_MAKERS and "workdir" in values:
      seeds = values.get("seeds")
      made.setdefault(os.path.normpath(values["workdir"]), []).append(
          (module, seeds.split(",") if isinstance(seeds, str) else None, values))
  return made


@pytest.mark.parametrize("path", RESULTS, ids=_relative)
def test_runs_read_are_made_by_a_recorded_command(path):
  made = _made_runs()
  demo_runs = {w: seeds for w, entries in made.items() for m, seeds, _ in entries if m == "demo"}
  for command in commands_of(path):
    module, values, _ = parse(command)
    seeds = values.get("seeds", "").split(",") if "seeds" in values else []
    if module == "agreement":  # <runs>/<row>_seed<s>
      runs = os.path.normpath(values["runs"])
      assert runs in demo_runs, f"{_relative(path)}: no recorded demo makes {runs}"
      assert set(seeds) <= set(demo_runs[runs]), f"{_relative(path)}: seeds {seeds} not in {runs}"
    if (module in ("sweep", "augmentation_study", "long_schedule")
        and values.get("teacher_pattern")):  # a demo's teacher_seed{seed}, or one of them
      folder, name = os.path.split(os.path.normpath(values["teacher_pattern"]))
      assert folder in demo_runs, (
          f"{_relative(path)}: no recorded demo makes {values['teacher_pattern']}")
      one = re.fullmatch(r"teacher_seed(\d+)", name)
      if one:
        assert one.group(1) in demo_runs[folder], f"{_relative(path)}: seed {name}"
      else:
        assert name == "teacher_seed{seed}", f"{_relative(path)}: {name}"
        assert set(seeds) <= set(demo_runs[folder])
    if module == "teacher_stddev":  # one demo teacher
      folder, name = os.path.split(os.path.normpath(values["teacher_workdir"]))
      match = re.fullmatch(r"teacher_seed(\d+)", name)
      assert match and folder in demo_runs and match.group(1) in demo_runs[folder], (
          f"{_relative(path)}: no recorded demo makes {values['teacher_workdir']}")


def test_rolewise_reports_list_every_stage_they_read():
  for path in RESULTS:
    parsed = [parse(c) for c in commands_of(path)]
    stages = [values.get("stage") for module, values, _ in parsed if module == "rolewise"]
    if not stages:
      continue
    assert stages[-1] == "compare" and "teacher" in stages and "student_search" in stages, (
        f"{_relative(path)}: compare needs the teacher and student_search stages, got {stages}")
    assert stages.index("teacher") < stages.index("student_search")
    # The stages share one config and workdir. compare may train more seeds than the stages
    # before it (it reads their products; the searches use only the first seed), so its
    # --config.seeds is set aside when it keeps the config's first seed.
    from kd_jax.experiments.configs import rolewise
    setups = set()
    for _, values, overrides in parsed:
      config_file, _, argument = values["config"].partition(":")
      first_seed = rolewise.get_config(argument).seeds[0]
      kept = tuple((k, v) for k, v in overrides if not (
          values.get("stage") == "compare" and k == "config.seeds"
          and ast.literal_eval(v)[0] == first_seed))
      setups.add((values["config"], values["workdir"], kept))
    assert len(setups) == 1, f"{_relative(path)}: the stages use different configs or workdirs"


def _pages():
  """The README and the docs pages (the docs include results files rather than copy them)."""
  docs = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
  paths = ["README.md", *sorted(os.path.relpath(path, ROOT) for path in docs
                                if os.sep + "_build" + os.sep not in path)]
  for path in paths:
    with open(os.path.join(ROOT, path)) as f:
      yield path, f.read()


def test_readme_commands_are_the_results_files_commands():
  recorded = {command for _, command in all_commands()}
  pages = list(_pages())
  assert any(path.startswith("docs") for path, _ in pages)
  for path, text in pages:
    for command in re.findall(r"^Command: (.*)$", text, re.M):
      assert command.strip() in recorded, f"{path} command not in any results file: {command}"
    # Files a page links to or includes exist, relative to the page; so do the results files
    # it names in its text (not those a command would write, --out=results/...).
    targets = re.findall(r"\]\(([^)#\s]+)\)|```\{include\} (\S+)", text)
    for target in {link or include for link, include in targets}:
      if re.search(r"results/[\w.]+\.(?:md|png|json)$", target):
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), target))
        assert os.path.exists(resolved), f"{path} links to missing {target}"
    prose = re.sub(r"\]\([^)]*\)|```\{include\} \S+", "", text)
    for cited in set(re.findall(r"(?<![=\w/.])results/[\w.]+\.(?:md|png|json)", prose)):
      assert os.path.exists(os.path.join(ROOT, cited)), f"{path} cites missing {cited}"


@pytest.mark.parametrize("path", RESULTS, ids=_relative)
def test_absl_parses_every_command(path):
  # The script's own flag definitions parse the command (types, enum values, required
  # flags, config files and their overrides); main is not run.
  for command in commands_of(path):
    module = parse(command)[0]
    code = ("import sys; from absl import flags; "
            f"import {script_module(module).replace(os.sep, '.')}; "
            "flags.FLAGS(sys.argv); print('parsed')")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code, *shlex.split(command)[3:]], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "parsed" in result.stdout, (
        f"{_relative(path)}: {command}\n{result.stderr[-2000:]}")


def _run(command, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  words = shlex.split(command)
  result = subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_a_printed_command_reruns_to_the_same_report(tmp_path):
  # Run as a user would, with some flags left at their defaults; the report's command
  # spells out every flag, and running exactly that command writes the same report.
  first = tmp_path / "first"
  _run(f"python -m kd_jax.experiments.toy_continuation --seeds=0 --epochs=2 --out_dir={first}",
       ROOT)
  report = (first / "toy_continuation.md").read_text()
  command = commands_of(str(first / "toy_continuation.md"))[0]
  assert "--margin=0.05" in command and "--t_max=10" in command  # defaults written out
  second = tmp_path / "second"
  _run(command.replace(str(first), str(second)), ROOT)
  assert (second / "toy_continuation.md").read_text() == report.replace(str(first), str(second))


def test_mutation_record_names_scripts_that_exist():
  """results/mutation.md's rerun block calls kd_jax/experiments/mutation's scripts, which exist."""
  with open(os.path.join(ROOT, "results", "mutation.md")) as f:
    text = f.read()
  scripts = set(re.findall(r"kd_jax/experiments/mutation/[\w.]+", text))
  assert {"kd_jax/experiments/mutation/run.sh", "kd_jax/experiments/mutation/score.py"} <= scripts
  for script in scripts:
    assert os.path.exists(os.path.join(ROOT, script)), f"{script} does not exist"
