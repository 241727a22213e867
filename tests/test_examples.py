"""Example sources on grain: an `images` folder trains a CNN; batches seek, do not depend
on the worker count, and a run killed with workers resumes exactly and leaves no worker
behind; `grain` sources and transforms that cannot work are spec errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cli_run import beagle, start, wait_for

from beagle.data import DataError
from beagle.runner import run_spec
from beagle.spec import SpecError, load_spec

CLASSES = ("circle", "cross", "square")

SPEC = """\
version: 1
name: img_cnn
seed: 0
model:
  class: beagle.models:CNN
  args: {{features: [8], num_classes: 3}}
  input: batch.image
  batch_norm: true
  train_flag: train
  outputs: logits
data:
  source: images
  train: train
  val_fraction: 0.2
  image_size: [8, 8]
  batch_size: 16
  transform: aug:flip
  workers: {workers}
optimizer: {{name: adam, learning_rate: 1.0e-2}}
losses:
  ce: {{fn: softmax_cross_entropy, args: {{logits: outputs.logits, labels: batch.label}}}}
metrics:
  accuracy: {{fn: accuracy, args: {{logits: outputs.logits, labels: batch.label}}}}
train: {{epochs: {epochs}}}
{validation}
checkpoint: {{every: 1, keep: 2}}
log: {{plot: false}}
"""

AUG = """\
def flip(example, rng):
    if rng.random() < 0.5:
        example = {**example, "image": example["image"][:, ::-1]}
    return example
"""


def write_images(root: Path, per_class: int = 100) -> None:
    """Three classes of 8x8 images (a red square, a green bar, a blue bar over noise),
    alternately PNG and JPEG, and a hidden junk file that must be skipped."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.uniform(0, 60, (8, 8, 3))
            if label == 0:
                pixels[2:6, 2:6, 0] += 180
            elif label == 1:
                pixels[:, 3:5, 1] += 180
            else:
                pixels[3:5, :, 2] += 180
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
            image.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "train" / "circle" / ".hidden.png").write_bytes(b"not an image")


