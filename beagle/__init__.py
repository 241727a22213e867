"""beagle: train JAX/Flax models from a declarative YAML spec.

`beagle gen` compiles a spec into a readable module of jitted steps; `beagle run` trains it
through the runtime in `beagle.training`. Importing this package imports neither jax nor
any of its libraries: the CLI's fast commands depend on that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]

if TYPE_CHECKING:
    from beagle.runner.inference import load_run


def __getattr__(name: str) -> Any:
    # `beagle.load_run` imports the runtime (and jax) only when first used.
    if name == "load_run":
        from beagle.runner.inference import load_run

        return load_run
    raise AttributeError(f"module 'beagle' has no attribute {name!r}")
