"""The built-in data sources: contents, splits, epoch-deterministic order, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from beagle import data


def _concat(batches: list[data.Batch], key: str) -> np.ndarray:
    return np.concatenate([b[key] for b in batches])


def test_digits_keys_dtypes_range_and_split() -> None:
    source = data.digits(64, val_fraction=0.2, seed=0)
    assert source.train_examples == 1437 and source.val_examples == 360
    assert source.train_batches == 1437 // 64 and source.val_batches == -(-360 // 64)  # whole
    batch = source.sample_batch()
    assert batch["image"].shape == (64, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
    assert source.train["image"].min() == 0.0 and source.train["image"].max() == 1.0
    # The split is disjoint and covers the data set.
    assert source.val is not None
    all_rows = {r.tobytes() for r in np.concatenate([source.train["image"], source.val["image"]])}
    assert len(source.train["image"]) + len(source.val["image"]) == 1797
    assert len(all_rows) > 1700  # a few digits are duplicated in the data set itself


def test_split_depends_on_seed_only() -> None:
    a, b, c = data.digits(32, seed=1), data.digits(32, seed=1), data.digits(32, seed=2)
    assert a.val is not None and b.val is not None and c.val is not None
    assert np.array_equal(a.val["label"], b.val["label"])
    assert not np.array_equal(a.val["image"], c.val["image"])


def test_same_epoch_same_order_different_epochs_differ() -> None:
    source = data.synthetic(16, task="classification", examples=200, seed=3)
    first = _concat(list(source.train_iterator(epoch=4)), "x")
    again = _concat(list(source.train_iterator(epoch=4)), "x")
    other = _concat(list(source.train_iterator(epoch=5)), "x")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # A fresh source (a resumed process) sees the same order.
    fresh = data.synthetic(16, task="classification", examples=200, seed=3)
    assert np.array_equal(first, _concat(list(fresh.train_iterator(epoch=4)), "x"))


def test_drop_remainder_and_batch_counts() -> None:
    full = data.synthetic(30, task="regression", examples=100, val_fraction=0.0)
    assert full.train_batches == 3 and [len(b["x"]) for b in full.train_iterator(0)] == [30] * 3
    assert not full.has_val and full.val_batches is None
    ragged = data.synthetic(
        30, task="regression", examples=100, val_fraction=0.0, drop_remainder=False
    )
    assert [len(b["x"]) for b in ragged.train_iterator(0)] == [30, 30, 30, 10]
    # Without drop_remainder every example is seen exactly once per epoch.
    assert np.array_equal(
        np.sort(_concat(list(ragged.train_iterator(1)), "x"), axis=0),
        np.sort(ragged.train["x"], axis=0),
    )


def test_no_shuffle_keeps_order_and_validation_is_fixed() -> None:
    source = data.synthetic(10, task="regression", examples=100, shuffle=False)
    assert np.array_equal(next(source.train_iterator(7))["x"], source.train["x"][:10])
    v1 = _concat(list(source.val_iterator()), "y")
    v2 = _concat(list(source.val_iterator()), "y")
    assert np.array_equal(v1, v2) and len(v1) == 20


def test_synthetic_is_deterministic_and_shaped() -> None:
    reg = data.synthetic_arrays("regression", examples=50, features=3, seed=0)
    assert reg["x"].shape == (50, 3) and reg["y"].shape == (50, 1)
    assert reg["x"].dtype == np.float32 and reg["y"].dtype == np.float32
    assert np.array_equal(
        reg["y"], data.synthetic_arrays("regression", examples=50, features=3)["y"]
    )
    cls = data.synthetic_arrays("classification", examples=500, classes=4, seed=1)
    assert cls["y"].dtype == np.int32 and cls["y"].shape == (500,)
    assert set(np.unique(cls["y"])) == {0, 1, 2, 3}
    assert not np.array_equal(
        cls["x"], data.synthetic_arrays("classification", examples=500, classes=4, seed=2)["x"]
    )


def test_batch_larger_than_data_is_a_clear_error() -> None:
    with pytest.raises(data.DataError, match="larger than the 8 training examples") as info:
        data.synthetic(64, task="regression", examples=10)
    assert info.value.field == ("data", "batch_size")


def test_npz_source_reads_files_and_checks_them(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(20))
    np.savez(tmp_path / "val.npz", x=x[:6], y=np.arange(6))
    source = data.npz(4, train=str(tmp_path / "train.npz"), val=str(tmp_path / "val.npz"), seed=0)
    assert source.train_batches == 5 and source.val_batches == 2  # 4 + the last 2
    assert [len(batch["y"]) for batch in source.val_iterator()] == [4, 2]
    epoch = list(source.train_iterator(0))
    assert np.array_equal(np.sort(_concat(epoch, "y")), np.arange(20))
    assert np.array_equal(epoch[0]["x"][:, 0] / 2, epoch[0]["y"])  # rows stay together
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(3))
    with pytest.raises(data.DataError, match="differ in their first dimension"):
        data.npz(4, train=str(tmp_path / "bad.npz"))
    with pytest.raises(data.DataError, match="no such file") as info:
        data.npz(4, train=str(tmp_path / "missing.npz"))
    assert info.value.field == ("data", "train")


def test_python_source_calls_user_functions_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def batches(batch_size):\n"
        "    for i in range(3):\n"
        "        yield {'x': np.full((batch_size, 2), i, np.float32)}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mydata", raising=False)
    source = data.python(5, train="mydata:batches", val="mydata:batches")
    assert [b["x"][0, 0] for b in source.train_iterator(0)] == [0, 1, 2]
    assert [b["x"][0, 0] for b in source.train_iterator(1)] == [0, 1, 2]
    assert source.sample_batch()["x"].shape == (5, 2)
    assert source.has_val and source.train_batches is None
    with pytest.raises(data.DataError, match="no attribute 'nope'"):
        data.python(5, train="mydata:nope")
    with pytest.raises(data.DataError, match="cannot import module"):
        data.python(5, train="not_a_module_here:fn")


def test_digits_arrays_equal_scikit_learns_load_digits() -> None:
    from sklearn.datasets import load_digits

    images, labels = data.load_digits_arrays()
    reference = load_digits()
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


def test_npz_that_is_not_an_archive_of_arrays_says_so(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("hello")
    objects = tmp_path / "objects.npz"
    np.savez(objects, a=np.array([{"x": 1}, None], dtype=object))
    single = tmp_path / "single.npz"
    with single.open("wb") as stream:
        np.save(stream, np.ones(3))
    for path, words in ((text, "not a zip file"), (objects, "'a' holds Python objects"),
                        (single, "a single .npy array")):  # fmt: skip
        with pytest.raises(data.DataError) as error:
            data.npz(8, train=str(path))
        assert "is not a valid .npz archive of arrays" in error.value.message
        assert words in error.value.message and "pickled" not in error.value.message
        assert error.value.field == ("data", "train")
