"""A small variational autoencoder for `specs/vae.yaml`.

The model returns `(recon, mean, logvar)`: the spec names these outputs and weighs a
reconstruction loss against the KL term. Training draws the latent sample from the
`sample` RNG stream (the reparameterisation trick); eval mode decodes the mean.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class VAE(nn.Module):
    """Dense encoder to a Gaussian latent, Dense decoder back to the input's shape."""

    latents: int = 8
    hidden: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
        flat = x.reshape((x.shape[0], -1))
        h = nn.relu(nn.Dense(self.hidden, name="encoder")(flat))
        mean = nn.Dense(self.latents, name="mean")(h)
        logvar = nn.Dense(self.latents, name="logvar")(h)
        if train:
            noise = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * logvar) * noise
        else:
            z = mean
        h = nn.relu(nn.Dense(self.hidden, name="decoder")(z))
        size = math.prod(x.shape[1:])
        recon = nn.sigmoid(nn.Dense(size, name="output")(h)).reshape(x.shape)
        return recon, mean, logvar
