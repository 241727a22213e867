"""Formatting: black, with a pinned mode, so the generated text is golden.

The black version is pinned in `pyproject.toml`; a different version may format
differently, which the golden tests would report as a diff.
"""

from __future__ import annotations

__all__ = ["LINE_LENGTH", "format_module"]

LINE_LENGTH = 100  # the project's own line length (ruff's `line-length`)


def format_module(source: str) -> str:
    """`source` formatted by black for Python 3.11 at the project's line length."""
    import black  # imported here: only `gen` and `run` need it

    mode = black.Mode(
        target_versions={black.TargetVersion.PY311},
        line_length=LINE_LENGTH,
        string_normalization=True,
        magic_trailing_comma=True,
        preview=False,
    )
    return black.format_str(source, mode=mode)
