"""A resumed run draws its keys from the RNG key recorded in the checkpoint, not from the
`rng_key` it is given: resuming with any key continues the interrupted run exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import pytest
from test_training_helpers import data_fn, leaves_equal, make_state, train_step

from beagle.training import TrainingInterrupted, checkpoint_info, train_loop

EPOCHS, BATCHES = 2, 10


def _train(rng_key: jax.Array, data: Any = data_fn, **options: Any) -> tuple[Any, dict]:
    return train_loop(
        make_state(), train_step, data, EPOCHS, BATCHES, rng_key, show_progress=False, **options
    )


def _interrupted_at(epoch_at: int, batch_at: int) -> Callable[[int], Iterator[dict]]:
    """data_fn, but Ctrl-C arrives just before batch `batch_at` of epoch `epoch_at`."""

    def data(epoch: int) -> Iterator[dict]:
        for index, batch in enumerate(data_fn(epoch)):
            if (epoch, index) == (epoch_at, batch_at):
                raise KeyboardInterrupt
            yield batch

    return data


@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key], ids=["raw", "typed"])
def test_resume_with_another_key_continues_with_the_recorded_one(
    tmp_path: Path, make_key: Callable[[int], jax.Array]
) -> None:
    key, other = make_key(0), make_key(1)
    reference_state, reference_history = _train(key)
    other_state, _ = _train(other)
    assert not leaves_equal(other_state.params, reference_state.params)  # the key matters

    with pytest.raises(TrainingInterrupted) as raised:
        _train(key, _interrupted_at(1, 3), checkpoint_dir=tmp_path)
    assert raised.value.checkpoint_path is not None
    assert checkpoint_info(raised.value.checkpoint_path).position == 3  # mid-epoch

    state, history = _train(other, checkpoint_dir=tmp_path, resume=True)
    assert leaves_equal(state.params, reference_state.params)
    assert leaves_equal(state.opt_state, reference_state.opt_state)
    assert history == reference_history
