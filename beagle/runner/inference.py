"""Using what was trained (SPEC-2 section 4): a run folder, its checkpoints, its model.

`beagle run` writes `run.json` into the run folder (`run_record`): the checkpoint
directory as an absolute path, the model's inputs (batch keys, trailing shapes and dtypes
as trained) and output names. `load_run` reads it back with the spec and the module the
run trained with, restores the model's variables (params and BatchNorm statistics, no
optimizer state) from a checkpoint, and predicts in eval mode. `beagle eval`, `predict`
and `export` are built on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from beagle.runner.artifacts import RunFolder
from beagle.spec import LoadedSpec

if TYPE_CHECKING:
    import jax

RUN_RECORD_FORMAT = 1
CAST = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32)}
"""Input dtypes `predict` narrows to the 32-bit ones a model is trained with."""


class RunNotUsable(Exception):
    """No such run folder, checkpoint or split, or inputs that do not fit (exit 2)."""


def input_keys(loaded: LoadedSpec) -> list[str]:
    """The batch keys `model.input` names, in order: the model's positional inputs."""
    from beagle.runner.wiring import model_input_keys

    return model_input_keys(loaded)


def output_names(loaded: LoadedSpec) -> list[str]:
    """The names `model.outputs` gives what the model returns."""
    outputs = loaded.spec.model.outputs
    if isinstance(outputs, str):
        return [outputs]
    return list(outputs) if isinstance(outputs, list) else list(outputs.values())


def name_outputs(loaded: LoadedSpec, model_out: Any) -> dict[str, Any]:
    """The model's return value as `{name: array}`, by `model.outputs`."""
    outputs = loaded.spec.model.outputs
    if isinstance(outputs, str):
        return {outputs: model_out}
    if isinstance(outputs, list):
        return dict(zip(outputs, model_out, strict=True))
    return {name: model_out[key] for key, name in outputs.items()}


def run_record(
    loaded: LoadedSpec, sample: Mapping[str, Any], checkpoint_dir: Path | None
) -> dict[str, Any]:
    """What the run folder records about the model's inputs and outputs (`run.json`)."""
    return {
        "format": RUN_RECORD_FORMAT,
        "name": loaded.spec.name,
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir.absolute()),
        "inputs": [
            {
                "key": key,
                "shape": [int(n) for n in np.shape(sample[key])[1:]],
                "dtype": str(np.dtype(sample[key].dtype)),
            }
            for key in input_keys(loaded)
        ],
        "outputs": output_names(loaded),
        "batch_size": loaded.spec.data.batch_size,
    }


def find_run_folder(path: str | Path) -> Path:
    """The run folder `path` names: a run folder, or a spec file (its `log.dir`)."""
    path = Path(path)
    if path.is_dir():
        folder = path
    elif path.is_file():
        from beagle.runner.paths import log_dir
        from beagle.spec import load_spec

        folder = log_dir(load_spec(path, imports="none"))
    else:
        raise RunNotUsable(f"{path} is neither a run folder nor a spec file")
    if not (folder / "run.json").is_file():
        raise RunNotUsable(
            f"{folder} holds no finished `beagle run` (no run.json); train it first with "
            "`beagle run SPEC`"
        )
    return folder


def resolve_checkpoint(
    checkpoint_dir: Path | None, choice: str | None, *, keeps_best: bool
) -> Path:
    """The checkpoint `--checkpoint` names: `best`, `latest`, a step or a path (a run
    folder, a checkpoint directory or a checkpoint). None: `best` when the spec keeps one,
    else `latest`."""
    from beagle.training.checkpoint import checkpoint_path, checkpoints

    choice = choice or ("best" if keeps_best else "latest")
    if choice not in ("best", "latest") and not choice.isdigit():
        path = Path(choice)
        if (path / "run.json").is_file():
            recorded = json.loads((path / "run.json").read_text())["checkpoint_dir"]
            directory = None if recorded is None else Path(recorded)
            return resolve_checkpoint(directory, None, keeps_best=keeps_best)
        if path.name.startswith("checkpoint_") and path.name[11:] in map(
            str, checkpoints(path.parent).steps
        ):
            return path
        found = checkpoints(path)
        if found.latest is None:
            raise RunNotUsable(
                f"{path} is not a checkpoint, a checkpoint directory or a run folder"
            )
        return found.latest
    if checkpoint_dir is None:
        raise RunNotUsable("the spec has no `checkpoint:` section, so the run saved no model")
    found = checkpoints(checkpoint_dir)
    if found.latest is None:
        raise RunNotUsable(f"no checkpoint yet in {checkpoint_dir}: train with `beagle run` first")
    if choice == "latest":
        return found.latest
    if choice == "best":
        if found.best is None:
            raise RunNotUsable(
                f"{checkpoint_dir} has no best checkpoint (the spec's checkpoint.best keeps "
                "one); use --checkpoint latest or a step"
            )
        return found.best
    if int(choice) not in found.steps:
        steps = ", ".join(map(str, found.steps))
        raise RunNotUsable(f"{checkpoint_dir} has no checkpoint of step {choice} (it has {steps})")
    return checkpoint_path(checkpoint_dir, int(choice))


