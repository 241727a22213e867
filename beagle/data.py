"""Built-in data sources: `digits`, `synthetic`, `npz` and `python`.

Every source yields dicts of arrays with a leading batch axis and offers two iterator
functions, shaped for `beagle.training.train_loop`:

- `train_iterator(epoch, start)`: one epoch of training batches from batch `start` on.
  The order depends only on the seed and the epoch, so a resumed run sees exactly the
  batches an uninterrupted one saw; the loop passes `epoch` and `start` by keyword to a
  function that takes them, and array sources seek there without reading what they skip.
- `val_iterator()`, `test_iterator()`: a fresh pass over the whole validation or test
  split, in a fixed order, the last partial batch included at its own size (never padded),
  so example-weighted means over the batches are exact means over the split.

The array sources keep the data as NumPy arrays: an epoch is one permutation of the
arrays and then contiguous slices, so feeding a step costs almost nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from beagle import catalog

__all__ = [
    "ArraySource",
    "Batch",
    "DataError",
    "DataSource",
    "PythonSource",
    "digits",
    "from_spec",
    "npz",
    "python",
    "split_by_seed",
    "split_three",
    "synthetic",
]

Batch = dict[str, Any]
"""A batch: a dict of arrays that share their leading (batch) dimension."""

_SHUFFLE_TAG = 0x5EED  # keeps the per-epoch streams apart from the split and generator


class DataError(ValueError):
    """Data that cannot be used as the spec says; `field` is the spec path to change."""

    def __init__(self, message: str, field: tuple[str, ...] = ("data",), hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a grain worker process, it comes back pickled: keep field and hint.
        return (type(self), (self.message, self.field, self.hint))


class Share(Protocol):
    """This process's part of each global batch when several processes train together
    (`beagle.training.sharding.BatchShare`)."""

    @property
    def process_index(self) -> int: ...

    @property
    def process_count(self) -> int: ...

    def rows(self, length: int) -> slice:
        """The rows of a global batch of `length` rows that this process reads."""
        ...

    def assemble(self, rows: Batch, length: int) -> Batch:
        """The global batch of `length` rows, from this process's `rows` of it."""
        ...

    def assemble_local(self, rows: Batch) -> Batch:
        """The global batch from this process's equal part of it."""
        ...


