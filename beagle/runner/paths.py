"""Where a spec's run folder and checkpoint directory are (`log.dir`, `checkpoint.dir`)."""

from __future__ import annotations

from pathlib import Path

from beagle.spec import LoadedSpec


def log_dir(loaded: LoadedSpec) -> Path:
    """`log.dir`, or `runs/<name>`."""
    log = loaded.spec.log
    return Path(log.dir) if log is not None and log.dir else Path("runs") / loaded.spec.name


def checkpoint_dir(loaded: LoadedSpec, log_dir: Path) -> Path | None:
    """`checkpoint.dir`, or `<log.dir>/checkpoints`; None without a `checkpoint:` section."""
    checkpoint = loaded.spec.checkpoint
    if checkpoint is None:
        return None
    return Path(checkpoint.dir) if checkpoint.dir else log_dir / "checkpoints"
