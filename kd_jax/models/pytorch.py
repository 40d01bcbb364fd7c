"""PyTorch state dicts onto kd_jax's Flax variables, without importing torch.

``variables_from_state_dict(state, template, rename)`` takes a state dict as NumPy arrays
(``{"layer1.0.conv1.weight": array, ...}``), renames each key to a kd_jax module path
(``rename``: e.g. ``torchvision_resnet_key``), converts the layouts (convolutions OIHW →
HWIO, linear OI → IO, BatchNorm weight/bias/running_mean/running_var → scale/bias and the
``batch_stats`` mean/var) and checks every key and shape against ``template`` (the Flax
variables of the model it is for): missing and unexpected keys are named, and a shape that
differs names the key and both shapes (a class count that differs says so).
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

_IGNORED_SUFFIXES = ("num_batches_tracked",)


def torchvision_resnet_key(key: str) -> str:
  """A torchvision ResNet key in kd_jax's names (kd_jax.models.resnet_imagenet):
  ``layer1.0.downsample.1.weight`` → ``layer1_0.downsample_bn.weight``."""
  key = re.sub(r"^layer(\d+)\.(\d+)\.", r"layer\1_\2.", key)
  return key.replace("downsample.0.", "downsample_conv.").replace("downsample.1.",
                                                                 "downsample_bn.")


def _flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, prefix + (name,)))
    else:
      flat[prefix + (name,)] = value
  return flat


def _unflatten(flat: dict[tuple, np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


def _target(module: str, suffix: str, template_paths) -> tuple[str, tuple] | None:
  """The (collection, path) a PyTorch ``module.suffix`` lands on, or None if unknown."""
  parts = tuple(module.split("."))
  candidates = {
      "weight": [("params", parts + ("kernel",)), ("params", parts + ("scale",))],
      "bias": [("params", parts + ("bias",))],
      "running_mean": [("batch_stats", parts + ("mean",))],
      "running_var": [("batch_stats", parts + ("var",))],
  }.get(suffix, [])
  for candidate in candidates:
    if candidate in template_paths:
      return candidate
  return None


def _to_flax_layout(array: np.ndarray, path: tuple) -> np.ndarray:
  if path[-1] == "kernel" and array.ndim == 4:  # OIHW -> HWIO
    return array.transpose(2, 3, 1, 0)
  if path[-1] == "kernel" and array.ndim == 2:  # OI -> IO
    return array.T
  return array


def _torch_shape(shape: tuple, path: tuple) -> tuple:
  if path[-1] == "kernel" and len(shape) == 4:  # HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  if path[-1] == "kernel" and len(shape) == 2:
    return shape[::-1]
  return shape


def variables_from_state_dict(state: dict[str, np.ndarray], template: dict,
                              rename: Callable[[str], str] = lambda key: key,
                              where: str = "the checkpoint") -> dict:
  """``{"params", "batch_stats"}`` shaped like ``template`` holding ``state``'s weights."""
  template_paths = {(collection, path): value
                    for collection in ("params", "batch_stats")
                    for path, value in _flatten(template.get(collection, {})).items()}
  found: dict[tuple, np.ndarray] = {}
  unexpected, mismatched = [], []
  for key, value in state.items():
    if key.endswith(_IGNORED_SUFFIXES):
      continue
    module, _, suffix = rename(key).rpartition(".")
    target = _target(module, suffix, template_paths)
    if target is None:
      unexpected.append(key)
      continue
    array = _to_flax_layout(np.asarray(value), target[1])
    expected = tuple(template_paths[target].shape)
    if array.shape != expected:  # named in the file's (PyTorch) layout
      mismatched.append((key, tuple(np.shape(value)), _torch_shape(expected, target[1])))
      continue
    found[target] = array.astype(template_paths[target].dtype)
  if mismatched:
    details = "; ".join(f"{key}: {shape} in the file, {expected} in the model"
                        for key, shape, expected in mismatched[:5])
    classes = [m for m in mismatched if m[0].startswith(("fc.", "linear.", "classifier"))]
    hint = (f" (the file's classifier has {classes[0][1][0]} classes, the model "
            f"{classes[0][2][0]}: pass num_classes to match)" if classes else "")
    raise ValueError(f"{where} does not fit the model: {len(mismatched)} shape(s) differ: "
                     f"{details}{hint}.")
  missing = sorted(".".join(path) for collection, path in template_paths
                   if (collection, path) not in found)
  if missing or unexpected:
    raise ValueError(f"{where} does not fit the model: missing {missing[:8]}"
                     f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                     f"{' …' if len(unexpected) > 8 else ''}.")
  variables = {collection: _unflatten({path: value for (c, path), value in found.items()
                                       if c == collection})
               for collection in ("params", "batch_stats")}
  return variables
