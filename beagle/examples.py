"""Example sources: per-example data (`images`, `grain`) on grain's pipeline.

An example source holds a random-access collection of examples (`len(examples)`,
`examples[i]` -> a dict of numpy arrays) and turns it into batches, one pipeline stage a
line:

    order   = permutation of the examples from (seed, epoch)       # `epoch_order`
    batch i = order[i*B : (i+1)*B], this process's rows of it      # `share.rows`
    example = transform(examples[j], rng(seed, epoch, j))          # `BatchReader`
    batch   = numpy stack of the examples                          # `BatchReader`
    global  = share.assemble(batch)                                # several processes

Each batch is a pure function of `(seed, epoch, i)`: that is what makes a run killed
mid-epoch resume exactly, whatever `data.workers` was before or after, and why
`train_iterator(epoch, start)` can seek straight to batch `start` (grain's own iterator
state is not used: a state saved with 2 workers does not load with 0).

grain runs the batches: `data.workers: 0` reads them in this process, with no threads;
`workers: N` reads whole batches in N worker processes (`mp_prefetch`), with a bounded
read-ahead. One long-lived grain iterator per split (`BatchStream`) runs through epoch
after epoch, so workers start once; it is reopened only where the loop asks for a batch
other than the next one (a resumed run, a capped validation pass). grain is imported
only here, and only once a source of this kind is built, so `import beagle.data` stays
light.

Worker processes are started with multiprocessing's `spawn`: a script that trains with
`workers > 0` from Python must guard its entry point with `if __name__ == "__main__":`
(beagle's CLI has one). Each worker asks Linux to kill it when its parent dies
(`PR_SET_PDEATHSIG`), so a SIGKILLed run leaves no worker behind.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from beagle.data import (
    Batch,
    DataError,
    Share,
    accepted_keywords,
    import_function,
)
from beagle.images import ImageFolder, list_images, stratified_split
from beagle.images import image_size as image_size_of

__all__ = [
    "BatchStream",
    "ExampleSource",
    "Examples",
    "GrainExamples",
    "PassReader",
    "from_spec",
    "grain_source",
    "images",
    "stack_examples",
]

_SHUFFLE_TAG = 0x5EED  # the same per-epoch stream as the array sources' shuffle
_TRANSFORM_TAG = 0x7A4F  # keeps the transform's streams apart from the shuffle's


class Examples(Protocol):
    """A random-access collection of examples (`grain.MapDataset` is one)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


Transform = Callable[..., Any]


