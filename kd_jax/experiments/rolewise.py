"""Role-wise augmentation (Fu et al. 2020) in three stages, plus the comparison.

  python -m kd_jax.experiments.rolewise --config=kd_jax/experiments/configs/rolewise.py:digits \
      --workdir=runs/rolewise --stage=teacher
  python -m kd_jax.experiments.rolewise ... --stage=student_search
  python -m kd_jax.experiments.rolewise ... --stage=student
  python -m kd_jax.experiments.rolewise ... '--config.seeds=(0,1,2,3,4)' --stage=compare \
      --out=results/rolewise_digits.md

(expected: results/rolewise_digits.md; the mnist5k scale, rolewise.py:mnist5k in its own
workdir runs/rolewise_mnist5k: results/rolewise_mnist5k.md; each report ends with the
commands of all its stages.)

Each stage reads what the previous ones left in --workdir: ``teacher_search.json`` (every
trial's schedule and the chosen one), ``teacher/`` (Orbax checkpoint of the teacher),
``student_search.json``, ``student.json``. Every population (searches and the trainings
after them) runs in kd_jax's one loop and checkpoints in ``--workdir`` (``*_population``,
``*_train``): a killed stage rerun with the same command resumes where it stopped; SIGTERM
saves and exits with 143. Each stage that finishes records its full command in
``<workdir>/commands.json`` and the machine that finished it in
``<workdir>/machines.json``; the compare report lists the commands of the stages it read,
in order, so the whole result reruns from the report, and the machine of each stage (the
stages of one workdir may run on different machines: the searches on a GPU, compare on a
CPU). compare may train more seeds than the stages before it
(``--config.seeds=(0,1,2,3,4)``; the searches and single trainings use only the first seed,
so keep it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from kd_jax import methods, models, pba, policies
from kd_jax.data import ImageDataset, load_dataset
from kd_jax.experiments import launch, reporting, shared
from kd_jax.models import resnet18
from kd_jax.train import checkpoint, files, integrity, loop, optim, run_lock
from kd_jax.train import setup as setup_lib

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "kd_jax/experiments/configs/rolewise.py:<scale>", lock_config=True
)
flags.mark_flag_as_required("config")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory shared by the stages.", required=True)
_STAGE = flags.DEFINE_enum(
  "stage",
  None,
  ["teacher", "student_search", "student", "compare"],
  "Which stage to run.",
  required=True,
)
_OUT = flags.DEFINE_string("out", None, "compare: write the Markdown report here.")
logger = logging.getLogger("kd_jax.rolewise")
STAGES = ("teacher", "student_search", "student", "compare")
COMMANDS_FILE = "commands.json"
MACHINES_FILE = "machines.json"


# (train, test, search-train indices, search-validation indices): ``_data``.
RolewiseData = tuple[ImageDataset, ImageDataset, np.ndarray, np.ndarray]


def _data(config: ml_collections.ConfigDict) -> RolewiseData:
  """(train, test, search-train indices, search-validation indices), loaded once per run."""
  train = load_dataset(config.dataset, "train", config.data_dir or None)
  test = load_dataset(config.dataset, "test", config.data_dir or None)
  order = np.random.default_rng(0).permutation(len(train))  # fixed search split
  search_train = order[: config.search.train_examples]
  search_val = order[config.search.train_examples :]
  return train, test, search_train, search_val


def _setup(
  config, data, model_name, learning_rate, steps_per_epoch, teacher_model=None, batch_size=None
):
  """The population member's model and optimiser; ``batch_size`` (None: config.batch_size)
  is the global batch an ``optimizer.lr_reference_batch`` scales the lr with."""
  model = models.create_model(model_name, data.num_classes)
  optimizer, _ = optim.make_optimizer(
    **{**config.optimizer.to_dict(), "learning_rate": learning_rate},
    steps_per_epoch=steps_per_epoch,
    global_batch=batch_size or config.batch_size,
  )
  fill = tuple(int(round(255 * m)) for m in data.mean)
  return pba.MemberSetup(
    model,
    optimizer,
    data.mean,
    data.std,
    fill,
    config.augment.crop_pad,
    config.augment.flip,
    config.augment.cutout_size,
    teacher_model,
  )


def _kd_hparams(config):
  """KD's constant values from the config (every key of the ``kd`` block, label smoothing
  included), as the image runs build them (kd_jax.methods.hparams_at)."""
  return methods.hparams_at(
    methods.METHODS["kd"],
    1,
    1,
    kd=config.kd.to_dict(),
    view_weight=config.view.weight,
    label_smoothing=config.get("label_smoothing", 0.0),
  )


def _student_setup_and_hparams(config, setup, epochs):
  """The student's method (config.method, with config.view.name composed in) on ``setup``,
  and the values its step reads: KD's constants, or per epoch for a method with a schedule
  or an extra view (kd_jax.train.loop.epoch_hparams)."""
  method = setup_lib.method_of(config)
  view = None
  if method.view is not None:
    view = methods.make_view(
      method.view,
      "image",
      **setup_lib.config_view_options(config, method.view, setup.preprocess.valid_range()),
    )
  setup = dataclasses.replace(setup, method=config.method, view=view)
  if method.schedule is None and view is None:
    return setup, _kd_hparams(config)
  return setup, lambda epoch: loop.epoch_hparams(config, method, epoch, epochs)


def _run_search(
  config, data, workdir, name, model_name, learning_rate, teacher=None, init_variables=None
):
  """PBA's search for ``model_name``: cross-entropy alone, or the student's method (config)
  from the frozen ``teacher``."""
  train, _, search_train, search_val = data
  steps = config.search.train_examples // config.search.batch_size
  setup = _setup(
    config,
    train,
    model_name,
    learning_rate,
    steps,
    teacher[0] if teacher else None,
    batch_size=config.search.batch_size,
  )
  hparams = _kd_hparams(config)
  if teacher:
    setup, hparams = _student_setup_and_hparams(config, setup, config.search.epochs)
  result = pba.search(
    setup,
    train.images[search_train],
    train.labels[search_train],
    train.images[search_val],
    train.labels[search_val],
    population=config.search.population,
    epochs=config.search.epochs,
    batch_size=config.search.batch_size,
    exploit_every=config.search.exploit_every,
    seed=config.seeds[0],
    workdir=os.path.join(workdir, f"{name}_population"),
    teacher_variables=teacher[1] if teacher else None,
    hparams=hparams,
    init_variables=init_variables,
    eval_batch_size=config.eval_batch_size,
    mode=config.population_mode,
    checkpoint_every_steps=config.checkpoint_every_steps,
  )
  pba.save_result(os.path.join(workdir, f"{name}.json"), result)
  logger.info(
    "%s: best trial %d, validation %.2f",
    name,
    result.best_trial,
    result.final_scores[result.best_trial],
  )
  return result


def _load_schedule(workdir, name):
  path = os.path.join(workdir, f"{name}.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} not found: run the stage that writes it first "
      f"(--stage={'teacher' if name.startswith('teacher') else 'student_search'})."
    )
  with open(path) as f:
    return policies.schedule_from_json(json.dumps(json.load(f)["best_schedule"]))


def _train(
  config, data, setup, schedules, seeds, epochs, workdir, teacher=None, init_variables=None
):
  """The population trained in kd_jax's one loop, checkpointed in ``workdir`` (a rerun of a
  killed stage resumes there)."""
  train, test, _, _ = data
  hparams = _kd_hparams(config)
  if teacher:
    setup, hparams = _student_setup_and_hparams(config, setup, epochs)
  return pba.train_with_schedules(
    setup,
    schedules,
    seeds,
    train.images,
    train.labels,
    test.images,
    test.labels,
    epochs=epochs,
    batch_size=config.batch_size,
    teacher_variables=teacher[1] if teacher else None,
    hparams=hparams,
    init_variables=init_variables,
    eval_batch_size=config.eval_batch_size,
    mode=config.population_mode,
    workdir=workdir,
    checkpoint_every_steps=config.checkpoint_every_steps,
  )


def _teacher(config, data, workdir):
  """(model, variables) of the teacher trained by stage 1."""
  if not os.path.isdir(os.path.join(workdir, "teacher", "checkpoints")):
    raise FileNotFoundError(f"no teacher in {workdir}/teacher: run --stage=teacher first.")
  train = data[0]
  model = models.create_model(config.teacher_model, train.num_classes)
  template = models.init_variables(model, jax.random.PRNGKey(0), train.images.shape[1:])
  store = checkpoint.RunCheckpoints(os.path.join(workdir, "teacher"), read_only=True)
  variables, _ = store.restore_model(template)
  store.close()
  return model, variables


def stage_teacher(config: ml_collections.ConfigDict, data: RolewiseData, workdir: str) -> float:
  train = data[0]
  # The schedule from memory, not from the file: only process 0 writes files.
  schedule = _run_search(
    config, data, workdir, "teacher_search", config.teacher_model, config.optimizer.learning_rate
  ).best_schedule
  setup = _setup(
    config,
    train,
    config.teacher_model,
    config.optimizer.learning_rate,
    len(train) // config.batch_size,
  )
  out = _train(
    config,
    data,
    setup,
    [schedule],
    [config.seeds[0]],
    config.num_epochs,
    os.path.join(workdir, "teacher_train"),
  )
  member = jax.tree.map(lambda x: x[0], out["state"])
  teacher_dir = os.path.join(workdir, "teacher")
  with run_lock.hold(teacher_dir):
    store = checkpoint.RunCheckpoints(teacher_dir)
    step = int(member["step"])
    if step in store.all_steps():  # a rerun of the finished stage: the teacher is saved
      saved = store.read_meta(step).get(checkpoint.ARRAY_CHECKSUMS, {}).get("model")
      trained = integrity.fingerprints({k: member[k] for k in checkpoint.MODEL_KEYS})
      if saved is not None and integrity.mismatched(saved, trained):
        raise ValueError(
          f"{teacher_dir} holds another teacher than the one this stage trained (its "
          "populations were retrained since): the students would read the old one. Move "
          f"{teacher_dir} away and rerun --stage=teacher."
        )
      logger.info("teacher: already saved at step %d in %s.", step, teacher_dir)
    else:
      store.save(
        member,
        {
          "step": step,
          "test_accuracy": out["final"][0],
          "train_step_compilations": out["compilations"],
          "history": [h[0] for h in out["history"]],
          "finished": True,
        },
      )
      store.wait()
    store.close()
  logger.info("teacher: test accuracy %.2f", out["final"][0])
  return out["final"][0]


def _student_init(config, data, teacher):
  train = data[0]
  student = models.create_model(config.model, train.num_classes)
  template = models.init_variables(student, jax.random.PRNGKey(0), train.images.shape[1:])
  return resnet18.init_from(teacher[1], template)


def stage_student_search(
  config: ml_collections.ConfigDict, data: RolewiseData, workdir: str
) -> pba.SearchResult:
  teacher = _teacher(config, data, workdir)
  return _run_search(
    config,
    data,
    workdir,
    "student_search",
    config.model,
    config.student_learning_rate,
    teacher,
    _student_init(config, data, teacher),
  )


def _student_setup(config, data, teacher):
  train = data[0]
  return _setup(
    config,
    train,
    config.model,
    config.student_learning_rate,
    len(train) // config.batch_size,
    teacher[0],
  )


def stage_student(config: ml_collections.ConfigDict, data: RolewiseData, workdir: str) -> float:
  teacher = _teacher(config, data, workdir)
  schedule = _load_schedule(workdir, "student_search")
  out = _train(
    config,
    data,
    _student_setup(config, data, teacher),
    [schedule],
    [config.seeds[0]],
    config.num_epochs,
    os.path.join(workdir, "student_train"),
    teacher,
    _student_init(config, data, teacher),
  )
  if jax.process_index() == 0:
    files.write_json_atomically(
      os.path.join(workdir, "student.json"),
      {
        "test_accuracy": out["final"][0],
        "history": out["history"],
        "train_step_compilations": out["compilations"],
      },
      indent=None,
    )
  logger.info("student: test accuracy %.2f", out["final"][0])
  return out["final"][0]


ROWS = (
  ("none", "KD, no learned policy (pad/crop/flip/cutout only)"),
  ("teacher", "KD, the teacher's schedule shared"),
  ("student", "KD, the student's own schedule (role-wise)"),
)


def record_stage(workdir: str, stage: str, command: str, machine: str) -> None:
  """Stores the command that ran ``stage`` in ``<workdir>/commands.json`` and the machine
  that finished it in ``<workdir>/machines.json``."""
  for name, value in ((COMMANDS_FILE, command), (MACHINES_FILE, machine)):
    records = _read_records(workdir, name)
    records[stage] = value
    files.write_json_atomically(os.path.join(workdir, name), records)


def _read_records(workdir: str, name: str) -> dict:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def recorded_commands(workdir: str) -> dict:
  return _read_records(workdir, COMMANDS_FILE)


def stage_machines(workdir: str, stages: Sequence[str]) -> str:
  """Where each of ``stages`` ran, for the report; "not recorded" for a stage finished
  before kd_jax recorded machines."""
  machines = _read_records(workdir, MACHINES_FILE)
  return "; ".join(f"{s}: {machines.get(s, 'not recorded')}" for s in stages)


def earlier_stages(workdir: str) -> list[str]:
  """The stages compare reads (teacher, student_search), and the student stage if it ran,
  in stage order; each must have recorded its command."""
  commands = recorded_commands(workdir)
  missing = [s for s in ("teacher", "student_search") if s not in commands]
  if missing:
    raise FileNotFoundError(
      f"{os.path.join(workdir, COMMANDS_FILE)} records no command for stage(s) "
      f"{', '.join(missing)}: rerun them in {workdir} so that the report can be rerun."
    )
  return [s for s in STAGES[:3] if s in commands]


def stage_compare(
  config: ml_collections.ConfigDict,
  data: RolewiseData,
  workdir: str,
  out_path: str | None,
  arguments: Sequence[str] | None = None,
) -> dict[tuple[str, int], float]:
  """Students without a policy, with the teacher's and with their own schedule; the report.

  ``arguments``: this stage's command-line arguments for the report (default: the flags).
  """
  teacher = _teacher(config, data, workdir)
  schedules = {
    "none": [(0, np.zeros((policies.NUM_TUPLES, 2), np.int32))],
    "teacher": _load_schedule(workdir, "teacher_search"),
    "student": _load_schedule(workdir, "student_search"),
  }
  earlier = earlier_stages(workdir)
  members = [(row, seed) for row, _ in ROWS for seed in config.seeds]
  out = _train(
    config,
    data,
    _student_setup(config, data, teacher),
    [schedules[r] for r, _ in members],
    [s for _, s in members],
    config.num_epochs,
    os.path.join(workdir, "compare_train"),
    teacher,
    _student_init(config, data, teacher),
  )
  final = dict(zip(members, out["final"]))
  best = dict(zip(members, np.max(np.asarray(out["history"]), axis=0)))  # over epochs
  store = checkpoint.RunCheckpoints(os.path.join(workdir, "teacher"), read_only=True)
  teacher_accuracy = store.read_meta()["test_accuracy"]
  store.close()
  lines = [
    f"Role-wise augmentation on {config.dataset}: teacher {config.teacher_model} "
    f"(full precision, test accuracy {teacher_accuracy:.2f} %), student "
    f"{config.model} (DoReFa 2-bit weights and activations, initialised from "
    f"the teacher), Hinton KD (τ {config.kd.temperature}, weights "
    f"{config.kd.ce_weight}/{config.kd.kd_weight}); PBA: {config.search.population} "
    f"trials, {config.search.train_examples} search-training images, "
    f"{config.search.epochs} epochs, exploit/explore every "
    f"{config.search.exploit_every}; students trained {config.num_epochs} epochs on "
    f"all training images, as one population of {len(members)} models; seeds "
    f"{', '.join(map(str, config.seeds))}. Test accuracy (%) after the last epoch "
    "and at each member's best epoch, mean ± std over seeds.",
    "",
    "| student | last epoch | best epoch |",
    "|---|---|---|",
  ]
  for row, label in ROWS:
    lines.append(
      f"| {label} | "
      f"{reporting.mean_std([final[row, s] for s in config.seeds])} | "
      f"{reporting.mean_std([best[row, s] for s in config.seeds])} |"
    )
  lines += [
    "",
    f"Training time of the {len(members)}-model population: "
    f"{out['train_seconds']:.0f} s. Machine: {shared.machine_description()}.",
    f"Machines of the stages it read: {stage_machines(workdir, earlier)}.",
  ]
  for name in ("teacher_search", "student_search"):
    schedule = _load_schedule(workdir, name)
    final_policy = policies.describe(schedule[-1][1])
    active = [f"{op} p={p:.1f} m={m}" for op, p, m in final_policy if p > 0]
    lines.append(
      f"{name}: {len(schedule)} policy changes; final policy's active tuples: "
      f"{', '.join(active) or 'none'}."
    )
  commands = recorded_commands(workdir)
  reporting.finish_report(
    lines, "rolewise", out_path, arguments, before=[commands[s] for s in earlier]
  )
  return final


def check_config(config: ml_collections.ConfigDict) -> None:
  """The numbers' bounds, and no option the role-wise stages would ignore."""
  setup_lib.check_config_numbers(config)
  if config.get("label_smoothing", 0.0):  # PBA's members train with role-kd's plain losses
    raise ValueError(
      "config.label_smoothing is not supported by the role-wise stages "
      "(PBA's searches and trainings use role-kd's losses); set it to 0."
    )
  augment = config.get("augment", {})
  if augment.get("autoaugment", "") or augment.get("randaugment_ops", 0):
    raise ValueError(
      "config.augment.autoaugment and randaugment_ops are not used by the role-wise stages "
      "(their augmentation is the searched PBA policy); set them to '' and 0."
    )


def main(argv: Sequence[str]) -> None:
  del argv
  config, workdir, stage = _CONFIG.value, launch.check_workdir(_WORKDIR.value), _STAGE.value
  check_config(config)
  launch.start(config)
  logger.setLevel(logging.INFO)
  arguments = reporting.script_arguments("rolewise")
  # One stage at a time in a workdir; SIGTERM or SIGINT at any point of a stage (in a search,
  # between a search and the training after it, in the last epoch) saves what is running
  # and exits 143 (130), and rerunning the stage continues from there. A finished stage
  # rerun reads its checkpoints back and reports its result.
  with run_lock.hold(workdir), launch.exit_143_on_sigterm():
    data = _data(config)
    if stage == "teacher":
      stage_teacher(config, data, workdir)
    elif stage == "student_search":
      stage_student_search(config, data, workdir)
    elif stage == "student":
      stage_student(config, data, workdir)
    else:
      stage_compare(config, data, workdir, _OUT.value, arguments)
    if jax.process_index() == 0:
      record_stage(
        workdir, stage, reporting.command_line("rolewise", arguments), shared.machine_description()
      )


if __name__ == "__main__":
  launch.run_app(main)