@dataclass
class LoadedRun:
    """A trained run: its spec, model, variables and generated module (see `load_run`)."""

    folder: Path
    spec: LoadedSpec
    record: dict[str, Any]
    checkpoint: Path
    model: Any
    variables: dict[str, Any]

    @cached_property
    def module(self) -> ModuleType:
        """The generated module the run trained with (`<run folder>/<name>.py`)."""
        from beagle.runner import wiring

        run = RunFolder(self.folder, self.spec.spec.name)
        return wiring.import_module_from_file(run.module_file, f"_beagle_run_{self.spec.spec.name}")

    @cached_property
    def _apply(self) -> Any:
        import jax

        from beagle.runner import wiring

        kwargs = wiring.model_kwargs(self.spec, train=False)
        model = self.model
        rngs = self.spec.spec.model.rngs
        key = jax.random.PRNGKey(0)

        def apply(variables: Any, *inputs: Any) -> Any:
            # Eval mode draws nothing; a stream the model asks for anyway gets a fixed key.
            extra = {"rngs": {name: key for name in rngs}} if rngs else {}
            return model.apply(variables, *inputs, **kwargs, **extra)

        return jax.jit(apply)

    def forward(self, *inputs: Any) -> Any:
        """The model in eval mode on one batch of positional inputs (`model.input` order)."""
        return self._apply(self.variables, *inputs)

    def check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """The inputs as the model takes them (dtypes narrowed), or `RunNotUsable` naming
        the key, shape or dtype that does not fit what the run trained on."""
        arrays = []
        rows = None
        for entry in self.record["inputs"]:
            key = entry["key"]
            if key not in inputs:
                raise RunNotUsable(
                    f"the input has no array {key!r} (the model takes "
                    + ", ".join(e["key"] for e in self.record["inputs"])
                    + f"; it has {', '.join(sorted(inputs)) or 'none'})"
                )
            array = np.asarray(inputs[key])
            want_shape, want = tuple(entry["shape"]), np.dtype(entry["dtype"])
            if array.ndim != len(want_shape) + 1 or array.shape[1:] != want_shape:
                raise RunNotUsable(
                    f"input {key!r} has shape {array.shape}; the model takes (N, "
                    + ", ".join(map(str, want_shape))
                    + ")"
                )
            dtype = CAST.get(array.dtype, array.dtype)
            if dtype.kind != want.kind or dtype.itemsize != want.itemsize:
                raise RunNotUsable(
                    f"input {key!r} is {array.dtype}; the model was trained on {want}"
                    + (" (float64 and int64 are narrowed to 32 bits)" if want.itemsize == 4 else "")
                )
            if rows is not None and array.shape[0] != rows:
                raise RunNotUsable(f"input {key!r} has {array.shape[0]} rows, not {rows}")
            rows = array.shape[0]
            arrays.append(array.astype(want, copy=False))
        return arrays

    def predict(
        self, inputs: Mapping[str, Any], batch_size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Every row of `inputs` through the model in eval mode, in order and in batches
        (the last one at its own size): `{output name: array}`."""
        arrays = self.check_inputs(inputs)
        size = batch_size or int(self.record["batch_size"])
        rows = arrays[0].shape[0] if arrays else 0
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, rows, size):
            batch = [array[start : start + size] for array in arrays]
            named = name_outputs(self.spec, self.forward(*batch))
            parts.append({name: np.asarray(value) for name, value in named.items()})
        if not parts:
            raise RunNotUsable("the input has no rows")
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def abstract_inputs(self, batch: int | Any = 1) -> list[jax.ShapeDtypeStruct]:
        """The model's inputs as `jax.ShapeDtypeStruct`s with `batch` rows."""
        import jax

        return [
            jax.ShapeDtypeStruct((batch, *entry["shape"]), np.dtype(entry["dtype"]))
            for entry in self.record["inputs"]
        ]


def load_run(
    path: str | Path, checkpoint: str | int | None = "best", *, spec_path: Path | None = None
) -> LoadedRun:
    """A trained run, from its run folder or its spec file.

    `checkpoint`: `best` (falling back to `latest` when the run kept no best), `latest`, a
    step or a path. The returned object has `.model`, `.variables` (params and BatchNorm
    statistics, on the default device), `.module`, `.spec` and `.predict(inputs)`.
    """
    import jax

    from beagle.runner import wiring
    from beagle.spec import load_spec
    from beagle.training.checkpoint import load_variables

    folder = find_run_folder(spec_path or path)
    record = json.loads((folder / "run.json").read_text())
    loaded = load_spec(folder / "spec.yaml", imports="import")
    recorded = record.get("checkpoint_dir")
    keeps_best = loaded.spec.checkpoint is not None and loaded.spec.checkpoint.best is not None
    choice = None if checkpoint is None else str(checkpoint)
    if choice == "best" and not keeps_best:
        choice = "latest"
    found = resolve_checkpoint(
        None if recorded is None else Path(recorded), choice, keeps_best=keeps_best
    )
    run = LoadedRun(folder, loaded, record, found, None, {})
    # An NNX model is built by the run's generated module (`NnxModel`); linen needs none.
    model = run.model = wiring.build_model(
        loaded, run.module if loaded.spec.model.kind == "nnx" else None
    )
    kwargs = wiring.model_kwargs(loaded, train=False)
    rngs = wiring.init_rngs(loaded, jax.random.PRNGKey(0))
    inputs = run.abstract_inputs()
    shapes = jax.eval_shape(lambda r, xs: model.init(r, *xs, **kwargs), rngs, inputs)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), dict(shapes)
    )
    run.variables = load_variables(found, target)
    return run


