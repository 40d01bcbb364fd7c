"""What a run is made of, from its config: data, student, teacher, preprocess, method, optimiser.

``build_run(config, mesh)`` turns an image or a text config (one schema,
kd_jax/experiments/configs/common.py) into a ``RunSetup``; the one loop (kd_jax.train.loop) then
trains it without knowing which modality it is. Its data are splits behind one interface
(kd_jax.data.pipeline.Split): host arrays (uint8 images, token ids) or records streamed from
prepared files; either way each process reads only its share of every global batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import methods, models
from kd_jax.data.pipeline import ArraySplit
from kd_jax.models import adapters
from kd_jax.train import checkpoint, sharding
from kd_jax.train import preprocess as preprocess_lib

logger = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class RunSetup:
  """Everything the loop needs besides the schedule (see ``build_run``)."""

  modality: str  # "image" | "text"
  method: methods.Method
  view: methods.ViewMaker | None
  student: Any  # model adapter
  variables: dict  # the student's initial {"params", "batch_stats"}
  rng: jax.Array  # the run's random stream (folded with the step)
  preprocess: Any
  train: Any  # a kd_jax.data Split: "label" and what the preprocess reads
  test: Any
  teacher: Any = None
  teacher_variables: dict = dataclasses.field(default_factory=dict)
  teacher_constants: dict = dataclasses.field(default_factory=dict)
  regression: bool = False
  pool_options: dict | None = None  # pooled backward KD: auxiliary_samples keywords
  meta: dict = dataclasses.field(default_factory=dict)  # saved with every checkpoint
  # What the run depends on besides its config and teacher, compared on resume
  # (kd_jax.train.loop.check_resume_identity): a streamed dataset's prepared files.
  identity: dict = dataclasses.field(default_factory=dict)
  describe: dict = dataclasses.field(default_factory=dict)  # for the summary

  @property
  def num_train(self) -> int:
    return len(self.train)


def dtype_of(name: str):
  """The JAX dtype of a config's ``dtype`` name (``DTYPES``)."""
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; valid names: {', '.join(DTYPES)}.")
  return DTYPES[name]


def is_text_dataset(name: str) -> bool:
  """Whether dataset ``name`` is a text dataset (``TEXT_DATASET_NAMES``)."""
  from kd_jax.data.text import TEXT_DATASET_NAMES

  return name in TEXT_DATASET_NAMES


def load_teacher(
  teacher_workdir: str,
  dataset: str,
  mesh,
  dtype=jnp.float32,
  num_classes: int | None = None,
  image_shape=None,
):
  """A frozen teacher from another run's checkpoints: ``(adapter, variables, meta)``.

  Image teachers are rebuilt from the run's ``model`` name; text teachers from the BERT
  config saved in its metadata. The newest intact checkpoint is used (each is verified
  against its checksums). Raises with the fix when the run is missing, damaged or was
  trained on another dataset.
  """
  if not teacher_workdir:
    raise ValueError(
      "this method needs a teacher: set --config.teacher_workdir to the "
      "--workdir of a finished teacher run (python -m "
      "kd_jax.experiments.train_teacher "
      "for images, kd_jax.experiments.distill_text with the teacher role for text)."
    )
  if not os.path.isdir(os.path.join(teacher_workdir, "checkpoints")):
    raise checkpoint.CheckpointError(
      f"no teacher checkpoints in {teacher_workdir}/checkpoints: train the teacher first."
    )
  store = checkpoint.RunCheckpoints(teacher_workdir, read_only=True)
  meta = store.read_meta()
  teacher_config = meta["config"]
  if teacher_config["dataset"] != dataset:
    raise ValueError(
      f"the teacher in {teacher_workdir} was trained on "
      f"{teacher_config['dataset']!r}, not on {dataset!r}."
    )
  if not meta.get("finished", False):
    logger.warning(
      "the teacher run in %s has not finished (step %d); using it anyway.",
      teacher_workdir,
      meta["step"],
    )
  if "model_config" in meta:  # a BERT run
    from kd_jax.models import bert

    module = bert.BertClassifier(bert.BertConfig(**meta["model_config"]))
    teacher = adapters.BertModel(module)
    template = {"params": bert.init_params(module, jax.random.PRNGKey(0)), "batch_stats": {}}
  else:
    if num_classes is None or image_shape is None:
      raise ValueError("an image teacher needs the dataset's num_classes and image_shape.")
    teacher = adapters.LinenImageModel(
      models.create_model(teacher_config["model"], num_classes, dtype)
    )
    template = models.init_variables(teacher.module, jax.random.PRNGKey(0), image_shape)
  # Verified against the checksums saved with it; a step that fails is skipped with a
  # warning for the previous one (a student resumed with another teacher step is refused:
  # kd_jax.train.loop.check_resume_identity).
  variables, meta = store.restore_model(sharding.replicate(template, mesh))
  store.close()
  return teacher, variables, meta


