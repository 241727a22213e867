"""The spec front end: load a YAML spec with source positions, apply `--set` overrides,
validate it, and report every problem at once with the file, line and column to change.

    from beagle.spec import SpecError, load_spec

    try:
        loaded = load_spec("specs/digits_cnn.yaml", ["train.epochs=3"])
    except SpecError as error:
        print(error)  # one `FILE:LINE:COL: path: message` (+ `  hint: ...`) per problem

Importing this package imports neither jax, flax, optax, orbax, black nor jinja2.
"""

from beagle.spec.front_end import LoadedSpec, load_spec
from beagle.spec.models import Spec
from beagle.spec.problems import Problem, SpecError, format_problems
from beagle.spec.schema import spec_json_schema

__all__ = [
    "LoadedSpec",
    "Problem",
    "Spec",
    "SpecError",
    "format_problems",
    "load_spec",
    "spec_json_schema",
]
