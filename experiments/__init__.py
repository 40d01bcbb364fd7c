"""The experiment scripts' old name, for a clone: ``python -m experiments.<script>`` run from
the repository's root runs ``kd_jax.experiments.<script>``.

The scripts and configs live in kd_jax/experiments/ and install with the library as
``kd_jax.experiments`` (no top-level ``experiments`` package is installed, so nothing
collides with other projects' modules of that name). This folder is not installed; it
only lets the command lines written before the move keep working from the root.
"""

import os

__path__ = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kd_jax",
                         "experiments")]