def load_trained(workdir: str, data, mesh, dtype=jnp.float32):
  """The model and variables of a finished image run on ``data`` (an ImageDataset), read
  as a frozen model: for evaluating any run against any other (kd_jax.experiments.demo,
  kd_jax.experiments.agreement)."""
  model, variables, _ = load_teacher(
    workdir, data.name, mesh, dtype, data.num_classes, data.image_shape
  )
  return model, variables


def method_of(config) -> methods.Method:
  """``config.method`` with ``config.view.name`` composed in and its objective's static
  options read from the method's own block (``continuation.reduction``)."""
  method = methods.get_method(config.method, config.view.name)
  block = method.schedule_block
  if block and block in config:
    objective_options = method.split_block(config[block].to_dict()).objective
    method = methods.get_method(config.method, config.view.name, **objective_options)
  return method


def view_keywords(block, input_range=None) -> dict:
  """A view's config block (``config.mixup``, ``config.cutmix``, ``config.cutmix_pick``,
  ``config.backward``) as keywords for kd_jax.methods.make_view: ``clip=True`` becomes
  ``input_range``, and a 0 ``epsilon`` or ``n_pick`` means None, as unset does. Keys that
  only the run reads (``pool_every_epochs``) are dropped. ``input_range`` is passed on as
  well, for the views that map normalised inputs back to pixels."""
  options = dict(block.to_dict() if hasattr(block, "to_dict") else block)
  options.pop("pool_every_epochs", None)
  for key in ("epsilon", "n_pick"):
    if key in options and not options[key]:
      options[key] = None
  if "clip" in options:
    options["clip"] = input_range if options["clip"] else None
  if input_range is not None:  # the views that work on pixel values (crop_flip, autoaugment)
    options.setdefault("input_range", input_range)
  return options


def view_block(config, view: str):
  """The config block that configures ``view``: the block named after it."""
  if view not in config:
    raise ValueError(
      f"the config has no {view!r} block for the view {view!r}; every view "
      "reads the block named after it (kd_jax/experiments/configs/common.py)."
    )
  return config[view]


def config_view_options(config, view: str, input_range=None) -> dict:
  """The keywords of kd_jax.methods.make_view for ``view`` from the config: its block
  (``view_keywords``), and for the dual view its strong view's options from that view's own
  block (``config.dual.strong = "randaugment"`` reads ``config.randaugment``)."""
  options = view_keywords(view_block(config, view), input_range)
  strong = options.get("strong") if view == "dual" else None
  if isinstance(strong, str) and strong not in ("", "none", "dual"):
    strong_options = view_keywords(view_block(config, strong), input_range)
    strong_options.pop("input_range", None)  # the dual view passes its own on
    options["strong_options"] = strong_options
  return options


def compiled_image_step(
  student, optimizer, method, preprocess, mesh, *, teacher=None, view_options=None, **step_options
):
  """The core step, compiled for ``mesh``, for Flax Linen image modules (wrapped in
  LinenImageModel adapters) with the method's view built from that view's config block
  (``config.backward``, ``config.cutmix_pick``, ...; ``clip=True`` clips to the
  preprocess's valid range). For benchmarks and tests; runs
  use ``build_run``. ``step(state, batch, teacher_variables, hparams, teacher_constants)``."""
  from kd_jax.train import step as step_lib

  view = None
  if method.view is not None:
    view = methods.make_view(
      method.view, "image", **view_keywords(view_options or {}, preprocess.valid_range())
    )
  teacher = adapters.LinenImageModel(teacher) if teacher is not None else None
  return step_lib.jit_data_parallel(
    step_lib.make_train_step(
      adapters.LinenImageModel(student),
      optimizer,
      method,
      preprocess,
      teacher=teacher,
      view=view,
      **step_options,
    ),
    mesh,
  )


