"""Run in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=4`.

`python tests/parallel_worker.py DIR` writes an MLP and a BatchNorm CNN spec into DIR and
prints one JSON object: for each model and each mesh (data 4, fsdp 4, data 2 x fsdp 2),
the largest relative differences of one sharded step from the same state against one
device (loss, metrics, params), of a validation step on a batch smaller than the mesh,
and, under fsdp 4, the per-device sizes of each state leaf; then the CNN trained for two
epochs on one device, from perturbed params and on `data: 4` (`whole_runs`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from beagle.compiler import compile_spec
from beagle.runner import trace, wiring
from beagle.spec import load_spec
from beagle.training.sharding import make_placement

MLP = """\
version: 1
name: par_mlp
seed: 1
model:
  class: beagle.models:MLP
  args: {features: [256, 3]}
data: {source: synthetic, task: classification, classes: 3, examples: 256, features: 64,
       batch_size: 16}
optimizer: {name: adam, learning_rate: 0.01}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
metrics:
  accuracy: {fn: accuracy, args: {logits: outputs.outputs, labels: batch.y}}
train: {epochs: 1}
"""

CNN = """\
version: 1
name: par_cnn
seed: 2
model:
  class: beagle.models:CNN
  args: {features: [32, 64], num_classes: 10, dropout_rate: 0.1}
  input: batch.image
  batch_norm: true
  train_flag: train
  rngs: [dropout]
  outputs: logits
data: {source: digits, batch_size: 16}
optimizer: {name: adamw, learning_rate: 0.003, clip_grad_norm: 1.0}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.logits, labels: batch.label}}
metrics:
  accuracy: {fn: accuracy, args: {logits: outputs.logits, labels: batch.label}}
train: {epochs: 1}
"""

MESHES = {"data4": (4, 1), "fsdp4": (1, 4), "data2_fsdp2": (2, 2)}


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def _params_ok(got: Any, want: Any) -> tuple[bool, float]:
    """`allclose(rtol=1e-4, atol=1e-6 * max|p|)` per leaf; the largest abs difference."""
    ok, worst = True, 0.0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g), np.asarray(w)
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        ok = ok and bool(np.allclose(g, w, rtol=1e-4, atol=1e-6 * scale))
        worst = max(worst, float(np.max(np.abs(g - w))) if w.size else 0.0)
    return ok, worst


def _local_sizes(tree: Any) -> dict[str, list[int]]:
    """Per leaf: [global size, size of each device's shard]."""
    sizes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shards = [int(np.prod(s.data.shape)) for s in leaf.addressable_shards]
        sizes[jax.tree_util.keystr(path)] = [int(leaf.size), *shards]
    return sizes


def compare(spec_path: Path) -> dict[str, Any]:
    loaded = load_spec(spec_path, (), imports="import")
    module = wiring.import_module_from_text(
        compile_spec(loaded.spec, loaded.source_name), f"_par_{loaded.spec.name}", "<par>"
    )
    wired = trace.wire(loaded, module)
    host_state = jax.device_get(wired.state)
    batch = next(iter(wired.data.source.train_iterator()))
    small = {key: value[:3] for key, value in batch.items()}  # smaller than the mesh
    key = jax.random.key(7)
    one = jax.device_put(host_state, jax.devices()[0])
    want_state, want = module.train_step(one, batch, key)
    _, want_val = module.val_step(jax.device_put(host_state, jax.devices()[0]), small, key)
    result: dict[str, Any] = {}
    for name, (data, fsdp) in MESHES.items():
        placement, state = make_placement(host_state, data=data, fsdp=fsdp)
        sizes = _local_sizes(state) if fsdp > 1 else {}
        _, got_val = placement.wrap(module.val_step, donate=False)(state, small, key)
        got_state, got = placement.wrap(module.train_step)(state, batch, key)
        ok, worst = _params_ok(got_state.params, want_state.params)
        entry = {
            "metrics_rel": max(_rel(got[k], want[k]) for k in want),
            "params_ok": ok,
            "params_max_abs": worst,
            "val_small_rel": max(_rel(got_val[k], want_val[k]) for k in want_val),
            "state_sizes": sizes,
            "opt_sizes": _local_sizes(got_state.opt_state) if fsdp > 1 else {},
            "param_sizes_after": _local_sizes(got_state.params) if fsdp > 1 else {},
            "batch_sizes": _local_sizes(placement.place_batch(batch)),
            "small_batch_sizes": _local_sizes(placement.place_batch(small)),
        }
        if want_state.batch_stats is not None:
            entry["batch_stats_rel"] = max(
                _rel(g, w)
                for g, w in zip(
                    jax.tree.leaves(got_state.batch_stats),
                    jax.tree.leaves(want_state.batch_stats),
                    strict=True,
                )
            )
        result[name] = entry
    return result


def whole_runs(spec_path: Path, epochs: int = 2) -> dict[str, float]:
    """The BatchNorm CNN trained `epochs` epochs three ways: on one device, on one device
    from params scaled by (1 + 1e-7), and on `data: 4`. The largest history differences
    of the last two against the first: training amplifies rounding, so the sharded run's
    difference is judged against the perturbed run's."""
    from beagle.training import train_loop

    loaded = load_spec(spec_path, (), imports="import")
    module = wiring.import_module_from_text(
        compile_spec(loaded.spec, loaded.source_name), f"_whole_{loaded.spec.name}", "<par>"
    )
    wired = trace.wire(loaded, module)
    host_state = jax.device_get(wired.state)
    source = wired.data.source

    def history(state: Any, train_step: Any, val_step: Any) -> dict[str, list[float]]:
        _, result = train_loop(
            state=state,
            train_step_fn=train_step,
            data_iterator_fn=source.train_iterator,
            num_epochs=epochs,
            num_batches=wired.data.batches_per_epoch,
            rng_key=wired.rng_key,
            val_step_fn=val_step,
            val_data_iterator=source.val_iterator,
            show_progress=False,
        )
        return result

    one = jax.device_put(host_state, jax.devices()[0])
    want = history(one, module.train_step, module.val_step)
    nudged_params = jax.tree.map(lambda p: p * np.float32(1 + 1e-7), host_state.params)
    nudged = jax.device_put(host_state.replace(params=nudged_params), jax.devices()[0])
    moved = history(nudged, module.train_step, module.val_step)
    placement, state = make_placement(host_state, data=4, fsdp=1)
    sharded = history(
        state, placement.wrap(module.train_step), placement.wrap(module.val_step, donate=False)
    )

    def largest(got: dict[str, list[float]]) -> float:
        return max(float(np.max(np.abs(np.subtract(got[k], want[k])))) for k in want)

    return {"perturbed": largest(moved), "sharded": largest(sharded)}


def main() -> None:
    folder = Path(sys.argv[1])
    out: dict[str, Any] = {"devices": jax.device_count()}
    for name, text in (("mlp", MLP), ("cnn", CNN)):
        path = folder / f"{name}.yaml"
        path.write_text(text)
        out[name] = compare(path)
    out["cnn_whole_runs"] = whole_runs(folder / "cnn.yaml")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
