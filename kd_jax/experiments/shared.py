"""Flag-free pieces several experiment scripts share: the embedded datasets' configs, the
machine description, a grid of runs over seeds, setting a dotted config key, and the
teacher's probabilities of x and x' behind T. stddev.

(Each script defines its absl flags when imported, so scripts cannot import each other.)
"""

from __future__ import annotations

import ast
import itertools
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import methods
from kd_jax.data import EpochSampler, ImageDataset
from kd_jax.experiments.configs import digits, mnist
from kd_jax.models import adapters
from kd_jax.train import loop, setup
from kd_jax.train import preprocess as preprocess_lib

# Each embedded dataset's config module and the description its reports open with.
DATASETS = {
  "digits": (digits, "Embedded digits (1,438 train / 359 test)"),
  "mnist5k": (mnist, "Embedded mnist5k (4,000 train / 1,000 test)"),
}


def machine_description() -> str:
  device = jax.devices()[0]
  processor = platform.processor()  # often empty, or the machine's name again
  cpu = (
    platform.machine()
    if processor in ("", platform.machine())
    else (f"{platform.machine()} {processor}")
  )
  return (
    f"{cpu} with {os.cpu_count()} cores, "
    f"{jax.device_count()} {device.platform.upper()} device(s) ({device.device_kind}), "
    f"Python {platform.python_version()}, JAX {jax.__version__}"
  ).replace("  ", " ")


def parse_value(text: str) -> Any:
  """A command-line value as a Python literal where it is one, else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def set_key(config: ml_collections.ConfigDict, dotted_key: str, value: Any) -> None:
  """Sets ``config.a.b = value`` for ``dotted_key`` "a.b"; an unknown key is an error."""
  *parents, leaf = dotted_key.split(".")
  target = config
  for parent in parents:
    target = target[parent]
  if leaf not in target:
    raise ValueError(f"unknown config key {dotted_key!r}.")
  target[leaf] = value


def run_grid(
  base: ml_collections.ConfigDict,
  axes: Sequence[tuple[str, Sequence[Any]]],
  seeds: Sequence[int],
  teacher_pattern: str,
  workdir: str,
) -> list[tuple[str, list[dict], list[str]]]:
  """Trains (or reads back) every combination of ``axes`` ([(dotted key, values)]) for
  every seed, with the teacher ``teacher_pattern.format(seed=...)``; returns
  ``[(label, [summary per seed], run dirs)]`` in grid order."""
  settings = []
  for combination in itertools.product(*[values for _, values in axes]):
    label = ", ".join(f"{key}={value}" for (key, _), value in zip(axes, combination)) or "base"
    settings.append((label, [(key, value) for (key, _), value in zip(axes, combination)]))
  return run_settings(base, settings, seeds, teacher_pattern, workdir)


def run_settings(
  base: ml_collections.ConfigDict,
  settings: Sequence[tuple[str, Sequence[tuple[str, Any]]]],
  seeds: Sequence[int],
  teacher_pattern: str,
  workdir: str,
) -> list[tuple[str, list[dict], list[str]]]:
  """Trains (or reads back) each named setting ``(label, [(dotted key, value)])`` of ``base``
  for every seed, in ``workdir/<label>/seed<seed>``; returns ``[(label, [summary per seed],
  run dirs)]`` in the order given."""
  rows = []
  for label, assignments in settings:
    summaries, run_dirs = [], []
    for seed in seeds:
      config = base.copy_and_resolve_references()
      config.unlock()
      for key, value in assignments:
        set_key(config, key, value)
      config.seed = seed
      config.progress_bar = False
      if teacher_pattern:
        config.teacher_workdir = teacher_pattern.format(seed=seed)
      name = label.replace(", ", "_").replace("=", "-").replace(" ", "_").replace("/", "_")
      run_dir = os.path.join(workdir, name, f"seed{seed}")
      summaries.append(loop.train_and_evaluate(config, run_dir))
      run_dirs.append(run_dir)
      print(f"{label} seed {seed}: last top-1 {summaries[-1]['last_top1']:.2f}", flush=True)
    rows.append((label, summaries, run_dirs))
  return rows


def parse_setting(spec: str) -> tuple[str, list[tuple[str, Any]]]:
  """``"label: key=value; key=value"`` → ``(label, [(key, parsed value)])`` (values parsed as
  Python, as ``--sweep``'s); a one-line error names a malformed part."""
  label, colon, body = spec.partition(":")
  if not colon or not label.strip():
    raise ValueError(f"a setting is 'label: key=value; key=value'; got {spec!r}.")
  assignments = []
  for part in filter(None, (p.strip() for p in body.split(";"))):
    key, equals, value = part.partition("=")
    if not equals or not key.strip():
      raise ValueError(f"setting {label.strip()!r}: {part!r} is not key=value.")
    assignments.append((key.strip(), parse_value(value.strip())))
  return label.strip(), assignments


def teacher_probabilities(
  view_name: str,
  teacher: adapters.Predictor,
  teacher_variables: Mapping[str, Any],
  data: ImageDataset,
  options: Mapping[str, Any],
  *,
  batch_size: int = 64,
  batches: int = 200,
  crop_pad: int = 1,
  flip: bool = False,
  seed: int = 0,
  student: adapters.Predictor | None = None,
  student_variables: Mapping[str, Any] | None = None,
  cutout_size: int = 0,
  autoaugment: str = "",
) -> tuple[np.ndarray, int]:
  """Teacher probabilities of x and x' over the walked batches, in training order, and the
  number of samples per batch. x gets the run's standard augmentation (``crop_pad``,
  ``flip``, ``autoaugment``, ``cutout_size``) as in training. ``student`` (a frozen model
  and its variables) is needed only by views that score with it (CutMix-pick by student
  entropy or KL); the official code loads a trained student for those, and so do callers
  here."""
  preprocess = preprocess_lib.image_preprocess(
    data.mean, data.std, crop_pad, flip, cutout_size=cutout_size, autoaugment=autoaugment
  )
  maker = methods.make_view(
    view_name, "image", **setup.view_keywords(options, preprocess.valid_range())
  )
  hparams = {"temperature": jnp.float32(4.0)}
  student_fn = None
  if student is not None:
    if student_variables is None:
      raise ValueError("a student needs its student_variables.")
    student_fn = lambda v: student.predict(student_variables, v)

  @jax.jit
  def probabilities(key, images, labels):
    x = preprocess(key, {"image": images}, None, train=True)
    teacher_fn = lambda v: teacher.predict(teacher_variables, v)
    parts = [jax.nn.softmax(teacher_fn(x))]
    if maker is not None:
      view = maker(jax.random.fold_in(key, 1), x, labels, teacher_fn, student_fn, hparams)
      parts.append(jax.nn.softmax(view.teacher_logits))
    return jnp.concatenate(parts)

  sampler = EpochSampler(len(data), batch_size, seed)
  base_key = jax.random.PRNGKey(seed)
  collected = []
  for step in range(batches):
    index = sampler.global_indices(step)
    collected.append(
      np.asarray(
        probabilities(jax.random.fold_in(base_key, step), data.images[index], data.labels[index])
      )
    )
  return np.concatenate(collected), collected[0].shape[0]
