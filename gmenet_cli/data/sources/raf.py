"""RAF-DB basic.

Official layout: `ROOT/EmoLabel/list_patition_label.txt` (sic, lines like `train_00001.jpg 5`) and aligned
100x100 faces at `ROOT/Image/aligned/train_00001_aligned.jpg`. Labels 1..7 = surprise, fear, disgust,
happiness, sadness, anger, neutral. Also the common re-packed layout `ROOT/{train,test}/{1..7}/*.jpg`.
RAF-DB has no validation split: training selects on `test` (the usual protocol), see the README.
"""

from __future__ import annotations

from pathlib import Path

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.classes import canonical_subset
from gmenet_cli.data.sources.base import Record, SourceData, inside, read_inside, read_text_lines
from gmenet_cli.data.sources.folder import scan_tree
from gmenet_cli.errors import DataError

LABELS = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]  # 1..7
LABEL_FILE = "EmoLabel/list_patition_label.txt"


def load(root: Path, cfg: PrepareConfig) -> SourceData:
    if (cfg.classes or 7) != 7:
        raise DataError("raf (basic) has exactly 7 classes")
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        if (root / "train").is_dir() or (root / "test").is_dir():
            return scan_tree(root, cfg, class_of={str(i + 1): n for i, n in enumerate(LABELS)}, channels=3, native=112)
        raise DataError(f"expected {LABEL_FILE} (or re-packed ROOT/train/1..7/) under {root}, not found", exit_code=2)
    image_dir = root / "Image" / "aligned"
    if not image_dir.is_dir():
        raise DataError(f"expected aligned faces in {image_dir}, not found", exit_code=2)
    classes = canonical_subset(LABELS)
    records = []
    for lineno, line in enumerate(read_text_lines(label_file), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{label_file}:{lineno}: expected 'name label', got {line.strip()[:60]!r}")
        name, raw = parts
        if raw not in {str(i) for i in range(1, 8)}:
            raise DataError(f"{label_file}:{lineno}: label must be 1..7, got {raw!r}")
        split = "train" if name.startswith("train") else "test" if name.startswith("test") else None
        if split is None:
            raise DataError(f"{label_file}:{lineno}: name must start with train_ or test_, got {name!r}")
        stem, _, ext = name.rpartition(".")
        path = inside(image_dir, f"{stem}_aligned.{ext or 'jpg'}")
        records.append(
            Record(id=name, split=split, label=classes.index(LABELS[int(raw) - 1]),
                   load=lambda p=path: read_inside(root, p, 3), path=str(path))
        )
    if not records:
        raise DataError(f"{label_file} lists no images")
    return SourceData(records, classes, {str(i + 1): n for i, n in enumerate(LABELS)}, 3, 112,
                      ["splits from file names: train_* -> train, test_* -> test"])
