"""XLA compiler options for beagle's own programs that run once or do trivial arithmetic.

XLA's CPU backend spends most of a small program's compile time optimising and generating
code for it, at its highest level by default. beagle's own programs need little of that:
the metric fold adds up a few hundred scalars, and the model's initialisation runs once.
"""

from __future__ import annotations

CHEAP_COMPILE: dict[str, int | bool] = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}
"""The metric fold's: the least optimisation (its sums are beagle's own, not the model's)."""

RUN_ONCE_COMPILE: dict[str, int | bool] = {"xla_backend_optimization_level": 2}
"""A program that runs once and must compute exactly what the default settings compute
(the model's initialisation: a CNN's compiles in 0.7 s instead of 2.9 s here, with the same
parameters bit for bit, which `tests/test_compile_counts.py` checks; level 0 would change
the rounding of the initialisers)."""
