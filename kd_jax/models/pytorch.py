"""PyTorch state dicts onto kd_jax's Flax variables, without importing torch.

``from_pytorch(name, path)`` reads a PyTorch file (``read_state_dict``: safetensors, or a
``.pth`` in torch.save's zip format or its legacy pre-1.6 format, through an unpickler that
builds only tensors, storages and plain containers) for the kd_jax model ``name``, by that
model's entry in ``PYTORCH_LAYOUTS``: whose files it reads and how their keys are renamed.
Two sources are supported:

  * torchvision's ImageNet ResNets (``imagenet_resnet18/34/50``), e.g.
    ``ResNet34_Weights.IMAGENET1K_V1`` saved with torch.save or as safetensors;
  * RepDistiller's CIFAR-100 models (github HobbitLong/RepDistiller, ``models/``) under
    kd_jax's names: its released teachers (``teachers_cifar100``, fetched by
    ``scripts/fetch_pretrained_teachers.sh``: ``resnet32x4_vanilla/ckpt_epoch_240.pth``,
    ``wrn_40_2_vanilla/...``, ``vgg13_vanilla``, ``ResNet50_vanilla``, ``resnet56``,
    ``resnet110``) and any ``ckpt_epoch_*.pth`` / ``*_best.pth`` its ``train_teacher.py`` /
    ``train_student.py`` writes: a dict ``{'model': state_dict, 'epoch': ..., 'optimizer':
    ..., 'accuracy' or 'best_acc': ...}`` of CUDA tensors, in the legacy format when written
    by the PyTorch 0.4-1.5 it was made for. (Its ``*_last.pth`` also pickles the argparse
    options, which the unpickler refuses: take the ``ckpt_epoch_240.pth``.)

``variables_from_state_dict(state, template, rename)`` takes a state dict as NumPy arrays
(``{"layer1.0.conv1.weight": array, ...}``), renames each key to a kd_jax module path
(``rename``: e.g. ``torchvision_resnet_key``), converts the layouts (convolutions OIHW →
HWIO, grouped and depthwise ones included: PyTorch's ``[O, I/groups, kh, kw]`` is Flax's
``feature_group_count`` kernel ``[kh, kw, I/groups, O]``; linear OI → IO; BatchNorm
weight/bias/running_mean/running_var → scale/bias and the ``batch_stats`` mean/var) and
checks every key and shape against ``template`` (the Flax variables of the model it is for):
missing and unexpected keys are named, and a shape that differs names the key and both
shapes (a class count that differs says so).
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
from collections.abc import Callable

import numpy as np

_IGNORED_SUFFIXES = ("num_batches_tracked",)
# The classifiers' weights: torchvision's and RepDistiller's resnet/wrn, its resnetv2 and
# ShuffleV2, its vgg, its MobileNetV2 (a Sequential).
_CLASSIFIER_KEYS = ("fc.weight", "linear.weight", "classifier.weight", "classifier.0.weight")
_CLASSIFIER_PREFIXES = ("fc.", "linear.", "classifier.")


def torchvision_resnet_key(key: str) -> str:
  """A torchvision ResNet key in kd_jax's names (kd_jax.models.resnet_imagenet):
  ``layer1.0.downsample.1.weight`` → ``layer1_0.downsample_bn.weight``."""
  key = re.sub(r"^layer(\d+)\.(\d+)\.", r"layer\1_\2.", key)
  return key.replace("downsample.0.", "downsample_conv.").replace("downsample.1.", "downsample_bn.")


# RepDistiller's CIFAR models (models/*.py). Its resnet.py lays its blocks out as torchvision
# does (``layer1.0.downsample.0``): torchvision_resnet_key serves it too.


def repdistiller_wrn_key(key: str) -> str:
  """wrn.py: ``block1.layer.0.convShortcut.weight`` → ``block1_0.shortcut_conv.weight``."""
  key = re.sub(r"^block(\d+)\.layer\.(\d+)\.", r"block\1_\2.", key)
  return key.replace(".convShortcut.", ".shortcut_conv.")


def repdistiller_vgg_key(key: str) -> str:
  """vgg.py's ``*_bn`` models: ``blockB`` is a Sequential of (conv, BN, ReLU) triples, so
  position 3j is convolution j and 3j+1 its BatchNorm: ``block2.3.weight`` →
  ``block2_conv1.weight``, ``block2.4.running_mean`` → ``block2_bn1.running_mean``."""
  match = re.fullmatch(r"block(\d+)\.(\d+)\.(\w+)", key)
  if match is None:
    return key
  layer, position = divmod(int(match[2]), 3)
  kind = {0: "conv", 1: "bn"}.get(position)
  return f"block{match[1]}_{kind}{layer}.{match[3]}" if kind else key


def repdistiller_resnetv2_key(key: str) -> str:
  """resnetv2.py (ResNet50): ``layer2.0.shortcut.1.weight`` → ``layer2_0.shortcut_bn.weight``."""
  key = re.sub(r"^layer(\d+)\.(\d+)\.", r"layer\1_\2.", key)
  return key.replace(".shortcut.0.", ".shortcut_conv.").replace(".shortcut.1.", ".shortcut_bn.")


# mobilenetv2.py: an inverted residual's ``conv`` Sequential holds (conv, BN, ReLU) × 2 and
# (conv, BN); the stem, the head and the classifier are Sequentials too.
_MOBILENETV2_BLOCK_LAYERS = {
  "0": "expand_conv",
  "1": "expand_bn",
  "3": "depthwise_conv",
  "4": "depthwise_bn",
  "6": "project_conv",
  "7": "project_bn",
}
_MOBILENETV2_OUTER_LAYERS = {
  "conv1.0": "stem_conv",
  "conv1.1": "stem_bn",
  "conv2.0": "head_conv",
  "conv2.1": "head_bn",
  "classifier.0": "classifier",
}


def repdistiller_mobilenetv2_key(key: str) -> str:
  """mobilenetv2.py (``mobile_half``): ``blocks.2.1.conv.4.weight`` →
  ``stage2_1.depthwise_bn.weight``, ``conv1.0.weight`` → ``stem_conv.weight``,
  ``classifier.0.weight`` → ``classifier.weight``."""
  module, _, suffix = key.rpartition(".")
  match = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.conv\.(\d+)", module)
  if match and match[3] in _MOBILENETV2_BLOCK_LAYERS:
    module = f"stage{match[1]}_{match[2]}.{_MOBILENETV2_BLOCK_LAYERS[match[3]]}"
  else:
    module = _MOBILENETV2_OUTER_LAYERS.get(module, module)
  return f"{module}.{suffix}"


def repdistiller_shufflenetv2_key(key: str) -> str:
  """ShuffleNetv2.py (``ShuffleV2``): ``layerK.0`` is the down-sampling block, ``layerK_down``;
  ``layerK.i`` for i ≥ 1 is basic block ``layerK_{i-1}``."""
  match = re.match(r"layer(\d+)\.(\d+)\.", key)
  if match is None:
    return key
  index = int(match[2])
  return f"layer{match[1]}_{'down' if index == 0 else index - 1}.{key[match.end() :]}"


def _flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, (*prefix, name)))
    else:
      flat[(*prefix, name)] = value
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
    "weight": [("params", (*parts, "kernel")), ("params", (*parts, "scale"))],
    "bias": [("params", (*parts, "bias"))],
    "running_mean": [("batch_stats", (*parts, "mean"))],
    "running_var": [("batch_stats", (*parts, "var"))],
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


def variables_from_state_dict(
  state: dict[str, np.ndarray],
  template: dict,
  rename: Callable[[str], str] = lambda key: key,
  where: str = "the checkpoint",
) -> dict:
  """``{"params", "batch_stats"}`` shaped like ``template`` holding ``state``'s weights."""
  template_paths = {
    (collection, path): value
    for collection in ("params", "batch_stats")
    for path, value in _flatten(template.get(collection, {})).items()
  }
  found: dict[tuple, np.ndarray] = {}
  matched, unexpected, mismatched = set(), [], []
  for key, value in state.items():
    if key.endswith(_IGNORED_SUFFIXES):
      continue
    module, _, suffix = rename(key).rpartition(".")
    target = _target(module, suffix, template_paths)
    if target is None:
      unexpected.append(key)
      continue
    matched.add(target)
    array = _to_flax_layout(np.asarray(value), target[1])
    expected = tuple(template_paths[target].shape)
    if array.shape != expected:  # named in the file's (PyTorch) layout
      mismatched.append((key, tuple(np.shape(value)), _torch_shape(expected, target[1])))
      continue
    found[target] = array.astype(template_paths[target].dtype)
  # Keys that do not match (a file of another model) say more than the shapes that differ.
  missing = sorted(
    ".".join(path) for collection, path in template_paths if (collection, path) not in matched
  )
  if missing or unexpected:
    shapes = f"; {len(mismatched)} shape(s) differ besides" if mismatched else ""
    raise ValueError(
      f"{where} does not fit the model: missing {missing[:8]}"
      f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
      f"{' …' if len(unexpected) > 8 else ''}{shapes}."
    )
  if mismatched:
    details = "; ".join(
      f"{key}: {shape} in the file, {expected} in the model"
      for key, shape, expected in mismatched[:5]
    )
    classes = [m for m in mismatched if m[0].startswith(_CLASSIFIER_PREFIXES)]
    hint = (
      f" (the file's classifier has {classes[0][1][0]} classes, the model "
      f"{classes[0][2][0]}: pass num_classes to match)"
      if classes
      else ""
    )
    raise ValueError(
      f"{where} does not fit the model: {len(mismatched)} shape(s) differ: {details}{hint}."
    )
  variables = {
    collection: _unflatten({path: value for (c, path), value in found.items() if c == collection})
    for collection in ("params", "batch_stats")
  }
  return variables


