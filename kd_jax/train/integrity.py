"""Checksums of array trees and of JSON metadata, so that a flipped bit never goes unnoticed.

A checkpoint records, for every array it stores, two 32-bit sums of the array's bit
patterns (``fingerprints``); restoring recomputes them and refuses an array whose sums
differ. Integer addition modulo 2**32 is exact in any order, so the sums do not depend on
how an array is laid out or sharded: a checkpoint written on 8 devices verifies on 1. An
array this process holds whole (one process, or replicated) is summed on the host with
NumPy, in chunks, which needs no compilation; an array on an accelerator, or sharded over
several processes, is summed on device by a small jitted function (every process runs it,
and every process gets the same numbers), so it is never copied to the host. Both compute
the same sums (tested).

The two sums of an array with 32-bit words ``w_i`` (index ``i`` in row-major order; 8- and
16-bit values are widened, 64-bit ones split into two words)::

    h1 = Σ_i w_i · (2i + 1)            mod 2**32
    h2 = Σ_i mix(w_i XOR (i · φ32))    mod 2**32   (mix: murmur3's 32-bit finaliser)

A single flipped bit ``k`` of word ``i`` changes ``h1`` by ``±2**k · (2i + 1)``, which is
never 0 modulo 2**32 because ``2i + 1`` is odd: every one-bit error is detected. ``h2`` makes
a compensating pair of errors in two words (which could cancel in ``h1``) as unlikely as a
random 32-bit collision. These are checks against accidents (disk, network, a truncated
copy), not a cryptographic signature.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

_GOLDEN = np.uint32(0x9E3779B9)  # 2**32 / φ, the usual odd constant for index mixing


def _words(x: jax.Array) -> jax.Array:
  """The array's bit pattern as uint32 words (8/16-bit values widened, 64-bit split)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = x.dtype.itemsize
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of 2 words
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _row_major_index(shape) -> jax.Array:
  """Each element's row-major position as uint32, built from iotas (no reshape, so a
  sharded array is never gathered)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
    stride *= shape[axis]
  return index


def _mix(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser: every input bit affects every output bit."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def array_fingerprint(x: ArrayLike) -> jax.Array:
  """``[h1, h2]`` (uint32) of one array, as the module docstring defines them."""
  words = _words(jnp.asarray(x))
  index = _row_major_index(words.shape)
  h1 = jnp.sum(words * (np.uint32(2) * index + np.uint32(1)), dtype=jnp.uint32)
  h2 = jnp.sum(_mix(words ^ (index * _GOLDEN)), dtype=jnp.uint32)
  return jnp.stack([h1, h2])


_device_fingerprint = jax.jit(array_fingerprint)
_CHUNK = 1 << 22  # words per NumPy pass: bounds the temporaries at a few tens of MiB


def _host_words(x: np.ndarray) -> np.ndarray:
  """``_words`` on the host: the bit pattern as a flat uint32 array (row-major)."""
  x = np.ascontiguousarray(x)
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  size = x.dtype.itemsize
  if size in (4, 8):
    return x.reshape(-1).view(np.uint32)  # 64-bit: low word first, as bitcast on device
  return x.reshape(-1).view({1: np.uint8, 2: np.uint16}[size]).astype(np.uint32)


def host_fingerprint(x: ArrayLike) -> np.ndarray:
  """``array_fingerprint`` computed with NumPy (same numbers, no compilation)."""
  words = _host_words(np.asarray(x))
  h1 = h2 = np.uint32(0)
  with np.errstate(over="ignore"):
    for start in range(0, words.size, _CHUNK):
      chunk = words[start : start + _CHUNK]
      index = np.arange(start, start + chunk.size, dtype=np.uint64).astype(np.uint32)
      h1 = h1 + np.sum(chunk * (np.uint32(2) * index + np.uint32(1)), dtype=np.uint32)
      mixed = chunk ^ (index * _GOLDEN)
      mixed ^= mixed >> np.uint32(16)
      mixed *= np.uint32(0x85EBCA6B)
      mixed ^= mixed >> np.uint32(13)
      mixed *= np.uint32(0xC2B2AE35)
      mixed ^= mixed >> np.uint32(16)
      h2 = h2 + np.sum(mixed, dtype=np.uint32)
  return np.array([h1, h2], np.uint32)


@functools.cache
def _replicated_fingerprint(mesh):
  """``array_fingerprint`` for arrays on ``mesh``, with its two sums replicated on every
  device, so every process can read them."""
  return jax.jit(
    array_fingerprint, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )


def _leaf_fingerprint(leaf) -> np.ndarray:
  """On the host for NumPy arrays and arrays this process holds whole in host memory; on
  device otherwise (no copy of an accelerator's arrays to the host)."""
  if not isinstance(leaf, jax.Array):
    return host_fingerprint(leaf)
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  on_cpu = all(device.platform == "cpu" for device in leaf.sharding.device_set)
  if on_cpu and leaf.is_fully_addressable:
    return host_fingerprint(leaf)
  if on_cpu and leaf.is_fully_replicated:  # every process holds all of it
    return host_fingerprint(leaf.addressable_data(0))
  if isinstance(leaf.sharding, jax.sharding.NamedSharding):
    sums = _replicated_fingerprint(leaf.sharding.mesh)(leaf)
  else:
    sums = _device_fingerprint(leaf)
  return np.asarray(sums.addressable_data(0))


def path_name(path: Sequence[Any]) -> str:
  """A tree path as ``params/conv1/kernel``, the same for a live tree and for Orbax's
  metadata of it (which stores named tuples as dicts and tuples as lists)."""
  parts = []
  for entry in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(entry, attribute):
        parts.append(str(getattr(entry, attribute)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


def fingerprints(tree: Any) -> dict[str, list[int]]:
  """``{path: [h1, h2]}`` for every array leaf of ``tree`` (see ``array_fingerprint``).

  Every process of a multi-process job must call it (an array sharded over processes is
  summed by a jitted computation they all take part in); each gets the same result.
  """
  return {
    path_name(path): [int(h) for h in _leaf_fingerprint(leaf)]
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def mismatched(expected: dict[str, list[int]], actual: dict[str, list[int]]) -> list[str]:
  """The paths whose fingerprints differ, or that only one side has."""
  return sorted(
    path for path in set(expected) | set(actual) if expected.get(path) != actual.get(path)
  )


def digest(fingerprint_map: dict[str, Any]) -> str:
  """A short hex digest of a ``fingerprints`` result (or any JSON value): one string that
  names a set of arrays, for comparing two of them at a glance."""
  return hashlib.sha256(json.dumps(fingerprint_map, sort_keys=True).encode()).hexdigest()[:16]


def json_checksum(value: dict, exclude: str) -> str:
  """SHA-256 of ``value`` as canonical JSON, leaving out the key ``exclude`` (where the
  checksum itself is stored)."""
  body = {key: item for key, item in value.items() if key != exclude}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
