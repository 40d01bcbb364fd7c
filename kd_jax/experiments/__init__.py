"""Runnable entry points and configs (thin ``main``s over ``kd_jax``)."""
