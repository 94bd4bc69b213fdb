"""FER2013: the official `fer2013.csv` (header `emotion,pixels,Usage`; 48x48 grayscale as 2304
space-separated values; emotion 0..6 = angry, disgust, fear, happy, sad, surprise, neutral; Usage
Training / PublicTest / PrivateTest -> train / val / test). ROOT may be the CSV itself or its folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.classes import canonical_subset
from gmenet_cli.data.imageio import ImageError
from gmenet_cli.data.sources.base import Record, SourceData, read_text_lines
from gmenet_cli.errors import DataError

EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def _pixels(text: str) -> np.ndarray:
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise ImageError("pixels are not integers") from None
    if values.size != 48 * 48:
        raise ImageError(f"expected 2304 pixel values, got {values.size}")
    if values.min() < 0 or values.max() > 255:
        raise ImageError("pixel values outside 0..255")
    return values.astype(np.uint8).reshape(48, 48)


def load(root: Path, cfg: PrepareConfig) -> SourceData:
    csv_path = root if root.is_file() else root / "fer2013.csv"
    if not csv_path.is_file():
        raise DataError(f"expected fer2013.csv at {csv_path}, not found", exit_code=2)
    if (cfg.classes or 7) != 7:
        raise DataError("fer2013 has exactly 7 classes")
    lines = read_text_lines(csv_path)
    rows = csv.reader(lines)
    header = [h.strip() for h in next(rows, [])]
    if not {"emotion", "pixels", "Usage"} <= set(header):
        raise DataError(f"{csv_path}: expected header emotion,pixels,Usage, got {','.join(header)[:80]}")
    ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("Usage")
    classes = canonical_subset(EMOTIONS)
    records: list[Record] = []
    for lineno, row in enumerate(rows, 2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{csv_path}:{lineno}: expected {len(header)} columns, got {len(row)}")
        try:
            emotion = int(row[ie])
            name = EMOTIONS[emotion] if 0 <= emotion < 7 else None
        except ValueError:
            name = None
        if name is None:
            raise DataError(f"{csv_path}:{lineno}: emotion must be 0..6, got {row[ie]!r}")
        split = USAGE.get(row[iu].strip())
        if split is None:
            raise DataError(f"{csv_path}:{lineno}: Usage must be one of {', '.join(USAGE)}, got {row[iu]!r}")
        index = lineno - 2  # the row index FERPlus file names refer to
        records.append(
            Record(
                id=f"fer2013/{index:07d}",
                split=split,
                label=classes.index(name),
                load=lambda t=row[ip]: _pixels(t),
                path=f"{csv_path}:{lineno}",
            )
        )
    return SourceData(
        records=records,
        classes=classes,
        mapping={str(i): n for i, n in enumerate(EMOTIONS)},
        channels=1,
        native_size=48,
        notes=["splits from Usage: Training->train, PublicTest->val, PrivateTest->test"],
    )
