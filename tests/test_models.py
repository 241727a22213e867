"""The built-in models: shapes, parameters, BatchNorm state and dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from beagle.models import CNN, MLP


def test_mlp_output_width_is_last_feature_and_relu_sits_between_layers() -> None:
    model = MLP(features=[16, 8, 3])
    x = jnp.ones((5, 4))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert set(variables) == {"params"}
    kernels = [variables["params"][f"dense_{i}"]["kernel"].shape for i in range(3)]
    assert kernels == [(4, 16), (16, 8), (8, 3)]
    assert model.apply(variables, x).shape == (5, 3)
    # One layer is a purely linear map: no ReLU after the output layer.
    linear = MLP(features=[1])
    params = linear.init(jax.random.PRNGKey(1), x)
    out = linear.apply(params, -x * 100)
    assert out.shape == (5, 1)
    assert jnp.allclose(
        linear.apply(params, x) + linear.apply(params, -x), 2 * params["params"]["dense_0"]["bias"]
    )


def test_mlp_accepts_train_flag_and_flattens_images() -> None:
    model = MLP(features=[4])
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert model.apply(variables, x, train=True).shape == (2, 4)


def test_cnn_blocks_batchnorm_and_head_shapes() -> None:
    model = CNN(features=[16, 32], num_classes=10, dropout_rate=0.1)
    x = jnp.ones((4, 8, 8, 1))
    variables = model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False
    )
    assert set(variables) == {"params", "batch_stats"}
    params = variables["params"]
    assert params["conv_0"]["kernel"].shape == (3, 3, 1, 16)
    assert params["conv_1"]["kernel"].shape == (3, 3, 16, 32)
    # 8×8 -> 4×4 -> 2×2 after two 2×2 pools, 32 channels flattened into the head.
    assert params["head"]["kernel"].shape == (2 * 2 * 32, 10)
    logits, updates = model.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)}
    )
    assert logits.shape == (4, 10)
    assert set(updates) == {"batch_stats"}
    assert model.apply(variables, x, train=False).shape == (4, 10)


def test_cnn_batchnorm_momentum_is_point_nine() -> None:
    model = CNN(features=[2], num_classes=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 1)) + 3.0
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = jax.lax.conv_general_dilated(
        x,
        variables["params"]["conv_0"]["kernel"],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    expected = 0.1 * conv.mean(axis=(0, 1, 2))
    assert jnp.allclose(updates["batch_stats"]["bn_0"]["mean"], expected, atol=1e-5)


def test_cnn_without_batchnorm_has_no_batch_stats_and_dropout_needs_train() -> None:
    model = CNN(features=[4], num_classes=3, dropout_rate=0.5, batch_norm=False)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert set(variables) == {"params"}
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not jnp.allclose(a, b)
    assert jnp.allclose(
        model.apply(variables, x, train=False), model.apply(variables, x, train=False)
    )


@pytest.mark.parametrize("features", [[4, 4, 4, 4], [8]])
def test_cnn_deep_stacks_on_small_images_keep_a_spatial_map(features: list[int]) -> None:
    model = CNN(features=features, num_classes=2)
    x = jnp.ones((1, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert model.apply(variables, x, train=False).shape == (1, 2)
