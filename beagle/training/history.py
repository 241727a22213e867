"""`History`: what `train_loop` returns and a checkpoint records, and the runner writes out.

`history["train_<m>"]` holds one value per epoch (the epoch's mean of metric `m`);
`history["val_<m>"]` one value per validation. Every other module names this type rather
than spelling out its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

History = dict[str, list[float]]


def copy_history(history: Mapping[str, Iterable[float]]) -> History:
    """A fresh `History` of plain floats (JSON numbers, numpy scalars and lists alike)."""
    return {key: [float(value) for value in values] for key, values in history.items()}