def build_image_run(config, mesh) -> RunSetup:
  """The image run that ``config`` describes: data, models, method and view."""
  from kd_jax.data import open_images
  from kd_jax.methods import backward_kd

  method = method_of(config)
  models.create_model(config.model, 1)  # fail early, listing the valid names
  dtype = dtype_of(config.dtype)
  options = config.input.to_dict()  # its keys are open_images's keywords
  train = open_images(config.dataset, "train", config.data_dir, config.download, **options)
  test = open_images(config.dataset, "test", config.data_dir, config.download, **options)
  student = adapters.LinenImageModel(models.create_model(config.model, train.num_classes, dtype))
  for role, name in (("student", config.model), ("teacher", config.get("teacher_model", ""))):
    warning = name and models.input_size_warning(name, train.image_shape)
    if warning and (role == "student" or method.needs_teacher):
      logger.warning("%s %s", role, warning)
  init_key, rng = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = models.init_variables(student.module, init_key, train.image_shape)
  preprocess = preprocess_lib.image_preprocess(
    train.mean,
    train.std,
    config.augment.crop_pad,
    config.augment.flip,
    dtype,
    cutout_size=config.augment.get("cutout_size", 0),
    autoaugment=config.augment.get("autoaugment", ""),
    randaugment_ops=config.augment.get("randaugment_ops", 0),
    randaugment_magnitude=config.augment.get("randaugment_magnitude", 9),
  )
  view = pool_options = None
  if method.view is not None:
    options = config_view_options(config, method.view, preprocess.valid_range())
    view = methods.make_view(method.view, "image", **options)
    if method.view == "backward" and config.backward.pool_every_epochs:
      pool_options = {k: v for k, v in options.items() if k in backward_kd.SAMPLE_OPTIONS}
  setup = RunSetup(
    "image",
    method,
    view,
    student,
    variables,
    rng,
    preprocess,
    train.split,
    test.split,
    pool_options=pool_options,
    identity={"dataset": train.fingerprint} if train.fingerprint else {},
    describe={"model": config.model, "dataset": config.dataset},
  )
  if method.needs_teacher and config.get("teacher_checkpoint", ""):
    setup.teacher, setup.teacher_variables = load_pytorch_teacher(
      config.teacher_model, config.teacher_checkpoint, mesh, dtype, train.num_classes
    )
    setup.describe["teacher"] = config.teacher_model
  elif method.needs_teacher:
    setup.teacher, setup.teacher_variables, _ = load_teacher(
      config.teacher_workdir, train.name, mesh, dtype, train.num_classes, train.image_shape
    )
  return setup


def load_pytorch_teacher(name: str, path: str, mesh, dtype=jnp.float32, num_classes: int = 1000):
  """A frozen teacher read from a PyTorch file (kd_jax.models.from_pytorch): ``(adapter,
  variables)``. Its class count must be the dataset's."""
  variables = models.from_pytorch(name, path, num_classes)
  teacher = adapters.LinenImageModel(models.create_model(name, num_classes, dtype))
  return teacher, sharding.replicate(variables, mesh)


def _build_text_student(config, pretrained, num_labels, teacher_params, teacher_config, key):
  """The student described by ``config.student`` (see kd_jax/experiments/configs/text_common.py)."""
  from kd_jax.models import bert

  s = config.student
  if s.init == "pretrained":  # the pretrained checkpoint itself (teacher role, or alone)
    return bert.load_pretrained(pretrained, num_labels=num_labels, key=key)
  if s.init == "teacher_layers":
    if teacher_params is None:
      raise ValueError(
        "student.init='teacher_layers' needs a teacher (teacher_workdir) or "
        "student.init='pretrained_layers'."
      )
    return bert.student_from_teacher(teacher_params, teacher_config, s.layers, key)
  if s.init == "pretrained_layers":
    model, params = bert.load_pretrained(pretrained, num_labels=num_labels, key=key)
    return bert.student_from_teacher(params, model.config, s.layers, key)
  if s.init == "random":
    base = bert.BertConfig.from_json(os.path.join(pretrained, "config.json"))
    student_config = dataclasses.replace(
      base,
      hidden_size=s.hidden_size,
      num_hidden_layers=s.num_layers,
      num_attention_heads=s.num_heads,
      intermediate_size=s.intermediate_size,
      num_labels=num_labels,
    )
    model = bert.BertClassifier(student_config)
    return model, bert.init_params(model, key)
  raise ValueError(
    f"unknown student.init {s.init!r}; valid names: pretrained, "
    "pretrained_layers, teacher_layers, random."
  )


