"""`beagle export`: a trained model as a portable artifact that runs without beagle.

`DIR/params/` holds the variables (params and BatchNorm statistics, unsharded, orbax),
`DIR/model.jax` the eval-mode forward pass serialized with `jax.export` for the cpu, cuda
and tpu platforms (parameters inside, batch dimension symbolic, inputs positional in
`model.input` order, outputs in the model's own structure), and `DIR/manifest.json` what
a user needs to call it. Loading it needs only jax:

    exported = jax.export.deserialize(Path("DIR/model.jax").read_bytes())
    logits = exported.call(images)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from beagle import __version__
from beagle.runner.inference import LoadedRun, output_names

PLATFORMS = ("cpu", "cuda", "tpu")
BATCH = "batch"
"""The symbolic batch dimension's name (at least 1)."""


def export_run(run: LoadedRun, out: Path) -> dict[str, Any]:
    """Write `params/`, `model.jax` and `manifest.json` of `run` into `out`; returns the
    manifest."""
    import jax
    import orbax.checkpoint as ocp

    from beagle.training.checkpoint import checkpoint_info

    variables = jax.device_get(run.variables)  # unsharded host arrays
    forward = run._apply

    def serve(*inputs: Any) -> Any:
        return forward(variables, *inputs)

    (batch,) = jax.export.symbolic_shape(BATCH)
    exported = jax.export.export(jax.jit(serve), platforms=PLATFORMS)(*run.abstract_inputs(batch))
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.jax").write_bytes(exported.serialize())
    params = (out / "params").absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(params, variables, force=True)
    info = checkpoint_info(run.checkpoint)
    outputs = jax.tree.leaves(exported.out_avals)
    names = output_names(run.spec)
    manifest = {
        "format": 1,
        "name": run.spec.spec.name,
        "beagle_version": __version__,
        "spec_hash": run.spec.hash,
        "platforms": list(PLATFORMS),
        "batch_dimension": BATCH,
        "inputs": [
            {"key": entry["key"], "shape": [BATCH, *entry["shape"]], "dtype": entry["dtype"]}
            for entry in run.record["inputs"]
        ],
        "outputs": [
            {"name": name, "shape": [_dim(d) for d in aval.shape], "dtype": str(aval.dtype)}
            for name, aval in zip(names, outputs, strict=False)
        ],
        "checkpoint": {
            "path": str(run.checkpoint),
            "step": info.step,
            "epoch": info.epoch,
            "metrics": {key: values[-1] for key, values in info.history.items() if values},
        },
        "files": {"model": "model.jax", "params": "params"},
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, default=_plain)
    (out / "manifest.json").write_text(text + "\n")
    return manifest


def _dim(size: Any) -> int | str:
    return size if isinstance(size, int) else str(size)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)
