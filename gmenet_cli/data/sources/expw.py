"""ExpW (Expression in-the-Wild): `ROOT/label/label.lst` + photos in `ROOT/image/origin/`.

Each line: `image_name face_id top left right bottom confidence label` (label 0..6 = angry, disgust,
fear, happy, sad, surprise, neutral). Faces are cropped from the boxes (square, `prepare.margin` extra).
ExpW has no official split: a seeded split by *photo* (all faces of one photo land in one split), with
`prepare.val_ratio` / `prepare.test_ratio`, recorded in the manifest.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.classes import canonical_subset
from gmenet_cli.data.sources.base import (
    Record,
    SourceData,
    crop_box,
    inside,
    read_inside,
    read_text_lines,
    seeded_split,
)
from gmenet_cli.errors import DataError

EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


@lru_cache(maxsize=4)  # faces of one photo are consecutive in label.lst: decode each photo once
def _photo(root: Path, path: Path):
    return read_inside(root, path, 3)


def load(root: Path, cfg: PrepareConfig) -> SourceData:
    if (cfg.classes or 7) != 7:
        raise DataError("expw has exactly 7 classes")
    label_file = root / "label" / "label.lst"
    if not label_file.is_file():
        raise DataError(f"expected ExpW labels at {label_file}, not found", exit_code=2)
    image_dir = root / "image" / "origin"
    if not image_dir.is_dir():
        raise DataError(f"expected ExpW photos in {image_dir}, not found", exit_code=2)
    classes = canonical_subset(EMOTIONS)
    records = []
    for lineno, line in enumerate(read_text_lines(label_file), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise DataError(f"{label_file}:{lineno}: expected 8 fields (name face_id top left right bottom conf "
                            f"label), got {len(parts)}")
        name, face_id = parts[0], parts[1]
        try:
            top, left, right, bottom = (float(v) for v in parts[2:6])
            label = int(parts[7])
        except ValueError:
            raise DataError(f"{label_file}:{lineno}: box and label must be numbers") from None
        if not 0 <= label <= 6:
            raise DataError(f"{label_file}:{lineno}: label must be 0..6, got {label}")
        path = inside(image_dir, name)
        box = (left, top, right, bottom)
        records.append(
            Record(
                id=f"{name}#{face_id}",
                split=seeded_split(name, cfg.seed, cfg.val_ratio, cfg.test_ratio),
                label=classes.index(EMOTIONS[label]),
                load=lambda p=path, b=box: crop_box(_photo(root, p), *b, margin=cfg.margin),
                path=str(path),
            )
        )
    if not records:
        raise DataError(f"{label_file} lists no faces")
    return SourceData(records, classes, {str(i): n for i, n in enumerate(EMOTIONS)}, 3, 112,
                      [f"seeded split by photo (seed {cfg.seed}, val {cfg.val_ratio}, test {cfg.test_ratio})"])