def _text_arrays(split) -> ArraySplit:
  return ArraySplit({**{k: getattr(split, k) for k in adapters.TEXT_FIELDS}, "label": split.labels})


def build_text_run(config, mesh) -> RunSetup:
  """The text run that ``config`` describes: data, BERT models, method and view."""
  from kd_jax.data import text as text_data
  from kd_jax.methods import backward_kd
  from kd_jax.models import bert

  method = method_of(config)
  pretrained = config.pretrained or bert.minilm_folder()
  tokenizer = text_data.load_tokenizer(pretrained)
  data = text_data.load_text_dataset(
    config.dataset, tokenizer, config.max_length, config.data_dir, config.max_train, config.max_test
  )
  regression = data.is_regression
  if method.view is not None and regression:
    raise ValueError(
      f"token-level backward KD needs class probabilities; {config.dataset} is a regression task."
    )
  if regression and config.get("label_smoothing", 0.0):
    raise ValueError(
      f"config.label_smoothing smooths class labels; {config.dataset} is a "
      "regression task (its loss is the squared error): set it to 0."
    )
  teacher = teacher_variables = None
  if method.needs_teacher or config.student.init == "teacher_layers":
    teacher, teacher_variables, _ = load_teacher(config.teacher_workdir, data.name, mesh)
  module, params = _build_text_student(
    config,
    pretrained,
    data.num_labels,
    teacher_variables["params"] if teacher_variables is not None else None,
    teacher.module.config if teacher else None,
    jax.random.PRNGKey(config.seed),
  )
  view = None
  if method.view is not None:
    view = methods.make_view(
      method.view,
      "text",
      **view_keywords(view_block(config, method.view)),
      special_ids=text_data.special_token_ids(tokenizer),
    )
  setup = RunSetup(
    "text",
    method,
    view,
    adapters.BertModel(module),
    {"params": params, "batch_stats": {}},
    jax.random.PRNGKey(config.seed + 1_000_003),
    preprocess_lib.TextPreprocess(),
    _text_arrays(data.train),
    _text_arrays(data.test),
    regression=regression,
    meta={"model_config": dataclasses.asdict(module.config)},
    describe={
      "model": f"bert-{module.config.num_hidden_layers}x{module.config.hidden_size}",
      "dataset": data.name,
      "num_train": len(data.train),
      "num_test": len(data.test),
      "student_parameters": bert.count_parameters(params),
    },
  )
  if method.needs_teacher and teacher_variables is not None:
    setup.teacher, setup.teacher_variables = teacher, teacher_variables
    if method.view == "backward":  # frozen teacher: its embedding Gram matrix once
      setup.teacher_constants = backward_kd.teacher_constants(teacher, teacher_variables)
  return setup


# Numeric keys with a lower bound, checked before anything loads (a key a config does not
# have is skipped: text configs have no augment block). (key, minimum, integer only)
CONFIG_BOUNDS = (
  ("num_epochs", 1, True),
  ("epoch_factor", 1, True),
  ("batch_size", 1, True),
  ("eval_batch_size", 1, True),
  ("max_checkpoints_to_keep", 1, True),
  ("checkpoint_every_steps", 0, True),
  ("log_every_steps", 0, True),
  ("optimizer.learning_rate", 0, False),
  ("optimizer.weight_decay", 0, False),
  ("kd.ce_weight", 0, False),
  ("kd.kd_weight", 0, False),
  ("view.weight", 0, False),
  ("augment.crop_pad", 0, True),
  ("augment.cutout_size", 0, True),
  ("backward.pool_every_epochs", 0, True),
  ("continuation.t_max", 1, True),
  ("input.image_size", 0, True),
  ("input.workers", 1, True),
  ("input.prefetch", 0, True),
  ("input.cache_limit_gb", 0, False),
  ("continuation.margin", 0, False),
  ("continuation.annealing_phase2_epochs", 0, True),
  # role-wise (kd_jax/experiments/configs/rolewise.py): PBA's search
  ("search.population", 1, True),
  ("search.epochs", 1, True),
  ("search.exploit_every", 1, True),
  ("search.batch_size", 1, True),
  ("search.train_examples", 1, True),
  ("student_learning_rate", 0, False),
)
# Keys that must be strictly positive.
CONFIG_POSITIVE = (
  "kd.temperature",
  "continuation.psi_ramp_epochs",
  "backward.divergence_temperature",
)


