"""Weight conversion between kd_jax's Flax variables and the PyTorch twins, both ways.

Module names match, so a Flax path ``("layer1_0", "conv1", "kernel")`` is the PyTorch key
``"layer1_0.conv1.weight"``; a twin that keeps another library's key names (torchvision's
``layer1.0.conv1.weight``) says how they read in kd_jax with a ``flax_key`` function. Convolution kernels go HWIO ↔ OIHW, dense kernels IO ↔ OI,
BatchNorm ``scale/bias/mean/var`` ↔ ``weight/bias/running_mean/running_var``.
"""

from __future__ import annotations

import flax
import numpy as np
import torch

_PARAM_SUFFIX = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_STAT_SUFFIX = {"mean": "running_mean", "var": "running_var"}


def _torch_key(path, suffixes) -> str:
  return ".".join(path[:-1]) + "." + suffixes[path[-1]]


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:  # HWIO -> OIHW
    return array.transpose(3, 2, 0, 1)
  if array.ndim == 2:  # IO -> OI
    return array.T
  return array


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return array.T
  return array


def flax_to_torch(variables: dict, model: torch.nn.Module) -> None:
  """Copies Flax ``{"params", "batch_stats"}`` into ``model`` in place (strict)."""
  state = {}
  for collection, suffixes in (("params", _PARAM_SUFFIX), ("batch_stats", _STAT_SUFFIX)):
    for path, value in flax.traverse_util.flatten_dict(variables.get(collection, {})).items():
      state[_torch_key(path, suffixes)] = torch.from_numpy(
          np.array(_to_torch_layout(np.asarray(value, np.float32)), copy=True))
  flax_key = getattr(model, "flax_key", lambda key: key)
  torch_keys = {flax_key(k): k for k in model.state_dict()
                if not k.endswith("num_batches_tracked")}
  missing, unexpected = set(torch_keys) - set(state), set(state) - set(torch_keys)
  if missing or unexpected:
    raise ValueError(f"weights do not match the PyTorch model: missing {sorted(missing)}, "
                     f"unexpected {sorted(unexpected)}.")
  model.load_state_dict({torch_keys[key]: value for key, value in state.items()}, strict=False)


def torch_to_flax(model: torch.nn.Module, variables_template: dict) -> dict:
  """Returns Flax variables shaped like ``variables_template`` with ``model``'s weights."""
  flax_key = getattr(model, "flax_key", lambda key: key)
  torch_state = {flax_key(k): v.detach().cpu().numpy() for k, v in model.state_dict().items()}
  result = {}
  for collection, suffixes in (("params", _PARAM_SUFFIX), ("batch_stats", _STAT_SUFFIX)):
    flat = {}
    for path in flax.traverse_util.flatten_dict(variables_template.get(collection, {})):
      flat[path] = _to_flax_layout(torch_state[_torch_key(path, suffixes)])
    result[collection] = flax.traverse_util.unflatten_dict(flat)
  return result