def _structure(example: Mapping[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {key: (str(value.dtype), tuple(value.shape)) for key, value in example.items()}


def _describe(structure: Mapping[str, tuple[str, tuple[int, ...]]]) -> str:
    return ", ".join(f"{k}: {d}{list(s)}" for k, (d, s) in sorted(structure.items()))


def as_example(value: Any, what: str, where: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`value` as a dict of numpy arrays, or a `DataError` saying what it is instead."""
    if not isinstance(value, Mapping):
        raise DataError(
            f"{what} is a {type(value).__name__}, not a dict of arrays",
            where,
            "return one example as a dict such as {'image': array, 'label': 3}",
        )
    try:
        return {str(key): np.asarray(leaf) for key, leaf in value.items()}
    except Exception as error:
        raise DataError(f"{what} holds a value that is not an array: {error}", where) from None


def stack_examples(
    examples: Sequence[Mapping[str, np.ndarray]], what: str, where: tuple[str, ...]
) -> Batch:
    """One batch from examples that share keys, dtypes and shapes (else a `DataError`)."""
    first = _structure(examples[0])
    for example in examples[1:]:
        other = _structure(example)
        if other != first:
            raise DataError(
                f"{what} differ in keys, dtypes or shapes: {{{_describe(first)}}} and "
                f"{{{_describe(other)}}}",
                where,
                "every example must have the same keys, dtypes and shapes, so that they "
                "batch together",
            )
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


@dataclass
class PassReader:
    """Reads batch `g` of an endless run of passes over a split: pass `g // batches`
    (the epoch), batch `g % batches` of it, this process's rows, each example read and
    transformed, then stacked. Picklable, so grain's worker processes run it; `examples`
    is rebuilt there by `make_examples`."""

    make_examples: Callable[[], Examples]
    count: int  # examples in the split
    batch_size: int
    batches: int  # batches in one pass
    shuffle: bool
    seed: int
    transform: Transform | None
    with_rng: bool  # a training transform: fn(example, rng)
    transform_field: tuple[str, ...]
    full_rows: slice | None = None  # this process's rows of a full batch (None: all)
    last_rows: slice | None = None  # ... of the last, smaller batch of a pass
    _examples: Examples | None = field(default=None, repr=False)
    _orders: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_examples"] = None  # rebuilt in the worker, never pickled
        state["_orders"] = {}
        return state

    def examples(self) -> Examples:
        if self._examples is None:
            self._examples = self.make_examples()
        return self._examples

    def order(self, epoch: int) -> np.ndarray:
        """The example order of pass `epoch`: a function of seed and epoch."""
        if epoch not in self._orders:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, _SHUFFLE_TAG, epoch])
                order = rng.permutation(self.count)
            else:
                order = np.arange(self.count)
            self._orders = {epoch: order}  # one epoch at a time
        return self._orders[epoch]

    def indices(self, g: int) -> tuple[int, np.ndarray]:
        """(epoch, this process's example indices) of batch `g`."""
        epoch, i = divmod(g, self.batches)
        batch = self.order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        rows = self.full_rows if len(batch) == self.batch_size else self.last_rows
        return epoch, batch if rows is None else batch[rows]

    def example(self, index: int, epoch: int) -> dict[str, np.ndarray]:
        """Example `index` of the split, transformed for pass `epoch`."""
        example = as_example(self.examples()[int(index)], f"example {index}", ("data", "train"))
        if self.transform is None:
            return example
        if self.with_rng:
            rng = np.random.default_rng([self.seed, epoch, int(index), _TRANSFORM_TAG])
            out = self.transform(example, rng)
        else:
            out = self.transform(example)
        return as_example(out, f"the transform's output for example {index}", self.transform_field)

    def read(self, indices: np.ndarray, epoch: int) -> Batch:
        """The batch of these examples, transformed for pass `epoch`."""
        examples = [self.example(j, epoch) for j in indices]
        where = self.transform_field if self.transform is not None else ("data", "train")
        what = "the transformed examples" if self.transform is not None else "the examples"
        return stack_examples(examples, what, where)

    def __call__(self, g: int) -> Batch:
        epoch, indices = self.indices(g)
        return self.read(indices, epoch)


def _die_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
    """In a grain worker: be killed when the process that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nobody would tell us
        os._exit(1)


def _mark_absl_flags_parsed() -> None:
    """grain reads absl flags; a program that never ran `absl.app` has not parsed them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


_ENDLESS = 2**53  # batch numbers of a stream: more than any run reads


class BatchStream:
    """One long-lived grain iterator over batches `first, first + 1, ...` of a
    `PassReader`: worker processes start once, not for every pass, and read ahead across
    the end of a pass. `next` is the number of the batch it yields next."""

    def __init__(self, reader: PassReader, first: int, workers: int, prefetch: int) -> None:
        import functools

        import grain

        _mark_absl_flags_parsed()
        # No reader threads and no read-ahead inside the pipeline: `prefetch` bounds it.
        options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        dataset = grain.MapDataset.range(first, _ENDLESS).map(reader).to_iter_dataset(options)
        if workers > 0:
            # Batches come back pickled, not in shared memory: grain leaves the shared
            # memory of batches still in flight when an iterator closes (leak warnings).
            no_shared_memory = grain.experimental.DatasetOptions(min_shm_size=2**62)
            dataset = grain.experimental.WithOptionsIterDataset(dataset, no_shared_memory)
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=workers,
                    per_worker_buffer_size=max(1, math.ceil(prefetch / workers)),
                ),
                worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        self.next = first
        self._iterator: Any = iter(dataset)

    def take(self, count: int) -> Iterator[Batch]:
        for _ in range(count):
            batch = next(self._iterator)
            self.next += 1
            yield batch

    def close(self) -> None:
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None


@dataclass
class ExampleSource:
    """Batches of a random-access example collection, on grain (see the module docstring).

    `make_train` / `make_val` / `make_test` build the collections (in this process, and
    again in each worker); `transform(example, rng)` applies to training,
    `val_transform(example)` to validation and test. Validation and test cover every
    example: the last batch may be smaller. Call `close()` to stop the worker processes
    early (they also stop at exit).
    """

    make_train: Callable[[], Examples]
    make_val: Callable[[], Examples] | None
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True
    transform: Transform | None = None
    val_transform: Transform | None = None
    workers: int = 0
    prefetch: int = 2
    train_field: tuple[str, ...] = ("data", "train")
    classes: list[str] | None = None  # class names by label, for `classes.json`
    make_test: Callable[[], Examples] | None = None
    share: Share | None = field(default=None, init=False)
    train_examples: int = field(init=False)
    val_examples: int = field(init=False)

    def __post_init__(self) -> None:
        self._train = self.make_train()
        self._val = self.make_val() if self.make_val is not None else None
        self._test = self.make_test() if self.make_test is not None else None
        self.train_examples = len(self._train)
        self.val_examples = len(self._val) if self._val is not None else 0
        self.test_examples = len(self._test) if self._test is not None else 0
        self._streams: dict[str, BatchStream] = {}
        if self.train_examples == 0:
            raise DataError("the training data holds no examples", self.train_field)
        if self.train_batches == 0:
            raise DataError(
                f"batch_size {self.batch_size} is larger than the {self.train_examples} "
                "training examples, so an epoch has no full batch",
                ("data", "batch_size"),
                f"use a batch_size of at most {self.train_examples}, or drop_remainder: false",
            )
        self._check_transforms()
        atexit.register(self.close)

    @property
    def train_batches(self) -> int:
        n, size = self.train_examples, self.batch_size
        return n // size if self.drop_remainder else math.ceil(n / size)

    @property
    def val_batches(self) -> int | None:
        if self._val is None:
            return None
        return math.ceil(self.val_examples / self.batch_size)  # every example, always

    @property
    def has_val(self) -> bool:
        return self.val_examples > 0

    @property
    def test_batches(self) -> int | None:
        if self._test is None:
            return None
        return math.ceil(self.test_examples / self.batch_size)  # every example

    @property
    def has_test(self) -> bool:
        return self.test_examples > 0

    def _split(self, split: str) -> tuple[Callable[[], Examples] | None, Examples | None]:
        """The collection-maker and this process's collection of `split`."""
        if split == "train":
            return self.make_train, self._train
        if split == "test":
            return self.make_test, self._test
        return self.make_val, self._val

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example order of training epoch `epoch`: a function of seed and epoch."""
        return self._reader("train").order(epoch)

    def _reader(self, split: str) -> PassReader:
        train = split == "train"
        make, examples = self._split(split)
        assert make is not None and examples is not None
        count = len(examples)
        batches = self.train_batches if train else math.ceil(count / self.batch_size)
        full = last = None
        if self.share is not None:
            full = self.share.rows(self.batch_size)
            if count % self.batch_size:
                last = self.share.rows(count % self.batch_size)
        reader = PassReader(
            make_examples=make,
            count=count,
            batch_size=self.batch_size,
            batches=batches,
            shuffle=self.shuffle and train,
            seed=self.seed,
            transform=self.transform if train else self.val_transform,
            with_rng=train,
            transform_field=("data", "transform" if train else "val_transform"),
            full_rows=full,
            last_rows=last,
        )
        reader._examples = examples  # this process's copy; workers build their own
        return reader

    def _batches(self, split: str, first: int, count: int) -> Iterator[Batch]:
        """`count` batches from batch number `first` of `split`'s stream, which is
        reopened there unless it is already there."""
        stream = self._streams.get(split)
        if stream is None or stream.next != first:
            if stream is not None:
                stream.close()
            reader = self._reader(split)
            stream = self._streams[split] = BatchStream(reader, first, self.workers, self.prefetch)
        return self._assembled(stream.take(count), stream, self._reader_batches(split))

    def _reader_batches(self, split: str) -> tuple[int, int]:
        if split == "train":
            return self.train_examples, self.train_batches
        count = self.test_examples if split == "test" else self.val_examples
        return count, math.ceil(count / self.batch_size)

    def _assembled(
        self, batches: Iterator[Batch], stream: BatchStream, sizes: tuple[int, int]
    ) -> Iterator[Batch]:
        share = self.share
        count, per_pass = sizes
        for batch in batches:
            if share is None:
                yield batch
            else:
                i = (stream.next - 1) % per_pass
                yield share.assemble(batch, min(self.batch_size, count - i * self.batch_size))

    def train_iterator(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Epoch `epoch`'s batches from batch index `start` on (a resumed run seeks there)."""
        per_epoch = self.train_batches
        return self._batches("train", epoch * per_epoch + start, per_epoch - start)

    def val_iterator(self) -> Iterator[Batch]:
        if self._val is None or self.make_val is None:
            raise DataError("this data source has no validation data", ("validation",))
        per_pass = self.val_batches or 0
        stream = self._streams.get("val")
        passes = 0 if stream is None else math.ceil(stream.next / per_pass)
        return self._batches("val", passes * per_pass, per_pass)

    def test_iterator(self) -> Iterator[Batch]:
        """One pass over every test example (untransformed but for `val_transform`)."""
        if self._test is None or self.make_test is None:
            raise DataError("this data source has no test data", ("data", "test"))
        return self._batches("test", 0, self.test_batches or 0)

    def sample_batch(self) -> Batch:
        reader = self._reader("train")
        return reader.read(reader.order(0)[: self.batch_size], 0)

    def share_with(self, share: Share) -> None:
        """Read only this process's rows from now on; a `grain` function that takes
        `process_index`/`process_count` is called again with them (it must still return
        the whole dataset: beagle picks the rows)."""
        self.close()
        self.share = share
        splits = (self.make_train, self.make_val, self.make_test)
        makers = [m for m in splits if isinstance(m, GrainExamples)]
        for make in makers:
            make.keywords.update(
                process_index=share.process_index, process_count=share.process_count
            )
        if makers:
            self._train = self.make_train()
            self._val = self.make_val() if self.make_val is not None else None
            self._test = self.make_test() if self.make_test is not None else None
            sizes = tuple(
                len(e) if e is not None else 0 for e in (self._train, self._val, self._test)
            )
            if sizes != (self.train_examples, self.val_examples, self.test_examples):
                raise DataError(
                    f"the dataset's length changed with process_index {share.process_index}: "
                    "every process must get the whole dataset",
                    self.train_field,
                    "return the same examples in every process; beagle gives each its rows",
                )

    def close(self) -> None:
        """Stop the streams (and their worker processes)."""
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()

    def _check_transforms(self) -> None:
        """Before training: the transforms keep every checked example's keys, dtypes and
        shapes, and training examples match validation's (a `DataError` at the key)."""
        train = self._reader("train")
        train_batch = train.read(train.order(0)[: self.batch_size], 0)
        if self._val is None or self.val_examples == 0 or self.make_val is None:
            return
        val = self._reader("val")
        val_batch = val.read(np.arange(min(self.batch_size, self.val_examples)), 0)
        got = {k: (str(v.dtype), v.shape[1:]) for k, v in train_batch.items()}
        want = {k: (str(v.dtype), v.shape[1:]) for k, v in val_batch.items()}
        if got != want:
            field_ = ("data", "transform") if self.transform is not None else self.train_field
            if self.val_transform is not None and self.transform is None:
                field_ = ("data", "val_transform")
            raise DataError(
                "training examples"
                + (" after data.transform" if self.transform is not None else "")
                + f" ({_describe_batch(got)}) differ from validation examples"
                + (" after data.val_transform" if self.val_transform is not None else "")
                + f" ({_describe_batch(want)})",
                field_,
                "training and validation examples must have the same keys, dtypes and shapes"
                + ("; give data.val_transform to match" if self.val_transform is None else ""),
            )


def _describe_batch(structure: Mapping[str, tuple[str, tuple[int, ...]]]) -> str:
    return ", ".join(f"{k}: {d}{list(s)}" for k, (d, s) in sorted(structure.items()))


# ------------------------------------------------------------------------- grain sources


@dataclass
class GrainExamples:
    """Calls the user's `package.module:function` (with the keywords it takes) and checks
    that it returns an unbatched random-access dataset. Picklable: workers call it again."""

    path: str
    where: tuple[str, ...]
    batch_size: int
    keywords: dict[str, int]

    def __call__(self) -> Examples:
        fn = import_function(self.path, self.where)
        taken = accepted_keywords(fn)
        dataset = fn(**{k: v for k, v in self.keywords.items() if k in taken})
        name = type(dataset).__name__
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            kind = (
                "an iterator-only dataset"
                if hasattr(dataset, "__iter__") or hasattr(dataset, "__next__")
                else "not a dataset"
            )
            raise DataError(
                f"{self.path} returned a {name}, {kind}: beagle needs random access "
                "(`len(ds)` and `ds[i]`) to shuffle, share and resume exactly",
                self.where,
                "return a grain.MapDataset (e.g. grain.MapDataset.source(records)) or an "
                "object with __len__ and __getitem__, not an IterDataset or a generator",
            )
        if len(dataset) > 0:
            first = as_example(dataset[0], f"{self.path}'s example 0", self.where)
            leading = {v.shape[0] if v.ndim else None for v in first.values()}
            if leading == {self.batch_size} and self.batch_size > 1:
                raise DataError(
                    f"{self.path} returns batches: every array of its example 0 has a leading "
                    f"axis of {self.batch_size}, data.batch_size",
                    self.where,
                    "return single unbatched examples (no .batch()); beagle shuffles and "
                    "batches them",
                )
        return dataset  # type: ignore[no-any-return]


def images(
    batch_size: int,
    *,
    train: str,
    val: str | None = None,
    test: str | None = None,
    val_fraction: float = 0.0,
    image_size: tuple[int, int] | list[int],
    channels: int = 3,
    seed: int = 0,
    **options: Any,
) -> ExampleSource:
    """An `ExampleSource` over an image folder (see `beagle.images`)."""
    size = image_size_of(image_size)
    classes, files = list_images(train, ("data", "train"))
    if val is not None:
        _, val_files = list_images(val, ("data", "val"), classes)
    elif val_fraction > 0:
        files, val_files = stratified_split(files, val_fraction, seed)
    else:
        val_files = []
    make_train = ImageFolder(files, size, channels, ("data", "train"))
    make_val = ImageFolder(val_files, size, channels, ("data", "val")) if val_files else None
    make_test = None
    if test is not None:
        _, test_files = list_images(test, ("data", "test"), classes)
        make_test = ImageFolder(test_files, size, channels, ("data", "test"))
    return ExampleSource(
        make_train, make_val, batch_size, seed, classes=classes, make_test=make_test, **options
    )


def grain_source(
    batch_size: int,
    *,
    train: str,
    val: str | None = None,
    test: str | None = None,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    **options: Any,
) -> ExampleSource:
    """User datasets `package.module:function(**keywords)` returning random-access examples."""
    keywords = {"seed": seed, "process_index": process_index, "process_count": process_count}
    make_train = GrainExamples(train, ("data", "train"), batch_size, keywords)
    make_val = GrainExamples(val, ("data", "val"), batch_size, keywords) if val else None
    make_test = GrainExamples(test, ("data", "test"), batch_size, keywords) if test else None
    return ExampleSource(make_train, make_val, batch_size, seed, make_test=make_test, **options)


def load_transform(path: str | None, where: tuple[str, ...]) -> Transform | None:
    """The function `data.transform` or `data.val_transform` names (None when not set)."""
    return import_function(path, where) if path else None


def from_spec(data: Any, seed: int) -> ExampleSource:
    """Build the `images` or `grain` source a spec's `data` section names (the others are
    `beagle.data.from_spec`'s; `beagle.catalog.SOURCES[name].per_example` tells which)."""
    options: dict[str, Any] = {
        "seed": seed,
        "shuffle": data.shuffle,
        "drop_remainder": data.drop_remainder,
        "transform": load_transform(data.transform, ("data", "transform")),
        "val_transform": load_transform(data.val_transform, ("data", "val_transform")),
        "workers": data.workers,
        "prefetch": data.prefetch,
    }
    if data.source == "images":
        return images(
            data.batch_size,
            train=data.train,
            val=data.val,
            test=data.test,
            val_fraction=data.val_fraction,
            image_size=data.image_size,
            channels=data.channels,
            **options,
        )
    if data.source == "grain":
        return grain_source(
            data.batch_size, train=data.train, val=data.val, test=data.test, **options
        )
    raise DataError(f"{data.source!r} is not an example source", ("data", "source"))
