"""What every dataset adapter provides, and the helpers they share.

An adapter reads one dataset layout *as its users hold it on disk* and yields `Record`s: a stable id (it
seeds LR synthesis and seeded splits), a split, a canonical label, optionally a vote distribution, and
how to load the face pixels. Adapters never write anything; `prepare` does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gmenet_cli.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Record:
    id: str  # stable and unique within the source, e.g. "FER2013Train/fer0000000.png"
    split: str  # train | val | test
    label: int  # index into Source.classes
    load: Callable[[], np.ndarray]  # -> (H, W) or (H, W, 3) uint8 face crop; raises ImageError
    votes: np.ndarray | None = None  # (K,) float32 distribution over Source.classes (FERPlus)
    path: str = ""  # for the skipped-images report


@dataclass
class SourceData:
    records: list[Record]
    classes: list[str]  # canonical names, canonical order
    mapping: dict  # the source's own label -> canonical name (or "dropped")
    channels: int  # 1 (grayscale sources) or 3
    native_size: int  # default HR size for this source
    notes: list[str] = field(default_factory=list)  # e.g. "split made with seed 0, ratios 0.8/0.1/0.1"
    dropped: dict = field(default_factory=dict)  # reason -> count (rows not used, e.g. "unknown/NF")


def inside(root: Path, name: str) -> Path:
    """Join a label-file entry onto `root`, refusing entries that escape it (`../`, absolute paths).

    Lexical only (fast enough for 100k-row label files); a *symlink* that leads out of the root is
    caught when the file is read, by `read_inside`."""
    if not name or "\x00" in name:
        raise DataError(f"empty or invalid file name in label file: {name!r}")
    if name.startswith(("/", "\\")) or Path(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"label file names an absolute path, refused: {name}")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise DataError(f"label file names a path outside the dataset root, refused: {name}")
    return root / name


def read_inside(root: Path, path: Path, channels: int):
    """Read an image listed by a label file; a symlink that resolves outside `root` is refused."""
    from gmenet_cli.data.imageio import ImageError, read_image

    if os.path.islink(path):
        real = os.path.realpath(path)
        root_real = os.path.realpath(root)
        if os.path.commonpath([real, root_real]) != root_real:
            raise ImageError("symlink points outside the dataset root, refused")
    return read_image(path, channels)


def seeded_split(key: str, seed: int, val_ratio: float, test_ratio: float) -> str:
    """Assign a split from a hash of (seed, key): independent of file order, stable across runs."""
    digest = hashlib.blake2b(f"split|{seed}|{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    if u < test_ratio:
        return "test"
    if u < test_ratio + val_ratio:
        return "val"
    return "train"


def read_text_lines(path: Path) -> list[str]:
    """Label files: UTF-8 (BOM tolerated), CRLF tolerated; anything else is a clear DataError."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start})") from None
    return text.splitlines()


def crop_box(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, margin: float) -> np.ndarray:
    """Square crop around a box (plus margin), padded with edge pixels where it leaves the image."""
    from gmenet_cli.data.imageio import ImageError

    w, h = x1 - x0, y1 - y0
    if w <= 1 or h <= 1:
        raise ImageError(f"face box too small or inverted ({x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f})")
    side = max(w, h) * (1.0 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_i = max(2, int(round(side)))
    H, W = img.shape[:2]
    if left >= W or top >= H or left + side_i <= 0 or top + side_i <= 0:
        raise ImageError("face box lies outside the image")
    pad = [(max(0, -top), max(0, top + side_i - H)), (max(0, -left), max(0, left + side_i - W))]
    if img.ndim == 3:
        pad.append((0, 0))
    if any(p for pair in pad for p in pair):
        img = np.pad(img, pad, mode="edge")
        top += pad[0][0]
        left += pad[1][0]
    return img[top : top + side_i, left : left + side_i]
