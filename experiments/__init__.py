"""What only a clone has: the PyTorch twins (``experiments.torch_reference``, kept out of the
installed library, which never imports torch), the benchmarks that time kd_jax against them
(``python -m experiments.bench_vs_torch``, ``experiments.bench_xla_flags``), and the scripts'
old name:
``python -m experiments.<script>`` run from the repository's root runs
``kd_jax.experiments.<script>``.

The scripts and configs live in kd_jax/experiments/ and install with the library as
``kd_jax.experiments`` (no top-level ``experiments`` package is installed, so nothing
collides with other projects' modules of that name). This folder is not installed.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
__path__ = [os.path.join(os.path.dirname(_HERE), "kd_jax", "experiments"), _HERE]