# --- Reading PyTorch files without torch. ---

# torch's storage classes, by the name a .pth pickles them under, and their NumPy dtypes.
_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "BFloat16Storage": "bfloat16",
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
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


class _PendingStorage:
  """A legacy file's storage: its bytes follow the pickle that refers to it (``array`` is set
  once they are read)."""

  def __init__(self, dtype: np.dtype, numel: int) -> None:
    self.dtype, self.numel = dtype, numel
    self.array: np.ndarray | None = None


class _PendingTensor:
  """A tensor on a _PendingStorage: ``_rebuild_tensor``'s arguments, until its bytes come."""

  def __init__(self, *arguments):
    self.arguments = arguments


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """A tensor as a NumPy array: ``size`` elements of ``storage`` from ``offset`` with
  ``stride`` (in elements), copied so that it owns its memory. The file says where the
  tensor lies: a view that would reach outside its storage is refused (as_strided itself
  would read whatever memory lies there)."""
  del unused  # requires_grad, backward hooks, metadata
  if isinstance(storage, _PendingStorage):
    return _PendingTensor(storage, offset, size, stride)
  if not isinstance(storage, np.ndarray):
    raise UnsafeCheckpointError("a tensor in the .pth file is not built on a storage.")
  offset, size, stride = int(offset), tuple(map(int, size)), tuple(map(int, stride))
  if (
    offset < 0
    or len(size) != len(stride)
    or any(n < 0 for n in size)
    or any(step < 0 for step in stride)
  ):
    raise UnsafeCheckpointError(
      f"a tensor in the .pth file has an invalid layout (offset "
      f"{offset}, size {size}, stride {stride})."
    )
  if 0 in size:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * step for n, step in zip(size, stride))
  if last >= storage.size:
    raise UnsafeCheckpointError(
      f"a tensor in the .pth file reaches element {last} of a "
      f"storage of {storage.size}: the file is damaged."
    )
  if not size:
    return np.array(storage[offset])
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
    storage[offset:], shape=size, strides=tuple(step * item for step in stride)
  )
  return np.array(view)


