"""Sphinx configuration of kd_jax's documentation site (Sphinx + MyST + autodoc/autosummary).

Build (warnings are errors), then run every example (the ``{testcode}`` blocks of the pages
and the ``>>>`` examples of the docstrings)::

  sphinx-build -W --keep-going -b html docs docs/_build/html
  sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

tests/test_docs.py runs both in a subprocess.
"""

import os
import sys

# Two host CPU devices, so the jax.pmap and shard_map examples of "Using kd_jax in your own
# code" run on a CPU; set before anything imports JAX (autodoc imports kd_jax later). The
# examples check behaviour, not speed, so XLA compiles them without LLVM's optimisation
# passes, which halves the doctest build's time (most of it is compiling small steps).
for _flag in ("--xla_force_host_platform_device_count=2", "--xla_backend_optimization_level=0"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

DOCS = os.path.abspath(os.path.dirname(__file__))
ROOT = os.path.dirname(DOCS)
sys.path[:0] = [ROOT, DOCS]

import public_api  # noqa: E402 (docs/public_api.py: which names the API pages document)

project = "kd_jax"
author = "kd_jax authors"
copyright = "kd_jax authors"
release = version = "0.1.0"

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.doctest",
  "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
templates_path = ["_templates"]
# DESIGN.md and METHODS.md are pages of their own in the repository (code comments cite them
# by these names) and are included into design.md, not built twice.
exclude_patterns = ["_build", "DESIGN.md", "METHODS.md"]

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "kd_jax"
html_static_path = []

# API reference: one page per module, every public name on it (the module's __all__, or what
# the module defines: docs/public_api.py); autosummary writes the pages into _autosummary/
# at build time from docs/_templates/autosummary/module.rst.
autosummary_generate = True
autosummary_context = {"autodata_names": public_api.AutodataNames()}
autosummary_imported_members = False
autodoc_default_options = {
  "members": True,
  "undoc-members": True,
  "show-inheritance": True,
  "member-order": "bysource",
}
autodoc_typehints = "description"
# A package documents the names its __all__ re-exports (kd_jax.data.EpochSampler) beside the
# module that defines them, so a type hint that names the class alone (a string annotation)
# has two targets; either page is right, so that ambiguity is not an error.
suppress_warnings = ["ref.python"]
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Examples: the pages' {testcode} blocks and the docstrings' >>> examples run under
# `sphinx-build -b doctest`; each API page imports its module's names for its docstrings.
doctest_global_setup = """
import jax
import jax.numpy as jnp
import numpy as np
"""


def _no_borrowed_docstrings(app, what, name, obj, options, lines):
  """A constant has no docstring of its own: autodoc would show its type's (dict's, a
  jax initializer's) instead. Keep only the ``#:`` comments written for it."""
  del app, obj, options
  if what == "data" and not public_api.is_attribute_documented(name):
    lines[:] = []


def setup(app):
  app.connect("autodoc-process-docstring", _no_borrowed_docstrings)
