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


# --- Reading PyTorch files without torch. ---

# torch's storage classes, by the name a .pth pickles them under, and their NumPy dtypes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
  """A .pth file asks to build something other than tensors and plain containers."""


def _numpy_dtype(name: str):
  dtype = _STORAGE_DTYPES[name]
  if dtype == "bfloat16":
    import ml_dtypes  # installed with jax
    return ml_dtypes.bfloat16
  return dtype


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """A tensor as a NumPy array: ``size`` elements of ``storage`` from ``offset`` with
  ``stride`` (in elements), copied so that it owns its memory."""
  del unused  # requires_grad, backward hooks, metadata
  if not size:
    return np.array(storage[offset])
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * item for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Storage:
  """The pickled storage class (torch.FloatStorage, ...): only its name is used."""

  def __init__(self, name: str):
    self.name = name


def _restricted_unpickler(data: bytes, read_record):
  import collections
  import pickle

  allowed = {("collections", "OrderedDict"): collections.OrderedDict,
             ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
             ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
             ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
             **{("torch", name): _Storage(name) for name in _STORAGE_DTYPES}}

  class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
      if (module, name) in allowed:
        return allowed[(module, name)]
      raise UnsafeCheckpointError(
          f"refusing to load {module}.{name}: a .pth read by kd_jax may hold only tensors, "
          "storages and plain containers (a state dict, or RepDistiller's {'model': ...}); "
          "anything else could run code. Save model.state_dict() instead of the model.")

    def persistent_load(self, pid):
      kind, storage, key, _, numel = pid[:5]
      if kind != "storage" or not isinstance(storage, _Storage):
        raise UnsafeCheckpointError(f"unexpected persistent id {pid[:2]!r} in the .pth file.")
      dtype = _numpy_dtype(storage.name)
      return np.frombuffer(read_record(str(key)), dtype=dtype, count=int(numel))

  return Unpickler(__import__("io").BytesIO(data))


def read_pth(path: str) -> object:
  """The object a zip-format ``.pth`` / ``.pt`` file holds, its tensors as NumPy arrays,
  through an unpickler that builds only tensors, storages and ordered dicts."""
  import zipfile
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not a zip-format PyTorch file (torch.save since 1.6); "
                     "re-save it with torch.save(state_dict, path) or as safetensors.")
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise ValueError(f"{path} holds no single data.pkl; it is not a torch.save file.")
    root = pickles[0][:-len("data.pkl")]
    return _restricted_unpickler(archive.read(pickles[0]),
                                 lambda key: archive.read(f"{root}data/{key}")).load()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state dict from a ``.safetensors`` file or a zip-format ``.pth`` / ``.pt`` (a bare
  state dict, or a checkpoint that holds one under ``model`` or ``state_dict``, as
  RepDistiller's and mdistiller's do); DataParallel's ``module.`` prefixes are removed."""
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    state = load_file(path)
  else:
    state = read_pth(path)
    if isinstance(state, dict):
      for key in ("model", "state_dict", "net"):
        if key in state and isinstance(state[key], dict):
          state = state[key]
          break
  if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
    keys = f" with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else ""
    raise ValueError(f"{path} holds no state dict of tensors (found "
                     f"{type(state).__name__}{keys}).")
  if all(key.startswith("module.") for key in state):
    state = {key[len("module."):]: value for key, value in state.items()}
  return dict(state)


# How each family's PyTorch keys map onto kd_jax's names.
_RENAMES = {"imagenet_": torchvision_resnet_key}


def from_pytorch(name: str, path: str, num_classes: int | None = None) -> dict:
  """``{"params", "batch_stats"}`` for ``kd_jax.models.create_model(name, num_classes)``
  from a PyTorch file (``read_state_dict``): torchvision's ResNets (``imagenet_resnet18/34/
  50``, e.g. ``ResNet34_Weights.IMAGENET1K_V1`` saved with torch.save or as safetensors).
  ``num_classes`` None: the file's classifier's. Every key and shape is checked
  (``variables_from_state_dict``)."""
  import jax
  from kd_jax import models
  rename = next((function for prefix, function in _RENAMES.items()
                 if name.startswith(prefix)), None)
  if rename is None:
    raise ValueError(f"reading PyTorch weights for {name!r} is not supported yet; supported: "
                     f"{', '.join(n for n in models.MODEL_NAMES if n.startswith('imagenet_'))}.")
  state = read_state_dict(path)
  if num_classes is None:
    classifier = state.get("fc.weight")
    if classifier is None:
      raise ValueError(f"{path} has no fc.weight to take the class count from; pass "
                       "num_classes.")
    num_classes = int(classifier.shape[0])
  model = models.create_model(name, num_classes)
  template = jax.eval_shape(lambda: models.init_variables(model, jax.random.PRNGKey(0),
                                                          (64, 64, 3)))
  return variables_from_state_dict(state, template, rename, where=path)
