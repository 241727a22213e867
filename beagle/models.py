"""Built-in models: a multilayer perceptron and a small convolutional classifier.

A spec names them as `beagle.models:MLP` and `beagle.models:CNN`. Both take a `train`
keyword (the spec's default `train_flag`), so a spec need not say `train_flag: null` for
the MLP, which ignores it. Both take `dtype` (what the layers compute in) and `param_dtype`
(what the parameters are stored in), as a spec's `precision` passes them; BatchNorm keeps
its statistics in float32 whatever `dtype` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["CNN", "MLP"]


class MLP(nn.Module):
    """Dense layers with ReLU between them; the last entry of `features` is the output width."""

    features: Sequence[int]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not self.features:
            raise ValueError("MLP needs at least one entry in `features` (the output width)")
        x = x.reshape((x.shape[0], -1)) if x.ndim > 2 else x
        for i, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=f"dense_{i}")(
                x
            )
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x


class CNN(nn.Module):
    """Per entry of `features`: 3×3 conv → BatchNorm → ReLU → 2×2 average pool; then a head.

    The head flattens, applies dropout (only when training and `dropout_rate > 0`) and a
    Dense layer to `num_classes` logits. BatchNorm (momentum 0.9) uses batch statistics
    when training and the running averages otherwise, so a spec with `batch_norm: true`
    keeps `batch_stats` in its state.
    """

    features: Sequence[int]
    num_classes: int
    dropout_rate: float = 0.0
    batch_norm: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if x.ndim == 3:  # a batch of single-channel images without a channel axis
            x = x[..., None]
        for i, width in enumerate(self.features):
            x = nn.Conv(
                width,
                kernel_size=(3, 3),
                use_bias=not self.batch_norm,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv_{i}",
            )(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"bn_{i}",
                )(x)
            x = nn.relu(x)
            # SAME padding keeps a 1×1 map at 1×1, so deep stacks on small images still work.
            x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape((x.shape[0], -1))
        if self.dropout_rate > 0:
            x = nn.Dropout(rate=self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head"
        )(x)
