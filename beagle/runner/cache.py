"""JAX's persistent compilation cache for `beagle run` (warm starts).

`beagle run` alone turns it on, with JAX's size and time thresholds at 0 so that every
program is kept (with the defaults a small model's programs compile too fast to be kept),
in `$BEAGLE_CACHE_DIR`, else `$XDG_CACHE_HOME/beagle/jax`, else `~/.cache/beagle/jax`.
`BEAGLE_CACHE_DIR=off` leaves it off. Importing beagle sets nothing process-wide.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT = "BEAGLE_CACHE_DIR"


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

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
