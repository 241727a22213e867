"""Built-in Flax NNX models: the NNX twins of `beagle.models`' MLP and CNN.

A spec with `model.kind: nnx` names them as `beagle.nnx_models:MLP` and
`beagle.nnx_models:CNN`. They take their input size from the data: the generated
`make_model` passes `input_shape`, the shape of one example of the model's input (the
batch's shape without its first axis), so a spec gives only what a linen spec gives.

Their layers carry the names of the linen twins' (`dense_0`, `conv_0`, `bn_0`, `head`), so
the two kinds have the same parameter tree: checkpoints, `warm_start` paths and
`beagle export` read the same, and parameters copy across unchanged. Both take `dtype`
(the computation's) and `param_dtype` (the parameters', float32 by default); BatchNorm
statistics stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["CNN", "MLP", "SIZED_FROM_DATA"]

SIZED_FROM_DATA = "input_shape"
"""The keyword through which a built-in NNX model learns one example's input shape."""


class MLP(nnx.Module):
    """Dense layers with ReLU between them; the last entry of `features` is the output width.

    An input with more than one feature axis (an image) is flattened first.
    """

    def __init__(
        self,
        features: Sequence[int],
        *,
        input_shape: Sequence[int],
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
    ) -> None:
        if not features:
            raise ValueError("MLP needs at least one entry in `features` (the output width)")
        self.depth = len(features)
        width_in = math.prod(input_shape)
        for i, width in enumerate(features):
            layer = nnx.Linear(width_in, width, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            setattr(self, f"dense_{i}", layer)
            width_in = width

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1)) if x.ndim > 2 else x
        for i in range(self.depth):
            x = getattr(self, f"dense_{i}")(x)
            if i < self.depth - 1:
                x = nnx.relu(x)
        return x


class CNN(nnx.Module):
    """Per entry of `features`: 3×3 conv → BatchNorm → ReLU → 2×2 average pool; then a head.

    The head flattens, applies dropout (only in train mode and when `dropout_rate > 0`,
    drawing on the `dropout` stream) and a Linear layer to `num_classes` logits. BatchNorm
    (momentum 0.9) uses batch statistics in train mode and the running averages in eval
    mode. An input of shape (height, width) is one channel.
    """

    def __init__(
        self,
        features: Sequence[int],
        num_classes: int,
        dropout_rate: float = 0.0,
        batch_norm: bool = True,
        *,
        input_shape: Sequence[int],
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
    ) -> None:
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"CNN takes images of shape (height, width[, channels]), got {tuple(input_shape)}"
            )
        height, width = input_shape[0], input_shape[1]
        channels = input_shape[2] if len(input_shape) == 3 else 1
        self.depth = len(features)
        self.batch_norm = batch_norm
        for i, out in enumerate(features):
            conv = nnx.Conv(
                channels,
                out,
                kernel_size=(3, 3),
                use_bias=not batch_norm,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            setattr(self, f"conv_{i}", conv)
            if batch_norm:
                norm = nnx.BatchNorm(out, momentum=0.9, dtype=dtype, rngs=rngs)
                setattr(self, f"bn_{i}", norm)
            channels = out
            # SAME padding keeps a 1×1 map at 1×1, so deep stacks on small images still work.
            height, width = -(-height // 2), -(-width // 2)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate > 0 else None
        self.head = nnx.Linear(
            height * width * channels,
            num_classes,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 3:  # a batch of single-channel images without a channel axis
            x = x[..., None]
        for i in range(self.depth):
            x = getattr(self, f"conv_{i}")(x)
            if self.batch_norm:
                x = getattr(self, f"bn_{i}")(x)
            x = nnx.relu(x)
            x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape((x.shape[0], -1))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.head(x)
