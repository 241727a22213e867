"""The spec compiler: `Spec` → IR (`lower`) → text (`render_module`) → black
(`format_module`) → file (`write_module`, or `diff_module` for `--check`).

`compile_spec` runs the first three. Nothing here imports jax, flax, optax or orbax: `beagle
gen` stays fast. Jinja and black are imported on first use.
"""

from __future__ import annotations

from beagle.compiler.format import format_module
from beagle.compiler.ir import ModuleIR
from beagle.compiler.lower import CompileError, lower
from beagle.compiler.render import render_module
from beagle.compiler.write import diff_module, module_path, write_module
from beagle.spec.models import Spec

__all__ = [
    "CompileError",
    "ModuleIR",
    "compile_spec",
    "diff_module",
    "format_module",
    "lower",
    "module_path",
    "render_module",
    "write_module",
]


def compile_spec(spec: Spec, source_name: str) -> str:
    """The generated module's text for `spec`, byte-identical for the same spec.

    `source_name` is the spec's file name without its folder; it appears in the header.
    Raises `CompileError` for a spec that validation should have rejected.
    """
    return format_module(render_module(lower(spec, source_name)))
