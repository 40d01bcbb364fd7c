"""Training machinery: state, optimiser, sharding, objectives, steps, checkpoints, loop.

Import the submodule you need (``kd_jax.train.steps``, ``kd_jax.train.loop``, ...); this
package deliberately re-exports nothing.
"""
