"""Counting device-to-host reads of jax Arrays, by every route Python code can take.

`jax.transfer_guard_device_to_host("disallow")` does not fire on the CPU backend, so the
tests count reads instead. The routes in jax 0.10.2 (checked by `tests/test_host_reads.py`):

- `float`, `int`, `bool`, `complex`, `operator.index`, `format` (f-strings), `repr`,
  `str` and `tolist` read the property `ArrayImpl._value`;
- `jax.device_get` calls `ArrayImpl.__array__` (which reads `_value`);
- `np.asarray`, `np.array` and `x.item()` (which calls `np.asarray`) take the C buffer
  protocol, which no Python attribute of the array sees: the numpy functions that convert
  are wrapped too, for a jax Array argument (or a list or tuple holding one).

A read that goes through several of these (`item` -> `np.asarray`, `device_get` ->
`__array__` -> `_value`) counts once: only the outermost route, per thread, is counted.
What is not seen: numpy's C functions other than the wrapped ones (`np.stack` of jax
Arrays, `np.float32(x)`), and `from numpy import asarray` bound before the counting began.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jax._src.array import ArrayImpl

__all__ = ["HostReads", "counting_host_reads"]

_ARRAY_METHODS = ("__array__", "item", "tolist")
_NUMPY_FUNCTIONS = ("asarray", "array", "asanyarray", "ascontiguousarray")


@dataclass
class HostReads:
    """The reads seen so far: one route name per read, in order."""

    routes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def count(self) -> int:
        return len(self.routes)

    def add(self, route: str) -> None:
        with self._lock:
            self.routes.append(route)


def _holds_jax_array(value: object) -> bool:
    if isinstance(value, ArrayImpl):
        return True
    return isinstance(value, list | tuple) and any(isinstance(v, ArrayImpl) for v in value)


@contextlib.contextmanager
def counting_host_reads() -> Iterator[HostReads]:
    """Count every read of a jax Array's value on the host while the block runs."""
    reads = HostReads()
    depth = threading.local()

    def counted(route: str, call: Callable[[], Any]) -> Any:
        level = getattr(depth, "level", 0)
        if level == 0:
            reads.add(route)
        depth.level = level + 1
        try:
            return call()
        finally:
            depth.level = level

    value_property = ArrayImpl.__dict__["_value"]
    originals: dict[str, Any] = {name: ArrayImpl.__dict__[name] for name in _ARRAY_METHODS}
    numpy_originals: dict[str, Any] = {name: getattr(np, name) for name in _NUMPY_FUNCTIONS}

    def value(self: ArrayImpl) -> Any:
        return counted("_value", lambda: value_property.fget(self))

    def method(name: str) -> Callable[..., Any]:
        original = originals[name]

        def wrapper(self: ArrayImpl, *args: Any, **kwargs: Any) -> Any:
            return counted(name, lambda: original(self, *args, **kwargs))

        return wrapper

    def numpy_function(name: str) -> Callable[..., Any]:
        original = numpy_originals[name]

        def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
            if _holds_jax_array(value):
                return counted(f"np.{name}", lambda: original(value, *args, **kwargs))
            return original(value, *args, **kwargs)

        return wrapper

    ArrayImpl._value = property(value)  # type: ignore[method-assign,assignment]
    for name in _ARRAY_METHODS:
        setattr(ArrayImpl, name, method(name))
    for name in _NUMPY_FUNCTIONS:
        setattr(np, name, numpy_function(name))
    try:
        yield reads
    finally:
        ArrayImpl._value = value_property  # type: ignore[method-assign]
        for name, original in originals.items():
            setattr(ArrayImpl, name, original)
        for name, original in numpy_originals.items():
            setattr(np, name, original)