class DataSource(Protocol):
    """What `beagle run` needs from a data source."""

    batch_size: int

    @property
    def train_batches(self) -> int | None:
        """Batches in one training epoch (None: the source cannot tell)."""
        ...

    @property
    def val_batches(self) -> int | None:
        """Batches in one validation pass (None: unknown or no validation data)."""
        ...

    @property
    def test_batches(self) -> int | None:
        """Batches in one test pass (None: unknown or no test data)."""
        ...

    @property
    def has_val(self) -> bool:
        """Whether the source has validation data."""
        ...

    @property
    def has_test(self) -> bool:
        """Whether the source has test data (for `beagle eval`)."""
        ...

    def train_iterator(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """One epoch of training batches, in the order fixed by the seed and `epoch`, from
        batch `start` on (a resumed run's next batch)."""
        ...

    def val_iterator(self) -> Iterator[Batch]:
        """A fresh pass over the whole validation split (the last batch may be short)."""
        ...

    def test_iterator(self) -> Iterator[Batch]:
        """A fresh pass over the whole test split (the last batch may be short)."""
        ...

    def sample_batch(self) -> Batch:
        """One real training batch (the first of epoch 0), for initialisation and tracing."""
        ...

    def share_with(self, share: Share) -> None:
        """From now on, read only this process's rows and yield global batches. Raises
        `DataError` when the source cannot."""
        ...


def _num_batches(examples: int, batch_size: int, drop_remainder: bool) -> int:
    return examples // batch_size if drop_remainder else math.ceil(examples / batch_size)


def _check_arrays(arrays: Mapping[str, np.ndarray], what: str, where: tuple[str, ...]) -> int:
    if not arrays:
        raise DataError(f"the {what} data holds no arrays", where)
    sizes = {key: (value.shape[0] if value.ndim else None) for key, value in arrays.items()}
    if any(size is None for size in sizes.values()):
        scalars = ", ".join(sorted(k for k, s in sizes.items() if s is None))
        raise DataError(f"the {what} data has arrays without a leading axis: {scalars}", where)
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{key}: {size}" for key, size in sizes.items())
        raise DataError(
            f"the {what} arrays differ in their first dimension ({listed})",
            where,
            "every array needs one row per example",
        )
    return next(iter(sizes.values()))  # type: ignore[return-value]


@dataclass
class ArraySource:
    """Batches sliced from in-memory arrays, reshuffled each epoch by `seed` and `epoch`.

    `drop_remainder` applies to training only: validation and test passes cover every
    example, the last batch at its own size."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray] | None
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True
    test: dict[str, np.ndarray] | None = None
    train_examples: int = field(init=False)
    val_examples: int = field(init=False)
    test_examples: int = field(init=False)
    share: Share | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.train_examples = _check_arrays(self.train, "training", ("data",))
        self.val_examples = _check_arrays(self.val, "validation", ("data",)) if self.val else 0
        self.test_examples = _check_arrays(self.test, "test", ("data",)) if self.test else 0
        if self.train_batches == 0:
            raise DataError(
                f"batch_size {self.batch_size} is larger than the {self.train_examples} "
                "training examples, so an epoch has no full batch",
                ("data", "batch_size"),
                f"use a batch_size of at most {self.train_examples}, or drop_remainder: false",
            )

    @property
    def train_batches(self) -> int:
        return _num_batches(self.train_examples, self.batch_size, self.drop_remainder)

    @property
    def val_batches(self) -> int | None:
        if not self.val:
            return None
        return _num_batches(self.val_examples, self.batch_size, drop_remainder=False)

    @property
    def test_batches(self) -> int | None:
        if not self.test:
            return None
        return _num_batches(self.test_examples, self.batch_size, drop_remainder=False)

    @property
    def has_val(self) -> bool:
        return bool(self.val) and self.val_examples > 0

    @property
    def has_test(self) -> bool:
        return bool(self.test) and self.test_examples > 0

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example order of training epoch `epoch` (0-based): a function of seed and epoch."""
        if not self.shuffle:
            return np.arange(self.train_examples)
        rng = np.random.default_rng([self.seed, _SHUFFLE_TAG, epoch])
        return rng.permutation(self.train_examples)

    def train_iterator(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Epoch `epoch`'s batches from batch `start` on: the batches before it are never
        gathered (a resumed run seeks, it does not replay)."""
        size = self.batch_size
        batches = self.train_batches
        start = min(max(start, 0), batches)
        order = self.epoch_order(epoch)[start * size : batches * size]
        return self._batches(self.train, order, batches - start)

    def val_iterator(self) -> Iterator[Batch]:
        if not self.val:
            raise DataError("this data source has no validation data", ("validation",))
        return self._batches(self.val, None, self.val_batches or 0)

    def test_iterator(self) -> Iterator[Batch]:
        """A pass over the whole test split, in file order."""
        if not self.test:
            raise DataError("this data source has no test data", ("data",))
        return self._batches(self.test, None, self.test_batches or 0)

    def sample_batch(self) -> Batch:
        rows = self.epoch_order(0)[: self.batch_size]
        return {key: value[rows] for key, value in self.train.items()}

    def share_with(self, share: Share) -> None:
        self.share = share

    def _batches(
        self, arrays: dict[str, np.ndarray], order: np.ndarray | None, batches: int
    ) -> Iterator[Batch]:
        """`batches` batches of the examples `order` lists (None: all, in their order), the
        last one possibly short. Alone: one gather of them all, then slices; under several
        processes each batch gathers only this process's rows."""
        size = self.batch_size
        share = self.share
        if share is None:
            if order is not None:
                arrays = {key: value[order] for key, value in arrays.items()}
            for i in range(batches):
                yield {key: value[i * size : (i + 1) * size] for key, value in arrays.items()}
            return
        if order is None:
            order = np.arange(len(next(iter(arrays.values()))))
        for i in range(batches):
            batch = order[i * size : (i + 1) * size]
            rows = batch[share.rows(len(batch))]
            yield share.assemble({key: value[rows] for key, value in arrays.items()}, len(batch))


PYTHON_KEYWORDS = ("epoch", "seed", "process_index", "process_count")
"""What a `python` source's function may take besides the batch size, by keyword."""


def accepted_keywords(fn: Callable[..., Any]) -> frozenset[str]:
    """Which of `PYTHON_KEYWORDS` `fn` takes (all of them if it takes `**kwargs`)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(PYTHON_KEYWORDS)
    names = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return frozenset(names & set(PYTHON_KEYWORDS))


@dataclass
class PythonSource:
    """Batches from user functions `fn(batch_size, **keywords) -> iterator`, called afresh
    each pass. A function gets, by keyword, those of `epoch` (0-based), `seed`,
    `process_index` and `process_count` it takes; under several processes it must take the
    last two, and gets this process's share of the batch size and yields its own rows.

    A python source cannot seek: to resume inside an epoch, `train_iterator(epoch, start)`
    draws and drops the first `start` batches of the function's iterator on the host."""

    train_fn: Callable[..., Iterator[Batch]]
    val_fn: Callable[..., Iterator[Batch]] | None
    batch_size: int
    seed: int = 0
    test_fn: Callable[..., Iterator[Batch]] | None = None
    share: Share | None = field(default=None, init=False)

    @property
    def train_batches(self) -> int | None:
        return None

    @property
    def val_batches(self) -> int | None:
        return None

    @property
    def test_batches(self) -> int | None:
        return None

    @property
    def has_val(self) -> bool:
        return self.val_fn is not None

    @property
    def has_test(self) -> bool:
        return self.test_fn is not None

    def train_iterator(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        return self._batches(self.train_fn, epoch, skip=start)

    def val_iterator(self) -> Iterator[Batch]:
        if self.val_fn is None:
            raise DataError("this data source has no `val` function", ("data", "val"))
        return self._batches(self.val_fn, 0)

    def test_iterator(self) -> Iterator[Batch]:
        """A fresh iterator of the `test` function's batches (called with epoch 0)."""
        if self.test_fn is None:
            raise DataError("this data source has no `test` function", ("data", "test"))
        return self._batches(self.test_fn, 0)

    def sample_batch(self) -> Batch:
        try:
            batch = next(iter(self._call(self.train_fn, 0)))
        except StopIteration:
            raise DataError(
                "the `train` function returned an iterator that yields no batch",
                ("data", "train"),
            ) from None
        return batch  # type: ignore[no-any-return]

    def share_with(self, share: Share) -> None:
        functions = ((self.train_fn, "train"), (self.val_fn, "val"), (self.test_fn, "test"))
        for fn, where in functions:
            if fn is None or share.process_count == 1:
                continue
            missing = {"process_index", "process_count"} - accepted_keywords(fn)
            if missing:
                raise DataError(
                    f"{share.process_count} processes train together, and each must yield "
                    f"only its own rows, but data.{where}'s function does not take "
                    + " and ".join(sorted(missing)),
                    ("data", where),
                    "give it `process_index` and `process_count` keyword parameters and "
                    "yield that process's rows of each batch (its batch_size is already "
                    "the per-process share)",
                )
        self.share = share

    def _call(self, fn: Callable[..., Iterator[Batch]], epoch: int) -> Iterator[Batch]:
        share = self.share
        count = 1 if share is None else share.process_count
        offered = {
            "epoch": epoch,
            "seed": self.seed,
            "process_index": 0 if share is None else share.process_index,
            "process_count": count,
        }
        taken = accepted_keywords(fn)
        return fn(self.batch_size // count, **{k: v for k, v in offered.items() if k in taken})

    def _batches(
        self, fn: Callable[..., Iterator[Batch]], epoch: int, skip: int = 0
    ) -> Iterator[Batch]:
        batches = iter(self._call(fn, epoch))
        if skip > 0:  # drawn and dropped before anything is assembled or placed
            batches = itertools.islice(batches, skip, None)
        share = self.share
        if share is None or share.process_count == 1:
            return batches
        return (share.assemble_local(batch) for batch in batches)


Arrays = dict[str, np.ndarray]


def _held_out(n: int, fraction: float) -> int:
    return math.ceil(round(n * fraction, 9)) if fraction > 0 else 0


def split_by_seed(arrays: Arrays, val_fraction: float, seed: int) -> tuple[Arrays, Arrays | None]:
    """Hold out `ceil(val_fraction * N)` examples chosen by `seed` (scikit-learn's rounding)."""
    train, val, _ = split_three(arrays, val_fraction, 0.0, seed)
    return train, val


def split_three(
    arrays: Arrays, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Arrays, Arrays | None, Arrays | None]:
    """(train, val, test): `ceil(fraction * N)` examples held out for each, chosen by
    `seed`, disjoint. The validation examples are those `split_by_seed` picks, so adding
    a test split takes its examples from training, never from validation."""
    n = _check_arrays(arrays, "source", ("data",))
    n_val, n_test = _held_out(n, val_fraction), _held_out(n, test_fraction)
    if n_val + n_test >= n:
        where = "test_fraction" if n_test else "val_fraction"
        parts = [f"val_fraction {val_fraction}"] + (
            [f"test_fraction {test_fraction}"] if n_test else []
        )
        raise DataError(
            f"{' and '.join(parts)} leave{'' if n_test else 's'} no training examples out of {n}",
            ("data", where),
            "val_fraction + test_fraction must leave some examples for training"
            if n_test
            else None,
        )
    if n_val == 0 and n_test == 0:
        return arrays, None, None
    order = np.random.default_rng(seed).permutation(n)
    picked = (order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :])
    val_idx, test_idx, train_idx = (np.sort(part) for part in picked)

    def take(index: np.ndarray) -> Arrays:
        return {key: value[index] for key, value in arrays.items()}

    return (
        take(train_idx),
        take(val_idx) if n_val else None,
        take(test_idx) if n_test else None,
    )


def _batch_keys(source: str) -> tuple[str, ...]:
    """The batch keys `beagle.catalog` gives the built-in source (the front end reads them)."""
    keys = catalog.SOURCES[source].batch_keys
    assert keys is not None, source
    return keys


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (float32 N×8×8 in 0..16, int32 N), with no download.

    The file ships with scikit-learn; reading it directly skips importing
    `sklearn.datasets` (about a second), and falls back to `load_digits` otherwise.
    """
    found = importlib.util.find_spec("sklearn")
    locations = list(found.submodule_search_locations or []) if found else []
    for folder in locations:
        csv = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits

    raw = load_digits()
    return np.asarray(raw.images, np.float32), np.asarray(raw.target, np.int32)


def digits(
    batch_size: int,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> ArraySource:
    """scikit-learn's bundled 8×8 digits: `image` float32 N×8×8×1 in [0, 1], `label` int32."""
    images, labels = load_digits_arrays()
    image_key, label_key = _batch_keys("digits")
    arrays = {image_key: (images / np.float32(16.0))[..., None], label_key: labels}
    train, val, test = split_three(arrays, val_fraction, test_fraction, seed)
    return ArraySource(train, val, batch_size, seed, shuffle, drop_remainder, test)


def synthetic_arrays(
    task: str,
    *,
    examples: int = 1024,
    features: int = 8,
    classes: int = 2,
    noise: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A linear teacher: `x` ~ N(0, 1); `y = x·w + noise` or the argmax class of noisy scores."""
    x_key, y_key = _batch_keys("synthetic")
    rng = np.random.default_rng([seed, 0xDA7A])
    x = rng.standard_normal((examples, features), dtype=np.float32)
    if task == "regression":
        w = rng.standard_normal((features, 1), dtype=np.float32) / np.sqrt(features)
        eps = rng.standard_normal((examples, 1), dtype=np.float32)
        y = (x @ w + noise * eps).astype(np.float32)
        return {x_key: x, y_key: y}
    if task == "classification":
        w = rng.standard_normal((features, classes), dtype=np.float32)
        eps = rng.standard_normal((examples, classes), dtype=np.float32)
        labels = np.argmax(x @ w + noise * eps, axis=-1).astype(np.int32)
        return {x_key: x, y_key: labels}
    raise DataError(
        f"unknown synthetic task {task!r}",
        ("data", "task"),
        "use 'regression' or 'classification'",
    )


def synthetic(
    batch_size: int,
    *,
    task: str,
    examples: int = 1024,
    features: int = 8,
    classes: int = 2,
    noise: float = 0.1,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> ArraySource:
    """Deterministic synthetic data from `seed`: keys `x` (N×features) and `y`."""
    arrays = synthetic_arrays(
        task, examples=examples, features=features, classes=classes, noise=noise, seed=seed
    )
    train, val, test = split_three(arrays, val_fraction, test_fraction, seed)
    return ArraySource(train, val, batch_size, seed, shuffle, drop_remainder, test)


def _load_npz(path: str, where: tuple[str, ...]) -> dict[str, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"no such file: {path}", where, "paths are relative to the current folder")
    hint = "write it with numpy.savez or numpy.savez_compressed, one array per key"
    try:
        with file.open("rb") as stream:
            magic = stream.read(4)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}", where) from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # an .npz archive is a zip file
        what = "a single .npy array" if magic[:2] == b"\x93N" else "not a zip file"
        raise DataError(
            f"{path} is not a valid .npz archive of arrays ({what})", where, hint
        ) from None
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(file, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    arrays[key] = np.asarray(archive[key])
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise DataError(
                        f"{path} is not a valid .npz archive of arrays: {key!r} holds "
                        "Python objects, not numbers",
                        where,
                        hint + " of a numeric dtype",
                    ) from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{path} is not a valid .npz archive of arrays: {message}", where, hint
        ) from None
    except Exception as error:  # zipfile.BadZipFile and the like
        raise DataError(
            f"{path} is not a valid .npz archive of arrays: {type(error).__name__}: {error}",
            where,
            hint,
        ) from None
    return arrays


def npz(
    batch_size: int,
    *,
    train: str,
    val: str | None = None,
    test: str | None = None,
    seed: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> ArraySource:
    """Arrays from `.npz` files, one array per key with the same first dimension."""
    train_arrays = _load_npz(train, ("data", "train"))
    _check_arrays(train_arrays, "training", ("data", "train"))
    held_out: dict[str, dict[str, np.ndarray] | None] = {}
    for key, path, what in (("val", val, "validation"), ("test", test, "test")):
        arrays = _load_npz(path, ("data", key)) if path else None
        if arrays is not None:
            _check_arrays(arrays, what, ("data", key))
            if set(arrays) != set(train_arrays):
                raise DataError(
                    f"{path} has keys {sorted(arrays)} but {train} has {sorted(train_arrays)}",
                    ("data", key),
                )
        held_out[key] = arrays
    return ArraySource(
        train_arrays,
        held_out["val"],
        batch_size,
        seed,
        shuffle,
        drop_remainder,
        held_out["test"],
    )


def import_function(path: str, where: tuple[str, ...]) -> Callable[..., Any]:
    """Import `package.module:function`, with the current folder on the import path."""
    module_name, _, attribute = path.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise DataError(
            f"cannot import module {module_name!r}: {error}",
            where,
            "run beagle from the folder that holds your package",
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = sorted(n for n in dir(target) if not n.startswith("_"))
            raise DataError(
                f"{module_name} has no attribute {attribute!r}",
                where,
                "it defines: " + ", ".join(names[:20]) if names else None,
            )
        target = getattr(target, part)
    if not callable(target):
        raise DataError(f"{path} is not callable", where)
    return target  # type: ignore[no-any-return]


def python(
    batch_size: int,
    *,
    train: str,
    val: str | None = None,
    test: str | None = None,
    seed: int = 0,
) -> PythonSource:
    """User functions `package.module:function(batch_size, **keywords)` returning a fresh
    iterator (see `PythonSource` for the keywords)."""
    train_fn = import_function(train, ("data", "train"))
    val_fn = import_function(val, ("data", "val")) if val else None
    test_fn = import_function(test, ("data", "test")) if test else None
    return PythonSource(train_fn, val_fn, batch_size, seed, test_fn)


def from_spec(data: Any, seed: int) -> DataSource:
    """Build the source a spec's `data` section names (a `beagle.spec.models` data model)."""
    common = {"seed": seed, "shuffle": data.shuffle, "drop_remainder": data.drop_remainder}
    if data.source == "digits":
        return digits(
            data.batch_size,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            **common,
        )
    if data.source == "synthetic":
        return synthetic(
            data.batch_size,
            task=data.task,
            examples=data.examples,
            features=data.features,
            classes=data.classes,
            noise=data.noise,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            **common,
        )
    if data.source == "npz":
        return npz(data.batch_size, train=data.train, val=data.val, test=data.test, **common)
    if data.source == "python":
        return python(data.batch_size, train=data.train, val=data.val, test=data.test, seed=seed)
    raise DataError(
        f"unknown data source {data.source!r}",
        ("data", "source"),
        "images and grain sources are built by beagle.examples.from_spec",
    )
