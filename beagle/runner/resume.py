"""Resume, restart and refusal: what a run does with the checkpoints it finds.

- No checkpoint: start fresh.
- `--restart`: start fresh; once wiring and the trace have succeeded, `run_spec` moves
  the checkpoint directory and the run's files to `.previous` (`artifacts.keep_previous`).
- A checkpoint written by a different generated module: refuse (`RunRefused`, exit 2),
  naming the spec keys that changed (from the spec text recorded in the checkpoint).
- A finished checkpoint whose run needs no more epochs: already complete.
- Otherwise: continue from the latest complete checkpoint, and say so.
- Several processes: each decides from the same shared folder, and `agree_on_plan`
  refuses unless all of them chose the same checkpoint.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beagle.runner.result import RunRefused

if TYPE_CHECKING:
    from beagle.runner.distributed import Team
    from beagle.training import CheckpointInfo

__all__ = [
    "ResumePlan",
    "agree_on_plan",
    "changed_keys",
    "describe_change",
    "plan_resume",
]

# Checkpoint metadata keys this package records (beagle.training stores them as given).
SPEC_HASH = "spec_hash"
MODULE_HASH = "module_hash"
BEAGLE_VERSION = "beagle_version"
SPEC_TEXT = "spec_text"


@dataclass(frozen=True)
class ResumePlan:
    """What this invocation does about existing checkpoints."""

    checkpoint: Path | None  # the checkpoint to continue from (None: start fresh)
    info: CheckpointInfo | None  # what the checkpoint's record says
    complete: bool  # the run already did all it was asked to: nothing to train

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None and not self.complete


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _parse(text: str) -> dict[str, Any]:
    """The spec's values by dotted key, parsed as beagle parses them (YAML 1.2: `2e-3` is a
    number)."""
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return {}
    return _flatten(data) if isinstance(data, Mapping) else {}


def changed_keys(old_text: str, new_text: str) -> list[str]:
    """`path: old -> new` for every dotted key whose value differs between two specs."""
    old, new = _parse(old_text), _parse(new_text)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"{key}: {old[key]!r} -> (removed)")
        elif key not in old:
            lines.append(f"{key}: (absent) -> {new[key]!r}")
        elif old[key] != new[key]:
            lines.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return lines


def describe_change(
    *,
    checkpoint: Path,
    metadata: Mapping[str, str],
    spec_text: str,
    module_text: str,
    old_module: Path | None,
    version: str,
) -> str:
    """The message of a refused resume: what changed, and the two ways forward."""
    lines = [
        f"cannot resume from {checkpoint}: the generated module differs from the one that "
        "wrote it, so its parameters and optimizer state may not fit"
    ]
    old_spec = metadata.get(SPEC_TEXT)
    changes = changed_keys(old_spec, spec_text) if old_spec is not None else []
    changes = [change for change in changes if not _outside_module(change)]
    if changes:
        lines.append("the spec changed at:")
        lines.extend(f"  {change}" for change in changes[:20])
        if len(changes) > 20:
            lines.append(f"  ... and {len(changes) - 20} more")
    else:
        old_version = metadata.get(BEAGLE_VERSION)
        if old_spec is not None:
            lines.append("the spec is the same; the compiler now generates different code")
        if old_version and old_version != version:
            lines.append(f"the checkpoint was written by beagle {old_version}, this is {version}")
        if old_module is not None and old_module.is_file():
            diff = list(
                difflib.unified_diff(
                    old_module.read_text(encoding="utf-8").splitlines(),
                    module_text.splitlines(),
                    "module that wrote the checkpoint",
                    "module now",
                    n=0,
                    lineterm="",
                )
            )
            if diff:
                lines.append("the module changed:")
                lines.extend(f"  {line}" for line in diff[:30])
    lines.append(
        "undo the change to continue; or re-run with --restart to start over (the previous "
        "checkpoints and run files move to .previous); or start over from these weights "
        f"with a fresh optimizer: --restart --set init.from={checkpoint.parent}"
    )
    return "\n".join(lines)


OUTSIDE_MODULE = (
    "train.epochs",
    "train.batches_per_epoch",
    "validation",
    "early_stopping",
    "checkpoint",
    "log",
    "parallel",
    "init",
)
"""Spec keys that never reach the generated module (a test compiles each to check): a
change there does not block a resume, so a refusal does not list it."""


def _outside_module(change: str) -> bool:
    key = change.split(":", 1)[0]
    return any(key == prefix or key.startswith(prefix + ".") for prefix in OUTSIDE_MODULE)


def plan_resume(
    checkpoint_dir: Path | None,
    *,
    restart: bool,
    module_hash: str,
    spec_text: str,
    module_text: str,
    old_module: Path | None,
    epochs: int,
    version: str,
) -> ResumePlan:
    """Decide between a fresh start, a resume, a refusal and "already complete"."""
    if checkpoint_dir is None:
        return ResumePlan(None, None, False)
    if restart:  # the caller clears the checkpoints once the spec proves usable
        return ResumePlan(None, None, False)
    from beagle.training import checkpoint_info, latest_checkpoint

    latest = latest_checkpoint(checkpoint_dir)
    if latest is None:
        return ResumePlan(None, None, False)
    info = checkpoint_info(latest)
    metadata: Mapping[str, str] = info.metadata or {}
    recorded = metadata.get(MODULE_HASH)
    if recorded != module_hash:
        if recorded is None:
            raise RunRefused(
                f"cannot resume from {latest}: it was not written by `beagle run` (no module "
                "hash recorded)\nre-run with --restart to start over (the checkpoints there "
                "are replaced), or point checkpoint.dir elsewhere"
            )
        raise RunRefused(
            describe_change(
                checkpoint=latest,
                metadata=metadata,
                spec_text=spec_text,
                module_text=module_text,
                old_module=old_module,
                version=version,
            )
        )
    # A run that early stopping ended would stop again at once: more epochs do not extend it.
    complete = info.finished and (info.epoch >= epochs or info.stopped_early)
    return ResumePlan(latest, info, complete)


def agree_on_plan(plan: ResumePlan, team: Team, checkpoint_dir: Path | None) -> None:
    """With several processes: raise `RunRefused` on every process unless all of them chose
    the same checkpoint (a `checkpoint.dir` that is not one shared folder, or a process
    that sees another run's checkpoints)."""
    if team.count == 1:
        return
    step = -1 if plan.info is None else plan.info.step
    steps = team.gather(step)
    if len(set(steps)) == 1:
        return
    seen = ", ".join(
        f"process {index}: " + ("none" if s < 0 else f"checkpoint_{s}")
        for index, s in enumerate(steps)
    )
    raise RunRefused(
        f"the {team.count} processes see different checkpoints in {checkpoint_dir} ({seen}); "
        "checkpoint.dir must be one folder that every process reaches (a shared filesystem), "
        "written by this run only"
    )
