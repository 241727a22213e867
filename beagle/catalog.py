"""beagle's own catalogue of built-in names: losses, metrics, optax optimizers and schedules.

This module imports nothing heavy: `beagle gen` validates names against these tables
without importing optax. `tests/test_catalog.py` checks the tables against the installed
optax, so a rename upstream fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    """A built-in loss or metric: its argument names and which of them are required."""

    name: str
    params: tuple[str, ...]  # every argument name, in call order
    required: tuple[str, ...]  # the arguments a spec must give


LOSSES: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("mse", ("predictions", "targets"), ("predictions", "targets")),
        Builtin("mae", ("predictions", "targets"), ("predictions", "targets")),
        Builtin("huber", ("predictions", "targets", "delta"), ("predictions", "targets")),
        Builtin("softmax_cross_entropy", ("logits", "labels"), ("logits", "labels")),
        Builtin("softmax_cross_entropy_onehot", ("logits", "labels"), ("logits", "labels")),
        Builtin("sigmoid_binary_cross_entropy", ("logits", "labels"), ("logits", "labels")),
        Builtin("gaussian_kl", ("mean", "logvar"), ("mean", "logvar")),
        Builtin("l2", ("tree",), ("tree",)),
    )
}

METRICS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("accuracy", ("logits", "labels"), ("logits", "labels")),
        Builtin("top_k_accuracy", ("logits", "labels", "k"), ("logits", "labels", "k")),
        Builtin("mse", ("predictions", "targets"), ("predictions", "targets")),
        Builtin("mae", ("predictions", "targets"), ("predictions", "targets")),
    )
}

# optax functions that take `learning_rate` and return a GradientTransformation.
OPTIMIZERS: frozenset[str] = frozenset(
    {
        "adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw",
        "adamw", "adan", "amsgrad", "fromage", "lamb", "lars", "lion", "noisy_sgd",
        "novograd", "optimistic_adam", "optimistic_adam_v2", "optimistic_gradient_descent",
        "radam", "rmsprop", "rprop", "sgd", "sign_sgd", "signum", "sm3", "yogi",
    }
)  # fmt: skip

# optax schedule functions that take only numbers (not other schedules).
SCHEDULES: frozenset[str] = frozenset(
    {
        "constant_schedule", "cosine_decay_schedule", "cosine_onecycle_schedule",
        "exponential_decay", "linear_onecycle_schedule", "linear_schedule",
        "piecewise_constant_schedule", "piecewise_interpolate_schedule",
        "polynomial_schedule", "sgdr_schedule", "warmup_constant_schedule",
        "warmup_cosine_decay_schedule", "warmup_exponential_decay_schedule",
    }
)  # fmt: skip

# Names the generated module uses itself; spec names never become Python names there.
RESERVED_METRIC_NAMES: frozenset[str] = frozenset({"loss", "skipped_steps"})