def _rebuild_parameter(data, *unused):
  del unused
  return data


def _resolve(value):
  """``value`` with every _PendingTensor made an array (its storage's bytes now read);
  dicts (OrderedDicts included) and lists are changed in place."""
  if isinstance(value, _PendingTensor):
    storage, *rest = value.arguments
    return _rebuild_tensor(storage.array, *rest)
  if isinstance(value, dict):
    for key, item in value.items():
      value[key] = _resolve(item)
  elif isinstance(value, list):
    value[:] = [_resolve(item) for item in value]
  elif isinstance(value, tuple):
    return tuple(_resolve(item) for item in value)
  return value


class _Storage:
  """The pickled storage class (torch.FloatStorage, ...): only its name is used."""

  def __init__(self, name: str):
    self.name = name


def _restricted_unpickler(file, load_storage=None):
  """An unpickler of ``file`` that builds only tensors (through ``load_storage(key, dtype,
  numel)``, which returns the storage's array or a _PendingStorage), storages, OrderedDicts
  and plain containers. Storages are named ``torch.FloatStorage`` ..., or
  ``torch.cuda.FloatStorage`` ... in files PyTorch before 2.0 saved from the GPU."""
  import collections
  import pickle

  # Fresh functions for each file: a pickle's BUILD opcode can set attributes of the objects
  # it is given, and must not reach this module's own functions.
  def rebuild_tensor(*arguments):
    return _rebuild_tensor(*arguments)

  def rebuild_parameter(*arguments):
    return _rebuild_parameter(*arguments)

  allowed = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    **{
      (module, name): _Storage(name)
      for name in _STORAGE_DTYPES
      for module in ("torch", "torch.cuda")
    },
  }

  class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
      if (module, name) in allowed:
        return allowed[(module, name)]
      raise UnsafeCheckpointError(
        f"refusing to load {module}.{name}: a .pth read by kd_jax may hold only tensors, "
        "storages and plain containers (a state dict, or RepDistiller's {'model': ...}); "
        "anything else could run code. Save model.state_dict() instead of the model."
      )

    def persistent_load(self, pid):
      # zip format: (kind, storage class, key, location, numel); the legacy one adds the
      # view metadata, None since PyTorch 0.4.
      kind, storage, key, _, numel = pid[:5]
      if kind != "storage" or not isinstance(storage, _Storage) or load_storage is None:
        raise UnsafeCheckpointError(f"unexpected persistent id {pid[:2]!r} in the .pth file.")
      if len(pid) > 5 and pid[5] is not None:
        raise ValueError(
          "the .pth file holds storage views (saved by PyTorch before 0.4); "
          "re-save it with a newer PyTorch."
        )
      return load_storage(str(key), _numpy_dtype(storage.name), int(numel))

  return Unpickler(file)


