"""Which names of a kd_jax module are public, for the API reference and its test.

A module's public names are its ``__all__`` when it has one, else the names not starting
with ``_`` that its source defines at the top level (functions, classes, assignments).
autodoc's ``automodule`` documents the functions and classes among them; module-level data
(constants, type aliases, loggers) it documents only when a ``#:`` comment or a docstring
follows it, so the API pages add the rest with ``autodata`` (docs/_templates/autosummary/
module.rst calls ``autodata_names``). tests/test_docs.py checks that every public name ends
up in the built reference and that every public function and class has a docstring.
"""

from __future__ import annotations

import ast
import importlib
import inspect

# A value longer than this is left out of its autodata entry (a policy table, say).
MAX_VALUE_CHARS = 120


def public_names(module) -> list[str]:
  """The module's ``__all__``, or else the public names its source defines at the top level."""
  if hasattr(module, "__all__"):
    return list(module.__all__)
  names = []
  for node in ast.parse(inspect.getsource(module)).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.append(node.name)
    elif isinstance(node, ast.Assign):
      names += [target.id for target in node.targets if isinstance(target, ast.Name)]
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      names.append(node.target.id)
  return [name for name in dict.fromkeys(names) if not name.startswith("_")]


def _documented_by_automodule(module, name: str, attribute_docs) -> bool:
  obj = getattr(module, name)
  if ("", name) in attribute_docs:  # a #: comment or a docstring after the assignment
    return True
  if not (inspect.isfunction(obj) or inspect.isclass(obj)):
    return False
  # With __all__ autodoc documents every listed function and class; without it, only those
  # the module itself defines (not those it imports or assigns from elsewhere).
  return hasattr(module, "__all__") or getattr(obj, "__module__", None) == module.__name__


def autodata_names(module_name: str) -> list[tuple[str, bool]]:
  """``(name, show_value)`` for the public names ``automodule`` leaves out."""
  from sphinx.pycode import ModuleAnalyzer

  module = importlib.import_module(module_name)
  try:
    attribute_docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
  except Exception:  # no source (never for kd_jax): nothing is documented by comments
    attribute_docs = {}
  names = []
  for name in public_names(module):
    obj = getattr(module, name)
    if inspect.ismodule(obj) or _documented_by_automodule(module, name, attribute_docs):
      continue
    names.append((name, len(repr(obj)) <= MAX_VALUE_CHARS))
  return names


class AutodataNames:
  """``autodata_names`` as a value of Sphinx's config (``autosummary_context``): picklable
  with the environment and equal across builds, so the html and doctest builds share it."""

  def __call__(self, module_name: str) -> list[tuple[str, bool]]:
    return autodata_names(module_name)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, AutodataNames)

  def __hash__(self) -> int:
    return hash(AutodataNames)

  def __repr__(self) -> str:  # Sphinx compares config values by their text
    return "AutodataNames()"


def is_attribute_documented(fullname: str) -> bool:
  """Whether the module-level name ``fullname`` has a ``#:`` comment or a docstring."""
  from sphinx.pycode import ModuleAnalyzer

  module_name, _, name = fullname.rpartition(".")
  try:
    return ("", name) in ModuleAnalyzer.for_module(module_name).find_attr_docs()
  except Exception:
    return False
