"""Rendering: a `ModuleIR` through the Jinja templates in the repository's `templates/`.

The environment is strict (`StrictUndefined`: a misspelt IR field fails loudly) and keeps
the templates' layout predictable (`trim_blocks`, `lstrip_blocks`,
`keep_trailing_newline`). It is built on first use, so importing this module is cheap.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from beagle.compiler.ir import ModuleIR

if TYPE_CHECKING:
    import jinja2

__all__ = ["TEMPLATES_DIR", "render_module"]

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
MODULE_TEMPLATE = "module.py.jinja"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Python source, not HTML: values are already valid Python
    )


def render_module(ir: ModuleIR) -> str:
    """The module's source text, before formatting."""
    return _environment().get_template(MODULE_TEMPLATE).render(ir=ir)
