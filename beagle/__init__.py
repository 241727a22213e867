"""beagle: train JAX/Flax models from a declarative YAML spec.

`beagle gen` compiles a spec into a readable module of jitted steps; `beagle run` trains it
through the runtime in `beagle.training`. Importing this package imports neither jax nor
any of its libraries: the CLI's fast commands depend on that.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
