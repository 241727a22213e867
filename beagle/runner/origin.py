"""Whose code raised: the user's (their model, loss, metric or data function, or the module
compiled from their spec), or beagle's own.

Only the user's code, or a non-finite loss, fails training; an exception that never
passed through the user's code is a bug in beagle (or a broken install, such as missing
templates), and the CLI says so instead of "training failed".

A frame belongs to the user unless its module is beagle's, a library beagle runs on, or
the standard library. The module compiled from the spec counts as the user's: it is their
spec's code, and it calls their functions.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["raised_in_user_code"]

# The top-level packages of beagle and of the libraries it calls into, whose frames sit
# between beagle and the user's code. A frame in any of them is not the user's.
_NOT_USER = frozenset(
    {
        "beagle",
        "absl",
        "black",
        "chex",
        "click",
        "etils",
        "flax",
        "jax",
        "jaxlib",
        "jinja2",
        "matplotlib",
        "ml_dtypes",
        "numpy",
        "optax",
        "orbax",
        "pydantic",
        "pydantic_core",
        "rich",
        "ruamel",
        "sklearn",
        "tensorboardX",
        "tensorstore",
        "typer",
        "yaml",
    }
)


def _is_user_frame(module_name: object) -> bool:
    if not isinstance(module_name, str) or not module_name:
        return True  # code exec'd without a module name is not beagle's
    top = module_name.split(".", 1)[0]
    return top not in _NOT_USER and top not in sys.stdlib_module_names and top != "__main__"


def _frames(error: BaseException) -> list[str]:
    names: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:  # the error and what it was raised from or during
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        trace: TracebackType | None = current.__traceback__
        if current is error and trace is not None:
            trace = trace.tb_next  # the frame that caught it handles it: it raised nothing
        while trace is not None:
            names.append(trace.tb_frame.f_globals.get("__name__", ""))
            trace = trace.tb_next
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return names


def raised_in_user_code(error: BaseException) -> bool:
    """True when `error`, as its handler caught it, was raised in or passed through the
    user's own code (the handler's own frame does not count)."""
    return any(_is_user_frame(name) for name in _frames(error))
