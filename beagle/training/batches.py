"""What the loop needs to know about a batch and a step's output, with the errors that
explain a batch or a step function the loop cannot use."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def batch_size(batch: Any) -> int:
    """The leading dimension of the batch's first leaf that has one (in pytree order:
    sorted dict keys), so a scalar leaf (an index, a flag) is passed over."""
    if type(batch) is dict and batch:
        shape = getattr(batch[min(batch)], "shape", None)  # the common case, quickly
        if shape:
            return int(shape[0])
    for leaf in jax.tree_util.tree_leaves(batch):
        shape = np.shape(leaf)
        if shape:
            return int(shape[0])
    raise ValueError(
        "cannot tell the batch size: no leaf of the batch has a leading (batch) axis; the "
        "loop weighs each batch by the leading dimension of its first array with one, so a "
        f"batch must hold at least one array of shape (batch, ...); got {describe(batch)}"
    )


def describe(tree: Any) -> str:
    """The shapes of `tree`'s leaves, cut to 200 characters."""
    shapes = jax.tree.map(lambda leaf: tuple(np.shape(leaf)), tree)
    text = repr(shapes)
    return text if len(text) <= 200 else text[:197] + "..."


@jax.jit
def _stack_on_device(parts: list[Any]) -> Any:
    """One dispatch for the whole call (`jnp.stack` outside a jit dispatches once per
    leaf and batch): compiled once per `steps_per_call` and batch structure."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *parts)


def stack_batches(parts: list[Any], first_step: int) -> Any:
    """The `steps_per_call` batches of one call, stacked on a new leading axis: on the host
    when every leaf is a NumPy array (the step's call transfers the stack), else on the
    device in one jitted call."""
    try:
        leaves = jax.tree_util.tree_leaves(parts)
        if all(isinstance(leaf, np.ndarray) for leaf in leaves):
            return jax.tree.map(lambda *same: np.stack(same), *parts)
        return _stack_on_device(parts)
    except (ValueError, TypeError) as exc:
        k = len(parts)
        shapes = "; ".join(f"step {first_step + i}: {describe(p)}" for i, p in enumerate(parts))
        raise ValueError(
            f"steps_per_call={k} stacks {k} batches into one call, so they must have "
            f"equal shapes and structure, but they differ ({shapes}). Give every batch the "
            "same shape (drop the short last batch, e.g. drop_remainder=True), or use "
            f"steps_per_call=1 ({exc})"
        ) from exc


def bad_step_output(source: str, output: Any) -> TypeError:
    """The error for a step function that did not return `(state, metrics)`."""
    text = repr(output)
    return TypeError(
        f"{source} must return (state, dict of metrics), e.g. `return new_state, "
        f"{{'loss': loss}}`; it returned a {type(output).__name__}"
        + (f" of length {len(output)}" if isinstance(output, tuple) else "")
        + f": {text if len(text) <= 120 else text[:117] + '...'}"
    )


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether a data function takes the keyword `name` (a parameter of that name)."""
    try:
        parameter = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY


def takes_epoch(fn: Callable[..., Any]) -> bool:
    """Whether a data function takes the (0-based) `epoch` keyword."""
    return takes_keyword(fn, "epoch")


def takes_start(fn: Callable[..., Any]) -> bool:
    """Whether a data function takes the `start` keyword: the index of the first batch
    of the epoch to yield, so that a resumed run seeks instead of replaying batches."""
    return takes_keyword(fn, "start")