SPLITS = ("val", "test", "train")


def split_batches(run: LoadedRun, split: str) -> Any:
    """Every batch of `split` (the last one partial), from the spec's data source."""
    from beagle.data import DataError
    from beagle.runner.wiring import build_source

    if split not in SPLITS:
        raise RunNotUsable(f"no split {split!r}: use one of {', '.join(SPLITS)}")
    try:
        source = build_source(run.spec.spec.data, run.spec.spec.seed)
    except DataError as error:
        raise RunNotUsable(f"cannot read the data: {error.message}") from None
    if split == "val":
        if not source.has_val:
            raise RunNotUsable("the data has no validation split (data.val or val_fraction)")
        return source.val_iterator()
    if split == "test":
        test = getattr(source, "test_iterator", None)
        if test is None or not getattr(source, "has_test", False):
            raise RunNotUsable("the data has no test split (data.test or test_fraction)")
        return test()
    arrays = getattr(source, "train", None)
    if not isinstance(arrays, dict):
        kind = run.spec.spec.data.source
        raise RunNotUsable(f"the {kind} source cannot give its train split in order")
    size = run.spec.spec.data.batch_size
    rows = len(next(iter(arrays.values())))
    return (
        {key: value[start : start + size] for key, value in arrays.items()}
        for start in range(0, rows, size)
    )


def evaluate(run: LoadedRun, split: str) -> dict[str, Any]:
    """The module's `val_step` over every batch of `split` with the run's variables:
    example-weighted means, keyed `<split>_<metric>`, and the example count."""
    import jax

    from beagle.runner import wiring
    from beagle.training.batches import batch_size
    from beagle.training.metrics import StepMetricSums, read_sums

    state = wiring.build_state(run.spec, run.model, run.variables, run.module)
    key = jax.random.PRNGKey(0)
    sums = StepMetricSums(stop_on_skipped=False, source="val_step")
    examples = 0
    for batch in split_batches(run, split):
        _, metrics = run.module.val_step(state, batch, key)
        size = batch_size(batch)
        sums.add(metrics, [size])
        examples += size
    if examples == 0:
        raise RunNotUsable(f"the {split} split has no examples")
    (totals,) = read_sums([sums])
    assert totals is not None
    values = totals.history_values(False)
    return {"examples": examples, "metrics": {f"{split}_{k}": v for k, v in values.items()}}
