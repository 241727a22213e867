"""User loss and metric functions for `specs/classifier_metrics.yaml`.

A spec names them as `examples.custom_losses:focal_loss`; each takes its arguments by
keyword (the spec maps them to `outputs.<name>`, `batch.<key>`, `params` or literals)
and returns a scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def focal_loss(logits: jax.Array, labels: jax.Array, gamma: float = 2.0) -> jax.Array:
    """Softmax focal loss (Lin et al., 2017) with integer labels, averaged over the batch."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_p = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return jnp.mean(-((1.0 - jnp.exp(log_p)) ** gamma) * log_p)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Plain softmax cross-entropy with integer labels, reported as a metric."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))
