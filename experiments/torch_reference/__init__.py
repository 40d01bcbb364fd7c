"""PyTorch versions of kd_jax's models and steps, for parity tests and benchmarks.

Only this folder imports torch; the library never does. Install with ``pip install -e
'.[torch]'`` (torch 2.13.0, CPU build).
"""
