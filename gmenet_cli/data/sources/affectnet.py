"""AffectNet: `ROOT/training.csv` and `ROOT/validation.csv` (header with subDirectory_filePath, face_x,
face_y, face_width, face_height, ..., expression). Images live under the folder the CSV paths are relative
to: `ROOT/Manually_Annotated_Images/` (the official archive) or `ROOT/` itself. Expression 0..10 = neutral,
happy, sad, surprise, fear, disgust, anger, contempt, none, uncertain, non-face: 0..6 kept (7 classes,
default) or 0..7 (`--classes 8`); 8..10 dropped. training -> train, validation -> val.
"""

from __future__ import annotations

import csv
from pathlib import Path

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.classes import canonical_subset
from gmenet_cli.data.sources.base import Record, SourceData, crop_box, inside, read_inside, read_text_lines
from gmenet_cli.errors import DataError

EXPRESSIONS = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
FILES = {"training.csv": "train", "validation.csv": "val"}
NEEDED = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"]


def load(root: Path, cfg: PrepareConfig) -> SourceData:
    n_classes = cfg.classes or 7
    if n_classes not in (7, 8):
        raise DataError(f"affectnet supports 7 or 8 classes, not {n_classes}")
    present = [f for f in FILES if (root / f).is_file()]
    if not present:
        raise DataError(f"expected {' and '.join(FILES)} under {root}, not found", exit_code=2)
    image_root = root / "Manually_Annotated_Images"
    if not image_root.is_dir():
        image_root = root
    classes = canonical_subset(EXPRESSIONS[:n_classes])
    records, dropped = [], {}
    for fname in present:
        path = root / fname
        rows = csv.reader(read_text_lines(path))
        header = [h.strip() for h in next(rows, [])]
        missing = [c for c in NEEDED if c not in header]
        if missing:
            raise DataError(f"{path}: header lacks column(s) {', '.join(missing)}")
        idx = {c: header.index(c) for c in NEEDED}
        for lineno, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{lineno}: expected {len(header)} columns, got {len(row)}")
            try:
                x, y, w, h = (float(row[idx[c]]) for c in ("face_x", "face_y", "face_width", "face_height"))
                expr = int(row[idx["expression"]])
            except ValueError:
                raise DataError(f"{path}:{lineno}: face box and expression must be numbers") from None
            if not 0 <= expr <= 10:
                raise DataError(f"{path}:{lineno}: expression must be 0..10, got {expr}")
            if expr >= n_classes:
                reason = "none/uncertain/non-face" if expr >= 8 else "contempt (7-class mode)"
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            rel = row[idx["subDirectory_filePath"]].strip()
            img_path = inside(image_root, rel)
            records.append(
                Record(
                    id=rel,
                    split=FILES[fname],
                    label=classes.index(EXPRESSIONS[expr]),
                    load=lambda p=img_path, b=(x, y, x + w, y + h): crop_box(
                        read_inside(root, p, 3), *b, margin=cfg.margin
                    ),
                    path=str(img_path),
                )
            )
    return SourceData(
        records,
        classes,
        {str(i): (EXPRESSIONS[i] if i < n_classes else "dropped") for i in range(11)},
        3,
        112,
        ["splits from files: training.csv->train, validation.csv->val"],
        dropped,
    )
