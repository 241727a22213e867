"""Warm starts for `beagle run`: JAX's persistent compilation cache, and generated modules.

`beagle run` alone turns JAX's cache on, with JAX's size and time thresholds at 0 so that
every program is kept (with the defaults a small model's programs compile too fast to be
kept), in `$BEAGLE_CACHE_DIR`, else `$XDG_CACHE_HOME/beagle/jax`, else
`~/.cache/beagle/jax`. `BEAGLE_CACHE_DIR=off` leaves it off. Importing beagle sets
nothing process-wide.

Beside that folder (its name plus `-modules`), `generated_module` keeps the text `beagle
run` generated for a spec, keyed by the validated spec, the spec's file name and the bytes
of beagle's own sources and templates (and black's version): a repeated run reads it
instead of rendering and formatting it again, so it imports neither jinja2 nor black.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beagle.spec.models import Spec

ENVIRONMENT = "BEAGLE_CACHE_DIR"

_enabled: Path | None = None  # the folder `enable_compile_cache` turned on, if it did


def cache_dir() -> Path | None:
    """Where compiled programs are kept (None: the cache is off)."""
    chosen = os.environ.get(ENVIRONMENT)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "false") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "beagle" / "jax"


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in `cache_dir()`; the folder, or None."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache folder costs speed, never the run
    import jax

    global _enabled
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _enabled = folder
    return folder


def _module_key(spec: Spec, source_name: str) -> str:
    """What the generated text depends on: the spec, its file name, the compiler (all of
    beagle's sources and templates, read as bytes) and black's version."""
    from importlib.metadata import version

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in (spec.model_dump_json(), source_name, version("black")):
        digest.update(part.encode())
        digest.update(b"\0")
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".jinja") and path.is_file():
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def generated_module(spec: Spec, source_name: str) -> str:
    """`compile_spec(spec, source_name)`, from the module cache when `beagle run` turned
    the caches on (`enable_compile_cache`) and it holds the text."""
    folder = _enabled
    path = None
    if folder is not None:
        path = folder.with_name(folder.name + "-modules") / f"{_module_key(spec, source_name)}.py"
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass  # not there yet (or unreadable): generate it
    from beagle.compiler import compile_spec

    text = compile_spec(spec, source_name)
    if path is not None:
        _store(path, text)
    return text


def _store(path: Path, text: str) -> None:
    """Write `path` whole or not at all (runs in parallel may write it at once)."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError:  # an unwritable cache costs speed, never the run
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
