"""Training machinery: state, optimiser, sharding, the one step, the one loop, checkpoints.

Import the submodule you need (``kd_jax.train.step``, ``kd_jax.train.loop``, ...); this
package deliberately re-exports nothing.
"""
