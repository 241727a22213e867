"""`init: {from, checkpoint, exclude}`: start a new run from another run's variables.

The new run takes the params and BatchNorm statistics of a checkpoint (a run folder, a
checkpoint directory or a checkpoint), keeps its own initialisation for the `exclude`d
variable paths, and starts its optimizer afresh: fine-tuning, continuing with another
learning rate, or a new head. A variable the checkpoint lacks, one it has that the new
model does not, or one of another shape is a spec error naming its path (exclude it to
keep the new model's own). It applies only to a run without a checkpoint of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from beagle.runner.inference import RunNotUsable, resolve_checkpoint
from beagle.spec import LoadedSpec, SpecError
from beagle.training.checkpoint import VARIABLES, checkpoints


def source_checkpoint(loaded: LoadedSpec) -> Path:
    """The checkpoint `init` names, or a `SpecError` at `init.from`/`init.checkpoint`."""
    init = loaded.spec.init
    assert init is not None
    path = Path(init.from_)
    where: tuple[str, ...] = ("init", "from")
    if (path / "run.json").is_file():
        recorded = json.loads((path / "run.json").read_text())["checkpoint_dir"]
        if recorded is None:
            raise SpecError([loaded.problem(where, f"the run in {path} saved no checkpoints")])
        path = Path(recorded)
    elif path.name.startswith("checkpoint_") and path.name[11:] in map(
        str, checkpoints(path.parent).steps
    ):
        return path
    if not path.is_dir() or not checkpoints(path).steps:
        raise SpecError(
            [
                loaded.problem(
                    where,
                    f"{init.from_} holds no checkpoint",
                    "give a run folder, a checkpoint directory or a checkpoint_<step> folder",
                )
            ]
        )
    try:
        return resolve_checkpoint(path, str(init.checkpoint), keeps_best=True)
    except RunNotUsable as error:
        raise SpecError([loaded.problem(("init", "checkpoint"), str(error))]) from None


def _paths(tree: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """`{"params/dense_0/kernel": shape}` for every leaf of `tree`'s variables."""
    import jax

    found = {}
    for key in VARIABLES:
        if key not in tree:
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree[key])[0]:
            names = [str(getattr(part, "key", getattr(part, "name", part))) for part in path]
            found["/".join([key, *names])] = tuple(leaf.shape)
    return found


def _excluded(path: str, exclude: list[str]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in exclude)


@contextmanager
def _quiet_item_metadata() -> Iterator[None]:
    """orbax warns that a checkpoint item has no step metadata of its own: expected."""
    logger = logging.getLogger("absl")

    def keep(record: logging.LogRecord) -> bool:
        return "Metadata file does not exist" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def warm_start(loaded: LoadedSpec, state: Any) -> tuple[Any, Path]:
    """`state` with the variables of the checkpoint `init` names (its optimizer state
    untouched: fresh); `SpecError` for variables that do not fit."""
    import jax
    import orbax.checkpoint as ocp

    from beagle.training.checkpoint import load_variables

    init = loaded.spec.init
    assert init is not None
    source = source_checkpoint(loaded)
    with _quiet_item_metadata():
        saved_tree = ocp.StandardCheckpointer().metadata((source / "state").absolute())
    saved = _paths(dict(saved_tree.item_metadata))
    variables = {"params": state.params}
    if getattr(state, "batch_stats", None) is not None:
        variables["batch_stats"] = state.batch_stats
    wanted = _paths(variables)
    problems = []
    for path in sorted(set(wanted) | set(saved)):
        if _excluded(path, init.exclude):
            continue
        if path not in saved:
            problems.append(f"{path}: the checkpoint has no such variable")
        elif path not in wanted:
            problems.append(f"{path}: the new model has no such variable")
        elif saved[path] != wanted[path]:
            problems.append(f"{path}: shape {saved[path]} in the checkpoint, {wanted[path]} here")
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise SpecError(
            [
                loaded.problem(
                    ("init", "exclude") if init.exclude else ("init", "from"),
                    f"{source} does not fit this model: {shown}",
                    "add the paths that should keep this model's own initialisation to "
                    "init.exclude",
                )
            ]
        )
    kept = {
        key: jax.tree_util.tree_map_with_path(
            lambda path, leaf, key=key: None
            if _excluded("/".join([key, *(str(getattr(p, "key", p)) for p in path)]), init.exclude)
            else leaf,
            tree,
        )
        for key, tree in variables.items()
    }
    restored = load_variables(source, _prune(kept))
    merged = {key: _merge(variables[key], restored.get(key)) for key in variables}
    return state.replace(**merged), source


def _prune(tree: Any) -> Any:
    """`tree` without its None leaves and the dicts they leave empty."""
    if isinstance(tree, Mapping):
        pruned = {key: _prune(value) for key, value in tree.items()}
        return {
            key: value
            for key, value in pruned.items()
            if value is not None and not (isinstance(value, Mapping) and not value)
        }
    return tree


def _merge(own: Any, restored: Any) -> Any:
    """`own` with every leaf `restored` has replaced by it."""
    if restored is None:
        return own
    if isinstance(own, Mapping):
        return {key: _merge(value, restored.get(key)) for key, value in own.items()}
    return restored