# torch.save's format before PyTorch 1.6 (and after, with _use_new_zipfile_serialization=
# False): pickles of this magic number, the protocol version and the system's sizes, then of
# the object (storages by key), then of the storage keys; then each of those storages in
# turn: its element count (int64) and its bytes.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _read_legacy_pth(file, path: str) -> object:
  try:
    magic = _restricted_unpickler(file).load()
  except Exception:  # not a pickle at all: the message below says what is readable
    magic = None
  if magic != _LEGACY_MAGIC:
    raise ValueError(
      f"{path} is not a PyTorch file (neither torch.save's zip format nor its "
      "legacy one); re-save it with torch.save(state_dict, path) or as "
      "safetensors."
    )
  protocol = _restricted_unpickler(file).load()
  system = _restricted_unpickler(file).load()
  little_endian = system.get("little_endian", True) if isinstance(system, dict) else True
  if protocol != _LEGACY_PROTOCOL or not little_endian:
    raise ValueError(
      f"{path} is a legacy PyTorch file of protocol {protocol}, "
      f"{'little' if little_endian else 'big'}-endian; only protocol "
      f"{_LEGACY_PROTOCOL}, little-endian, is read."
    )
  storages: dict[str, _PendingStorage] = {}
  result = _restricted_unpickler(
    file, lambda key, dtype, numel: storages.setdefault(key, _PendingStorage(dtype, numel))
  ).load()
  for key in _restricted_unpickler(file).load():
    if key not in storages:
      raise ValueError(f"{path} lists storage {key!r}, which nothing in it refers to.")
    storage = storages[key]
    header = file.read(8)
    numel = struct.unpack("<q", header)[0] if len(header) == 8 else -1
    # The count is checked before reading, so a damaged header cannot ask for any memory.
    data = file.read(numel * np.dtype(storage.dtype).itemsize) if numel == storage.numel else b""
    if numel != storage.numel or len(data) < numel * np.dtype(storage.dtype).itemsize:
      raise ValueError(
        f"{path} is truncated or damaged: storage {key!r} should hold {storage.numel} elements."
      )
    storage.array = np.frombuffer(data, dtype=storage.dtype, count=numel)
  unread = [key for key, storage in storages.items() if storage.array is None]
  if unread:
    raise ValueError(f"{path} lacks the bytes of storages {unread[:4]}.")
  return _resolve(result)


