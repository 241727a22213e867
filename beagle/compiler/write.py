"""Writing: a generated module lands in `<out_dir>/<name>.py` only when its text changed.

Unchanged files keep their modification time (build tools and editors see nothing new);
a changed file is replaced atomically, so a reader never sees half a module.
`diff_module` is the `--check` side: what would change, as a unified diff.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

__all__ = ["diff_module", "module_path", "write_module"]


def module_path(out_dir: str | Path, name: str) -> Path:
    """Where the module of the spec called `name` lives."""
    return Path(out_dir) / f"{name}.py"


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None


def write_module(text: str, out_dir: str | Path, name: str) -> bool:
    """Write `text` to `out_dir/<name>.py` unless it already holds exactly that.

    Returns True when the file was written (created or changed).
    """
    path = module_path(out_dir, name)
    if _read(path) == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))  # bytes: no newline translation anywhere
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def diff_module(text: str, out_dir: str | Path, name: str) -> str | None:
    """A unified diff from `out_dir/<name>.py` to `text`; None when they are identical.

    A missing file diffs against nothing (every line added).
    """
    path = module_path(out_dir, name)
    current = _read(path)
    if current == text:
        return None
    lines = difflib.unified_diff(
        (current or "").splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=f"{path}" if current is not None else "/dev/null",
        tofile=f"{path} (as the spec now generates it)",
    )
    no_newline = "\n\\ No newline at end of file\n"
    return "".join(line if line.endswith("\n") else line + no_newline for line in lines)
