"""An NNX model (`model.kind: nnx`) behind linen's `init` and `apply`.

The generated module trains an NNX model in the functional form (SPEC-2 section 6): the
state holds plain array pytrees, `params` (the `nnx.Param` arrays) and `batch_stats` (the
`nnx.BatchStat` arrays), exactly where a linen model's variables go. So the runner keeps
one path for both kinds: `build_state`, checkpoints, resume, `parallel`, `beagle check`'s
trace, `load_run`, `eval`, `predict` and `export` call a model's `init(rngs, *inputs)` and
`apply(variables, *inputs, ...)`, and `NnxModel` answers them with the generated module's
own `make_model` and `model_graphs`, so the model is built one way only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["NnxModel"]


class NnxModel:
    """`init`/`apply` for the NNX model the generated `module` builds."""

    def __init__(self, module: Any, cls: type, input_keys: Sequence[str]) -> None:
        self.module = module  # the generated module: make_model(batch, rngs), model_graphs
        self.cls = cls  # the spec's `model.class` (for messages)
        self.input_keys = tuple(input_keys)  # `model.input`'s batch keys, in order

    def _batch(self, inputs: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(self.input_keys, inputs, strict=True))

    @staticmethod
    def _keys(rngs: Mapping[str, Any]) -> dict[str, Any]:
        # NNX takes keys as jax arrays; the runner's root keys are numpy (see rng.py).
        import jax.numpy as jnp

        return {name: jnp.asarray(key) for name, key in rngs.items()}

    def init(self, rngs: Mapping[str, Any], *inputs: Any, train: bool = False) -> dict[str, Any]:
        """The model's variables, built from the keys `rngs` (one per stream) for the
        inputs' shapes: `params`, `batch_stats` when it has BatchNorm, and any other kind
        of variable under its type's name. RNG state is left out: the steps reseed it."""
        from flax import nnx

        del train  # a model is built the same way in either mode
        model = self.module.make_model(self._batch(inputs), nnx.Rngs(**self._keys(rngs)))
        params = nnx.state(model, nnx.Param)
        stats = nnx.state(model, nnx.BatchStat)
        other = nnx.state(model, nnx.Not(nnx.Any(nnx.Param, nnx.BatchStat, nnx.RngState)))
        variables = {"params": nnx.to_pure_dict(params)}
        if len(nnx.to_flat_state(stats)):
            variables["batch_stats"] = nnx.to_pure_dict(stats)
        kinds = sorted({type(variable).__name__ for _, variable in nnx.to_flat_state(other)})
        if kinds:  # beagle keeps none of these: `check_collections` names them
            variables[", ".join(kinds)] = nnx.to_pure_dict(other)
        return variables

    def apply(
        self,
        variables: Mapping[str, Any],
        *inputs: Any,
        train: bool = False,
        rngs: Mapping[str, Any] | None = None,
        mutable: Any = False,
    ) -> Any:
        """The model on `inputs` in train or eval mode, its streams reseeded from `rngs`;
        with `mutable`, also `{"batch_stats": ...}` as the call left them."""
        from flax import nnx

        train_graph, eval_graph, rng_state = self.module.model_graphs(self._batch(inputs))
        graph = train_graph if train else eval_graph
        states = [variables["params"]]
        if "batch_stats" in variables:
            states.append(variables["batch_stats"])
        model = nnx.merge(graph, *states, rng_state, copy=True)
        if rngs:
            nnx.reseed(model, **self._keys(rngs))
        out = model(*inputs)
        if mutable:
            return out, {"batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}
        return out