def read_pth(path: str) -> object:
  """The object a ``.pth`` / ``.pt`` file holds (torch.save's zip format, PyTorch ≥ 1.6, or
  its legacy format), its tensors as NumPy arrays, through an unpickler that builds only
  tensors, storages and ordered dicts."""
  import zipfile

  with open(path, "rb") as file:
    # As torch.load decides: a zip archive starts with a local file header; is_zipfile looks
    # for the directory at the end, which a legacy file's tensor bytes could imitate.
    if file.read(4) != b"PK\x03\x04":
      file.seek(0)
      return _read_legacy_pth(file, path)
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise ValueError(f"{path} holds no single data.pkl; it is not a torch.save file.")
    root = pickles[0][: -len("data.pkl")]
    return _restricted_unpickler(
      io.BytesIO(archive.read(pickles[0])),
      lambda key, dtype, numel: np.frombuffer(
        archive.read(f"{root}data/{key}"), dtype=dtype, count=numel
      ),
    ).load()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state dict from a ``.safetensors`` file or a ``.pth`` / ``.pt`` (``read_pth``; a bare
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
    raise ValueError(f"{path} holds no state dict of tensors (found {type(state).__name__}{keys}).")
  if all(key.startswith("module.") for key in state):
    state = {key[len("module.") :]: value for key, value in state.items()}
  return dict(state)


@dataclasses.dataclass(frozen=True)
class PytorchLayout:
  """Whose PyTorch files a kd_jax model reads, and how: ``rename`` maps their keys to kd_jax's
  module paths, ``classifier`` is the key whose rows count the classes, ``image_size`` the
  side of the images the template variables are shaped for."""

  source: str
  rename: Callable[[str], str]
  classifier: str
  image_size: int


_TORCHVISION = PytorchLayout("torchvision's ResNets", torchvision_resnet_key, "fc.weight", 64)
_REPDISTILLER_RESNET = PytorchLayout(
  "RepDistiller's resnet.py", torchvision_resnet_key, "fc.weight", 32
)
_REPDISTILLER_WRN = PytorchLayout("RepDistiller's wrn.py", repdistiller_wrn_key, "fc.weight", 32)
_REPDISTILLER_VGG = PytorchLayout(
  "RepDistiller's vgg.py (*_bn)", repdistiller_vgg_key, "classifier.weight", 32
)

# kd_jax's model name → the layout of the PyTorch files it reads (RepDistiller's models under
# kd_jax's names: its ResNet50, MobileNetV2 (mobile_half) and ShuffleV2 are resnet50,
# mobilenetv2 and shufflenetv2; its vggN is vggN_bn).
PYTORCH_LAYOUTS: dict[str, PytorchLayout] = {
  **{f"imagenet_resnet{depth}": _TORCHVISION for depth in (18, 34, 50)},
  **{f"resnet{depth}": _REPDISTILLER_RESNET for depth in (8, 14, 20, 32, 44, 56, 110)},
  "resnet8x4": _REPDISTILLER_RESNET,
  "resnet32x4": _REPDISTILLER_RESNET,
  **{f"wrn_{depth}_{k}": _REPDISTILLER_WRN for depth, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
  **{f"vgg{depth}": _REPDISTILLER_VGG for depth in (8, 11, 13, 16, 19)},
  "resnet50": PytorchLayout(
    "RepDistiller's resnetv2.py (ResNet50)", repdistiller_resnetv2_key, "linear.weight", 32
  ),
  "mobilenetv2": PytorchLayout(
    "RepDistiller's mobilenetv2.py (MobileNetV2, mobile_half)",
    repdistiller_mobilenetv2_key,
    "classifier.0.weight",
    32,
  ),
  "shufflenetv2": PytorchLayout(
    "RepDistiller's ShuffleNetv2.py (ShuffleV2)", repdistiller_shufflenetv2_key, "linear.weight", 32
  ),
}
# RepDistiller's model_dict names that kd_jax spells otherwise, for the error message.
_REPDISTILLER_NAMES = {
  "ResNet50": "resnet50",
  "MobileNetV2": "mobilenetv2",
  "mobile_half": "mobilenetv2",
  "ShuffleV2": "shufflenetv2",
  **{f"vgg{depth}_bn": f"vgg{depth}" for depth in (8, 11, 13, 16, 19)},
}


def from_pytorch(name: str, path: str, num_classes: int | None = None) -> dict:
  """``{"params", "batch_stats"}`` for ``kd_jax.models.create_model(name, num_classes)``
  from a PyTorch file (``read_state_dict``: safetensors, or a zip-format or legacy ``.pth``,
  a bare state dict or a checkpoint holding it under ``model``), laid out as
  ``PYTORCH_LAYOUTS[name]`` says:

    * ``imagenet_resnet18/34/50``: torchvision's ResNets (e.g.
      ``ResNet34_Weights.IMAGENET1K_V1`` saved with torch.save or as safetensors);
    * ``resnet8/14/20/32/44/56/110``, ``resnet8x4``, ``resnet32x4``, ``wrn_16_1/16_2/40_1/
      40_2``, ``vgg8/11/13/16/19``, ``resnet50``, ``mobilenetv2``, ``shufflenetv2``:
      RepDistiller's CIFAR-100 models of those names (its ``vggN_bn``, ``ResNet50``,
      ``MobileNetV2`` = ``mobile_half``, ``ShuffleV2``), e.g. its released teacher
      ``resnet32x4_vanilla/ckpt_epoch_240.pth``, a dict ``{'model': state_dict, 'epoch':
      240, 'optimizer': ..., 'accuracy': ...}`` (the rest of the dict is not used).

  ``num_classes`` None: the file's classifier's. Every key and shape is checked
  (``variables_from_state_dict``): a file of another model names its missing and unexpected
  keys."""
  import jax

  from kd_jax import models

  layout = PYTORCH_LAYOUTS.get(name)
  if layout is None:
    hint = (
      f" (RepDistiller's {name!r} is kd_jax's {_REPDISTILLER_NAMES[name]!r})"
      if name in _REPDISTILLER_NAMES
      else ""
    )
    raise ValueError(
      f"reading PyTorch weights for {name!r} is not supported{hint}; "
      f"supported: {', '.join(sorted(PYTORCH_LAYOUTS))}."
    )
  state = read_state_dict(path)
  if num_classes is None:
    # Another family's classifier serves too: the key check then names what differs.
    classifier = next(
      (state[key] for key in (layout.classifier, *_CLASSIFIER_KEYS) if key in state), None
    )
    if classifier is None:
      raise ValueError(
        f"{path} has no {layout.classifier} (the classifier of "
        f"{layout.source}) to take the class count from; pass num_classes."
      )
    num_classes = int(classifier.shape[0])
  model = models.create_model(name, num_classes)
  size = layout.image_size
  template = jax.eval_shape(
    lambda: models.init_variables(model, jax.random.PRNGKey(0), (size, size, 3))
  )
  return variables_from_state_dict(state, template, layout.rename, where=path)