def _config_items(config, prefix: str = ""):
  """``(dotted key, value)`` for every leaf of a ConfigDict or dict."""
  items = config.items() if hasattr(config, "items") else ()
  for key, value in items:
    if hasattr(value, "items"):
      yield from _config_items(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def check_config_numbers(config) -> None:
  """No NaN or infinite number anywhere in ``config`` (NaN passes every ``<`` test, so it
  would slip through the others), and the bounds of CONFIG_BOUNDS and CONFIG_POSITIVE.
  Raises ValueError naming the key, what it got and what would be right."""
  values = dict(_config_items(config))
  for key, value in values.items():
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"config.{key} is {value}; it must be a finite number.")
  for key, minimum, integer in CONFIG_BOUNDS:
    if key not in values or values[key] is None:
      continue
    value = values[key]
    if (
      isinstance(value, bool)
      or not isinstance(value, (int, float, np.integer, np.floating))
      or (integer and not float(value).is_integer())
    ):
      raise ValueError(
        f"config.{key} must be {'an integer' if integer else 'a number'} ≥ "
        f"{minimum}; got {value!r}."
      )
    if value < minimum:
      raise ValueError(f"config.{key} must be ≥ {minimum}; got {value!r}.")
  if "seeds" in values and not values["seeds"]:
    raise ValueError("config.seeds is empty; give at least one seed, e.g. '--config.seeds=(0,)'.")
  for key in CONFIG_POSITIVE:
    value = values.get(key)
    if value is None:
      continue
    if (
      isinstance(value, bool)
      or not isinstance(value, (int, float, np.integer, np.floating))
      or not value > 0
    ):
      raise ValueError(f"config.{key} must be a number > 0; got {value!r}.")


