"""Rendering: a `ModuleIR` through the Jinja templates that ship inside the package.

The templates live in `beagle/templates/` (the repository's top-level `templates/` links
there), so an installed wheel renders exactly what an editable checkout does.

The environment is strict (`StrictUndefined`: a misspelt IR field fails loudly) and keeps
the templates' layout predictable (`trim_blocks`, `lstrip_blocks`,
`keep_trailing_newline`). It is built on first use, so importing this module is cheap.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from beagle.compiler.ir import ModuleIR

if TYPE_CHECKING:
    import jinja2

__all__ = ["render_module"]

MODULE_TEMPLATE = "module.py.jinja"
NNX_MODULE_TEMPLATE = "nnx_module.py.jinja"  # extends MODULE_TEMPLATE (model.kind: nnx)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("beagle", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Python source, not HTML: values are already valid Python
    )


def render_module(ir: ModuleIR) -> str:
    """The module's source text, before formatting."""
    template = MODULE_TEMPLATE if ir.model.nnx is None else NNX_MODULE_TEMPLATE
    return _environment().get_template(template).render(ir=ir)
