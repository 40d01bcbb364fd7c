"""kd_jax: knowledge distillation with data augmentation in JAX/Flax.

The pure functions live in small modules that import only JAX (``kd_jax.losses``,
``kd_jax.augment``, ...); import them directly. Training machinery lives in
``kd_jax.train``, models in ``kd_jax.models`` and data loading in ``kd_jax.data``.
Nothing here imports torch or tensorflow; the TFDS loaders import them lazily.
"""

__version__ = "0.1.0"