def check_config(config) -> None:
  """Every name and option of ``config`` checked before any data, model or teacher loads:
  the method and view, the dataset, model, dtype and optimiser names, the view's block (its
  maker is built), the method's schedule block (its first epoch is evaluated) and the
  teacher's run directory. Raises ValueError (CheckpointError for a missing teacher
  directory) naming the key, what it got and what would be right."""
  from kd_jax import losses
  from kd_jax.data import DATASET_NAMES
  from kd_jax.data.text import TEXT_DATASET_NAMES
  from kd_jax.train import optim

  check_config_numbers(config)
  if config.dataset not in DATASET_NAMES + TEXT_DATASET_NAMES:
    raise ValueError(
      f"config.dataset: unknown dataset {config.dataset!r}; valid names: "
      f"{', '.join(DATASET_NAMES + TEXT_DATASET_NAMES)}."
    )
  text = is_text_dataset(config.dataset)
  method = method_of(config)
  _check_input(config, method)
  if not text:
    models.create_model(config.model, 1)  # raises, listing the valid names
    augment = config.get("augment", {})
    try:  # the standard augmentation's names and sizes
      preprocess_lib.image_preprocess(
        (0.5,),
        (0.5,),
        cutout_size=augment.get("cutout_size", 0),
        autoaugment=augment.get("autoaugment", ""),
        randaugment_ops=augment.get("randaugment_ops", 0),
        randaugment_magnitude=augment.get("randaugment_magnitude", 9),
      )
    except ValueError as error:
      raise ValueError(f"config.augment: {error}") from None
  dtype_of(config.dtype)
  if config.optimizer.name not in optim.OPTIMIZER_NAMES:
    raise ValueError(
      f"config.optimizer.name: unknown optimizer {config.optimizer.name!r}; "
      f"valid names: {', '.join(optim.OPTIMIZER_NAMES)}."
    )
  try:  # the schedule, warm-up and lr-scaling keys, by building the optimiser once
    optim.make_optimizer(
      **config.optimizer.to_dict(),
      steps_per_epoch=1,
      num_epochs=config.num_epochs * config.get("epoch_factor", 1),
      epoch_factor=config.get("epoch_factor", 1),
      global_batch=config.batch_size,
    )
  except (ValueError, TypeError) as error:
    raise ValueError(f"config.optimizer: {error}") from None
  if not 0 <= config.get("label_smoothing", 0.0) < 1:
    raise ValueError(
      f"config.label_smoothing must be in [0, 1) (0: none, 0.1 in ImageNet "
      f"recipes); got {config.label_smoothing!r}."
    )
  if method.view is not None:
    try:
      methods.make_view(
        method.view,
        "text" if text else "image",
        # a pixel range to check the image views' clip with; token views have none
        **config_view_options(config, method.view, None if text else (0.0, 1.0)),
      )
    except (ValueError, TypeError) as error:
      raise ValueError(f"config.{method.view}: {error}") from None
  block = method.schedule_block
  if block:
    options = config[block].to_dict()
    if options.get("reduction", "mean") not in losses.HINGE_REDUCTIONS:
      raise ValueError(
        f"config.{block}.reduction: unknown reduction "
        f"{options['reduction']!r}; valid: "
        f"{', '.join(losses.HINGE_REDUCTIONS)}."
      )
    try:
      schedule_options = method.split_block(options).schedule
      if block == "mlkd":
        from kd_jax.methods import mlkd

        mlkd.check_options(**method.split_block(options).objective)
      if method.schedule is not None:
        num_epochs = config.num_epochs * config.get("epoch_factor", 1)
        method.schedule(1, num_epochs, **schedule_options)
    except (ValueError, TypeError) as error:
      raise ValueError(f"config.{block}: {error}") from None
  checkpoint_file = config.get("teacher_checkpoint", "")
  if method.needs_teacher and checkpoint_file:
    if text:
      raise ValueError(
        "config.teacher_checkpoint reads image models; a text teacher is a "
        "run directory (config.teacher_workdir)."
      )
    if config.get("teacher_workdir", ""):
      raise ValueError(
        "set config.teacher_checkpoint (a PyTorch file) or "
        "config.teacher_workdir (a kd_jax run), not both."
      )
    if not config.get("teacher_model", ""):
      raise ValueError(
        "config.teacher_checkpoint needs config.teacher_model, the kd_jax "
        "model it holds (e.g. imagenet_resnet34)."
      )
    models.create_model(config.teacher_model, 1)  # raises, listing the valid names
    if not os.path.isfile(checkpoint_file):
      raise ValueError(f"config.teacher_checkpoint: {checkpoint_file} is not a file.")
  elif method.needs_teacher:
    if config.get("teacher_model", ""):
      raise ValueError(
        "config.teacher_model names the model in config.teacher_checkpoint, "
        "which is empty; a teacher run directory records its own model: set "
        "--config.teacher_model= (or give the checkpoint)."
      )
    if not config.teacher_workdir:
      raise ValueError(
        f"method {method.name!r} needs a teacher; set config.teacher_workdir "
        "(a kd_jax run) or config.teacher_checkpoint with "
        "config.teacher_model (a PyTorch file)."
      )
    if not os.path.isdir(config.teacher_workdir):
      raise checkpoint.CheckpointError(
        f"config.teacher_workdir: {config.teacher_workdir} does not exist; train the "
        "teacher first (kd_jax.experiments.train_teacher) or point at its run directory."
      )


def _check_input(config, method) -> None:
  """The input block against the dataset: sizes only for streamed datasets, and no pool
  of backward samples over a streamed training set (it would copy the dataset onto every
  device)."""
  from kd_jax.data import STREAMED_DATASETS

  block = config.get("input", {})
  from kd_jax.data.streamed import CACHE_MODES

  if block.get("cache", "auto") not in CACHE_MODES:
    raise ValueError(
      f"config.input.cache: unknown mode {block.get('cache')!r}; valid: {', '.join(CACHE_MODES)}."
    )
  if config.dataset not in STREAMED_DATASETS:
    if block.get("image_size", 0):
      raise ValueError(
        f"config.input.image_size applies to streamed datasets "
        f"({', '.join(STREAMED_DATASETS)}); {config.dataset!r} is held in memory "
        "at its own size. Leave it 0."
      )
    return
  if method.view == "backward" and config.backward.get("pool_every_epochs", 0):
    raise ValueError(
      f"config.backward.pool_every_epochs={config.backward.pool_every_epochs} keeps "
      f"backward samples for the whole training set on every device, which a streamed "
      f"dataset ({config.dataset}) does not fit; use the per-step variant, "
      "--config.backward.pool_every_epochs=0 (new samples every step, the paper's)."
    )


def build_run(config, mesh) -> RunSetup:
  """The image or text run that ``config`` describes (by its dataset's name)."""
  if is_text_dataset(config.dataset):
    return build_text_run(config, mesh)
  return build_image_run(config, mesh)
