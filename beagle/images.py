"""The folder reader of the `images` source (`beagle.examples.images`): a folder with
one subfolder of PNG or JPEG files per class.

Labels are the sorted subfolder names (their indices, int32); each example is
`{"image": float32 H x W x C in [0, 1], "label": int32}`, decoded with Pillow when it is
read (never the whole folder at once), converted to RGB (`channels: 3`) or grayscale
(`channels: 1`) and resized bilinearly to `image_size`. Hidden files and folders (a
leading `.`) are skipped, and so are files without a `.png`, `.jpg` or `.jpeg` suffix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beagle.data import DataError

__all__ = ["ImageFolder", "image_size", "list_images", "stratified_split"]

SUFFIXES = (".png", ".jpg", ".jpeg")
_SPLIT_TAG = 0x1A6E


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def list_images(
    folder: str, where: tuple[str, ...], classes: list[str] | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(file, label)]) of `folder`; `classes` fixes the names (validation)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"no such folder: {folder}",
            where,
            "give a folder with one subfolder of images per class; paths are relative to "
            "the current folder",
        )
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = classes if classes is not None else found
    if classes is not None and sorted(set(found) - set(classes)):
        extra = ", ".join(sorted(set(found) - set(classes)))
        raise DataError(
            f"{folder} has class folders the training folder lacks: {extra}",
            where,
            "validation classes must be among the training classes: " + ", ".join(classes),
        )
    files: list[tuple[str, int]] = []
    for label, name in enumerate(names):
        sub = root / name
        if not sub.is_dir():
            continue
        for path in sorted(sub.rglob("*")):
            if path.is_file() and path.suffix.lower() in SUFFIXES and _visible(path, root):
                files.append((str(path), label))
    if not files:
        raise DataError(
            f"{folder} holds no images: it needs one subfolder per class with PNG or JPEG "
            f"files in it (found {len(found)} subfolders)",
            where,
            "e.g. train/cat/1.jpg, train/dog/2.png",
        )
    return names, files


@dataclass
class ImageFolder:
    """Random access to decoded images: `folder[i]` reads file i when asked."""

    files: list[tuple[str, int]]
    image_size: tuple[int, int]
    channels: int
    where: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.files[index]
        height, width = self.image_size
        try:
            with Image.open(path) as opened:
                converted = opened.convert("RGB" if self.channels == 3 else "L")
                resized = converted.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            raise DataError(
                f"{path} does not decode as an image: {error}",
                self.where,
                "remove or replace the file; PNG and JPEG files are read",
            ) from None
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        return {"image": pixels, "label": np.asarray(label, np.int32)}

    def __call__(self) -> ImageFolder:
        """Itself: the source's way of (re)building its examples in a worker."""
        return self


def stratified_split(
    files: list[tuple[str, int]], fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Hold out `ceil(fraction * n_c)` files of each class c (at least one left to train),
    chosen by `seed`."""
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    labels = sorted({label for _, label in files})
    for label in labels:
        members = [f for f in files if f[1] == label]
        held = min(math.ceil(round(len(members) * fraction, 9)), len(members) - 1)
        order = np.random.default_rng([seed, _SPLIT_TAG, label]).permutation(len(members))
        chosen = set(order[:held].tolist())
        for i, item in enumerate(members):
            (val if i in chosen else train).append(item)
    return train, val


def image_size(value: Any) -> tuple[int, int]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise DataError(
            f"image_size must be two positive integers [height, width], got {value!r}",
            ("data", "image_size"),
            "e.g. image_size: [32, 32]",
        )
    return int(value[0]), int(value[1])