def project(folder: Path, *, workers: int, epochs: int = 3, validation: bool = True) -> Path:
    (folder / "aug.py").write_text(AUG)
    text = SPEC.format(
        workers=workers, epochs=epochs, validation="validation: {every: 1}" if validation else ""
    )
    (folder / "spec.yaml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_images(root)
    return root


def copy_images(source: Path, target: Path) -> None:
    os.symlink(source / "train", target / "train")


@pytest.fixture(scope="module")
def reference(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted `beagle run` on 0 workers: what interrupted runs must equal."""
    folder = project(tmp_path_factory.mktemp("reference"), workers=0)
    copy_images(image_root, folder)
    done = beagle(folder, "run", "spec.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def short_reference(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs without validation (each pass starts the workers anew: keep them few)."""
    folder = project(tmp_path_factory.mktemp("short"), workers=0, epochs=2, validation=False)
    copy_images(image_root, folder)
    done = beagle(folder, "run", "spec.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr
    return folder


def history(folder: Path) -> dict[str, list[float]]:
    return json.loads((folder / "runs/img_cnn/history.json").read_text())  # type: ignore[no-any-return]


def test_images_folder_trains_a_cnn_well_above_chance(reference: Path) -> None:
    result = history(reference)
    assert result["val_accuracy"][-1] >= 0.9  # chance is 1/3
    classes = json.loads((reference / "runs/img_cnn/classes.json").read_text())
    assert classes == list(CLASSES)


def children(pid: int) -> set[int]:
    """Every process below `pid` (grain's workers and multiprocessing's tracker)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = {int(k) for k in task.read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("rerun_workers", [2, 0])
def test_sigkill_mid_epoch_with_workers_then_rerun_matches_and_leaves_no_worker(
    short_reference: Path, image_root: Path, tmp_path: Path, rerun_workers: int
) -> None:
    reference = short_reference
    project(tmp_path, workers=2, epochs=2, validation=False)
    copy_images(image_root, tmp_path)
    process = start(tmp_path, "run", "spec.yaml", "--no-progress")
    checkpoints = tmp_path / "runs/img_cnn/checkpoints"
    wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob("checkpoint_*")), 120)
    workers: set[int] = set()
    wait_for(lambda: len(workers.update(children(process.pid)) or workers) >= 2, 60)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL  # it was still training when killed
    deadline = time.monotonic() + 5.0
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "workers outlived their parent by 5 s"
    project(tmp_path, workers=rerun_workers, epochs=2, validation=False)
    resumed = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "leaked" not in resumed.stderr
    assert history(tmp_path) == history(reference)
    from test_cli_run import assert_same_state, final_state

    assert_same_state(final_state(tmp_path, "spec.yaml"), final_state(reference, "spec.yaml"))


STRAY_SCRIPT = """\
import time

from beagle.examples import ExampleSource, GrainExamples

if __name__ == "__main__":
    source = ExampleSource(GrainExamples("datasets:big", ("data", "train"), 8, {}), None, 8,
                           workers=2)
    batches = source.train_iterator(epoch=0)
    next(batches)
    print("reading", flush=True)
    time.sleep(600)  # the workers fill their buffers and wait for this process to read
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_waiting_on_a_full_buffer_exit_within_5_s_of_a_sigkill(in_tmp: Path) -> None:
    (in_tmp / "stray.py").write_text(STRAY_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "stray.py"], cwd=in_tmp, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "reading\n"
        below = children(process.pid)  # two workers and multiprocessing's resource tracker
        assert len(below) >= 2
        time.sleep(1.0)  # let the workers fill their buffers: now they block on a full queue
        assert all(alive(pid) for pid in below)
    finally:
        process.kill()
        process.wait(timeout=30)
    deadline = time.monotonic() + 5.0
    while any(alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in below if alive(pid)], "processes outlived their parent by 5 s"


CLOSE_SCRIPT = """\
from beagle.examples import ExampleSource, GrainExamples

if __name__ == "__main__":
    source = ExampleSource(GrainExamples("datasets:big", ("data", "train"), 8, {}), None, 8,
                           workers=2)
    batches = source.train_iterator(epoch=0)
    next(batches)
    next(batches)
    source.close()  # early, with batches in flight
    print("closed", flush=True)
"""


def test_closing_a_stream_early_exits_cleanly_without_a_leak_warning(in_tmp: Path) -> None:
    (in_tmp / "close.py").write_text(CLOSE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-W", "always", "close.py"],
        cwd=in_tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "closed\n"
    assert "leak" not in done.stderr and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------- in-process sources


def image_source(root: Path, batch_size: int = 16, **options: Any) -> Any:
    from beagle.examples import images

    return images(batch_size, train=str(root / "train"), image_size=[8, 8], seed=3, **options)


def flip(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    if rng.random() < 0.5:
        return {**example, "image": example["image"][:, ::-1]}
    return example


def same_batches(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


class Numbered:
    """Examples that carry their own index (picklable: grain's workers rebuild it)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self) -> Numbered:
        return self

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"i": np.asarray(index, np.int64)}


def draw(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {**example, "draw": np.asarray(rng.integers(2**62), np.int64)}


def test_batches_are_a_function_of_seed_epoch_and_index_whatever_the_workers() -> None:
    from beagle.examples import ExampleSource

    zero = ExampleSource(Numbered(100), None, 8, seed=3, transform=draw)
    two = ExampleSource(Numbered(100), None, 8, seed=3, transform=draw, workers=2)
    epoch1 = list(zero.train_iterator(epoch=1))
    epoch2 = list(zero.train_iterator(epoch=2))
    assert len(epoch1) == zero.train_batches == 100 // 8
    order1 = np.concatenate([b["i"] for b in epoch1])
    order2 = np.concatenate([b["i"] for b in epoch2])
    assert len(set(order1)) == 96 and not np.array_equal(order1, order2)  # reshuffled
    draws1 = dict(zip(order1, np.concatenate([b["draw"] for b in epoch1]), strict=True))
    draws2 = dict(zip(order2, np.concatenate([b["draw"] for b in epoch2]), strict=True))
    assert len(set(draws1.values())) == 96  # every example its own stream
    assert all(draws1[i] != draws2[i] for i in set(draws1) & set(draws2))  # and epoch
    assert same_batches(list(zero.train_iterator(epoch=1, start=7)), epoch1[7:])
    assert same_batches(list(two.train_iterator(epoch=1, start=5)), epoch1[5:])
    assert same_batches(list(two.train_iterator(epoch=2)), epoch2)  # the stream goes on
    two.close()


def test_validation_covers_every_example_with_a_smaller_last_batch(image_root: Path) -> None:
    source = image_source(image_root, val_fraction=0.2, drop_remainder=True)
    batches = list(source.val_iterator())
    sizes = [len(b["label"]) for b in batches]
    assert sum(sizes) == source.val_examples == 60  # 20 of each class, stratified
    assert sizes == [16, 16, 16, 12] and source.val_batches == 4
    assert np.bincount(np.concatenate([b["label"] for b in batches])).tolist() == [20, 20, 20]


def test_a_file_that_does_not_decode_is_named_also_from_a_worker(tmp_path: Path) -> None:
    write_images(tmp_path, per_class=20)
    broken = tmp_path / "train" / "cross" / "broken.png"  # example 40 of 61, unshuffled
    broken.write_bytes(b"\x89PNG but not really")
    source = image_source(tmp_path, shuffle=False, workers=2)  # its first batch decodes
    with pytest.raises(DataError, match="broken.png does not decode") as caught:
        list(source.train_iterator(epoch=0))
    assert caught.value.field == ("data", "train")  # kept across the worker's pickling
    with pytest.raises(DataError, match="broken.png does not decode"):
        image_source(tmp_path, batch_size=64, drop_remainder=False)  # checked before training


def test_beagle_run_names_a_file_that_does_not_decode_mid_epoch(tmp_path: Path) -> None:
    write_images(tmp_path, per_class=20)
    (tmp_path / "train" / "cross" / "broken.png").write_bytes(b"\x89PNG but not really")
    project(tmp_path, workers=0, epochs=1, validation=False)  # a worker's error: see above
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec.read_text().replace("  workers: 0", "  workers: 0\n  shuffle: false"))
    done = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert done.returncode == 1, done.stderr
    assert "training failed" in done.stderr and "broken.png does not decode" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


# ----------------------------------------------------------------- spec errors, exit 2

BASE = """\
version: 1
name: errs
seed: 0
model:
  class: beagle.models:MLP
  args: {{features: [4, 2]}}
  input: batch.x
data:
{data}
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  ce: {{fn: softmax_cross_entropy, args: {{logits: outputs.outputs, labels: batch.y}}}}
train: {{epochs: 1}}
{rest}
"""

DATASETS = """\
import grain
import numpy as np

def examples(n):
    rng = np.random.default_rng(n)
    return [{"x": rng.normal(size=(3,)).astype(np.float32), "y": np.int32(i % 2)}
            for i in range(n)]

def good(seed):
    return grain.MapDataset.source(examples(64))

def val():
    return grain.MapDataset.source(examples(20))

def iterator_only():
    return grain.MapDataset.source(examples(64)).to_iter_dataset()

def batched():
    return grain.MapDataset.source(examples(64)).batch(8)

def numbered(process_index, process_count):
    return grain.MapDataset.range(40).map(
        lambda i: {"i": np.int64(i), "p": np.int64(process_index), "n": np.int64(process_count)}
    )

def big():
    return grain.MapDataset.source(examples(20000))

def widen(example, rng):
    n = 3 if rng.random() < 0.5 else 4
    return {**example, "x": np.zeros((n,), np.float32)}

def widen_all(example, rng):
    return {**example, "x": np.zeros((5,), np.float32)}
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "datasets.py").write_text(DATASETS)
    sys.modules.pop("datasets", None)
    return tmp_path


IMAGES_BASE = BASE.replace("batch.x", "batch.image").replace("batch.y", "batch.label")


def run_error(folder: Path, data: str, rest: str = "") -> str:
    spec = folder / "spec.yaml"
    base = IMAGES_BASE if "source: images" in data else BASE
    spec.write_text(
        base.format(data=textwrap.indent(textwrap.dedent(data).strip(), "  "), rest=rest)
    )
    with pytest.raises(SpecError) as caught:
        run_spec(load_spec(spec, (), imports="import"), restart=False, progress=False)
    assert not (folder / "runs").exists()  # nothing written
    return str(caught.value)


def line_of(folder: Path, text: str) -> int:
    lines = (folder / "spec.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_grain_source_trains_from_a_map_dataset(in_tmp: Path) -> None:
    spec = in_tmp / "spec.yaml"
    data = "source: grain\ntrain: datasets:good\nval: datasets:val\nbatch_size: 8"
    spec.write_text(BASE.format(data=textwrap.indent(data, "  "), rest="validation: {every: 1}\n"))
    result = run_spec(load_spec(spec, (), imports="import"), restart=False, progress=False)
    assert result.steps == 8 and len(result.history["val_loss"]) == 1


class SecondOfTwo:
    """This process as process 1 of 2, without a second process: the rows `share.rows`
    gives are the back half of a batch, and `assemble` returns them as they are."""

    process_index = 1
    process_count = 2

    def rows(self, length: int) -> slice:
        return slice(length // 2, length)

    def assemble(self, rows: Any, length: int) -> Any:
        return {**rows, "length": length}

    def assemble_local(self, rows: Any) -> Any:
        return rows


def test_a_shared_source_reads_only_its_rows_and_tells_the_function(in_tmp: Path) -> None:
    from beagle.examples import grain_source

    whole = list(grain_source(8, train="datasets:numbered", seed=1).train_iterator(epoch=2))
    source = grain_source(8, train="datasets:numbered", seed=1)
    source.share_with(SecondOfTwo())
    shared = list(source.train_iterator(epoch=2))
    assert [b["i"].tolist() for b in shared] == [b["i"][4:].tolist() for b in whole]
    assert all(b["length"] == 8 for b in shared)
    assert {int(p) for b in shared for p in b["p"]} == {1}  # given process_index
    assert {int(n) for b in shared for n in b["n"]} == {2}


@pytest.mark.parametrize(
    ("function", "words"),
    [("iterator_only", "iterator-only dataset"), ("batched", "returns batches")],
)
def test_grain_source_that_is_not_random_access_or_batched_is_a_spec_error(
    in_tmp: Path, function: str, words: str
) -> None:
    message = run_error(in_tmp, f"source: grain\ntrain: datasets:{function}\nbatch_size: 8")
    assert f"spec.yaml:{line_of(in_tmp, 'train: datasets')}:" in message
    assert words in message


def test_transform_whose_shapes_vary_is_a_spec_error_at_transform(in_tmp: Path) -> None:
    message = run_error(
        in_tmp, "source: grain\ntrain: datasets:good\ntransform: datasets:widen\nbatch_size: 8"
    )
    assert f"spec.yaml:{line_of(in_tmp, 'transform:')}:" in message
    assert "differ in keys, dtypes or shapes" in message


def test_transform_that_differs_from_validation_is_a_spec_error_at_transform(
    in_tmp: Path,
) -> None:
    data = (
        "source: grain\ntrain: datasets:good\nval: datasets:val\n"
        "transform: datasets:widen_all\nbatch_size: 8"
    )
    message = run_error(in_tmp, data, "validation: {every: 1}\n")
    assert f"spec.yaml:{line_of(in_tmp, 'transform:')}:" in message
    assert "differ from validation examples" in message


@pytest.mark.parametrize("size", ["[8]", "[8, 0]", "[8, 8.5]", "[8, 8, 8]"])
def test_image_size_that_is_not_two_positive_integers_is_a_spec_error(
    in_tmp: Path, size: str
) -> None:
    (in_tmp / "train" / "a").mkdir(parents=True)
    data = f"source: images\ntrain: train\nimage_size: {size}\nbatch_size: 8"
    message = run_error(in_tmp, data)
    assert f"spec.yaml:{line_of(in_tmp, 'image_size')}:" in message
    assert "data.image_size" in message and message.count("spec.yaml:") == 1
    with pytest.raises(SpecError):  # the spec's models reject it: `beagle check` does too
        load_spec(in_tmp / "spec.yaml", (), imports="import")


def test_empty_image_folder_is_a_spec_error_at_train(in_tmp: Path) -> None:
    (in_tmp / "train" / "a").mkdir(parents=True)
    (in_tmp / "train" / "a" / ".hidden.png").write_bytes(b"skipped")
    data = "source: images\ntrain: train\nimage_size: [8, 8]\nbatch_size: 8"
    message = run_error(in_tmp, data)
    assert f"spec.yaml:{line_of(in_tmp, 'train: train')}:" in message
    assert "holds no images" in message and message.count("spec.yaml:") == 1


def test_importing_beagle_data_does_not_import_grain() -> None:
    code = "import sys, beagle.data; print('grain' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_eval_covers_every_test_image(reference: Path, image_root: Path, tmp_path: Path) -> None:
    """`data.test: DIR` for `images`: `beagle eval --split test` reads every file of it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference / "runs/img_cnn", run, ignore=shutil.ignore_patterns("eval"))
    spec = run / "spec.yaml"
    text = spec.read_text().replace("  val_fraction: 0.2\n", "  val_fraction: 0.2\n  test: test\n")
    spec.write_text(text)
    os.symlink(image_root / "train", tmp_path / "test")
    os.symlink(image_root / "train", tmp_path / "train")
    shutil.copy(reference / "aug.py", tmp_path / "aug.py")  # the spec's transform
    done = beagle(tmp_path, "eval", str(run), "--split", "test", "--checkpoint", "latest")
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (run / "eval").glob("*-test.json")
    record = json.loads(written.read_text())
    folder = image_root / "train"
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert record["examples"] == len(files) and len(files) % 16  # a partial last batch too
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0
