"""Keras 3 on its JAX backend: the same layers, dtype (float32), batch and optimizer as
`speed_workloads.py`'s workloads, trained with `model.fit` (a bench-only extra:
`pip install -e '.[bench]'`).

`import_keras()` sets `KERAS_BACKEND=jax` before the import and returns the module and how
long the import took; `build` compiles a model with `steps_per_execution` (1 is Keras's
default); `fit` runs it on NumPy arrays as a user would (Keras's default shuffling,
`verbose=0`, the validation arrays for W2).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

__all__ = ["build", "fit", "import_keras"]


_IMPORT_SECONDS: list[float] = []


def import_keras() -> tuple[Any, float]:
    """(the keras module, seconds its first import took); ImportError without it."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if os.environ["KERAS_BACKEND"] != "jax":
        raise ImportError(f"KERAS_BACKEND is {os.environ['KERAS_BACKEND']!r}, not 'jax'")
    started = time.perf_counter()
    import keras

    if not _IMPORT_SECONDS:
        _IMPORT_SECONDS.append(time.perf_counter() - started)
    return keras, _IMPORT_SECONDS[0]


def build(keras: Any, name: str, steps_per_execution: int) -> Any:
    """A compiled Keras model of workload `name`."""
    layers = keras.layers
    if name == "W0":
        model = keras.Sequential([keras.Input((8,)), layers.Dense(1)])
        optimizer = keras.optimizers.SGD(0.1)
        loss: Any = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics: list[str] = []
    elif name == "W1":
        model = keras.Sequential(
            [
                keras.Input((64,)),
                layers.Dense(256, activation="relu"),
                layers.Dense(256, activation="relu"),
                layers.Dense(1),
            ]
        )
        optimizer = keras.optimizers.Adam(1e-3)
        loss = "mse"
        metrics = []
    else:
        blocks: list[Any] = [keras.Input((28, 28, 1))]
        for features in (16, 32):
            blocks += [
                layers.Conv2D(features, 3, padding="same", use_bias=False),
                layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                layers.ReLU(),
                layers.AveragePooling2D(2, padding="same"),
            ]
        model = keras.Sequential([*blocks, layers.Flatten(), layers.Dense(10)])
        optimizer = keras.optimizers.Adam(1e-3)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = ["accuracy"]
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=steps_per_execution
    )
    return model


def fit(
    model: Any,
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray] | None,
    batch: int,
    epochs: int,
) -> None:
    """`model.fit` for `epochs` epochs over `train` (keys x/y or image/label)."""
    x, y = (train["x"], train["y"]) if "x" in train else (train["image"], train["label"])
    validation = None
    if val is not None:
        validation = (val["image"], val["label"])
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=epochs,
        verbose=0,
        validation_data=validation,
        validation_batch_size=batch,
    )
