"""FERPlus: `FER2013Train|FER2013Valid|FER2013Test/` folders of 48x48 PNGs, each with a `label.csv`.

label.csv has no header; one row per image: `name, "(x, y, w, h)", then 10 vote counts` in the order
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF (Barsoum et al. 2016).
Hard labels, by `label_mode`: majority (also "votes", its older name) = argmax over all 10 columns (ties
to the first); rows whose majority is unknown or NF are dropped (and contempt rows in 7-class mode).
authors = the FERPlus authors' rule (their ferplus.py, "majority" mode): single votes are dropped as
outliers, and a row is kept only if one emotion then holds more than half of the votes. Every store also
keeps each row's vote distribution over the kept classes, for soft-label training (train.soft_labels).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.classes import CANONICAL
from gmenet_cli.data.sources.base import Record, SourceData, inside, read_inside, read_text_lines
from gmenet_cli.errors import DataError

FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
COLUMNS = CANONICAL + ["unknown", "NF"]  # CANONICAL is FERPlus's own column order


def load(root: Path, cfg: PrepareConfig) -> SourceData:
    n_classes = cfg.classes or 8
    if n_classes not in (7, 8):
        raise DataError(f"ferplus supports 7 or 8 classes, not {n_classes}")
    if cfg.label_mode not in ("majority", "votes", "authors"):
        raise DataError(f"ferplus label mode must be majority, authors or votes (= majority), not '{cfg.label_mode}'")
    classes = CANONICAL[:n_classes]
    present = [f for f in FOLDERS if (root / f).is_dir()]
    if not present:
        raise DataError(f"expected FERPlus folders {'/, '.join(FOLDERS)}/ (each with label.csv) under {root}, none "
                        "found", exit_code=2)
    records: list[Record] = []
    dropped: dict[str, int] = {}
    for folder in present:
        label_file = root / folder / "label.csv"
        if not label_file.is_file():
            raise DataError(f"expected {label_file} (FERPlus vote counts), not found", exit_code=2)
        lines = read_text_lines(label_file)
        for lineno, row in enumerate(csv.reader(lines), 1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 12:
                raise DataError(f"{label_file}:{lineno}: expected 12 columns (name, box, 10 votes), got {len(row)}")
            name = row[0].strip()
            try:
                votes = np.array([float(v) for v in row[2:]], dtype=np.float32)
            except ValueError:
                raise DataError(f"{label_file}:{lineno}: vote counts must be numbers: {row[2:]}") from None
            if (votes < 0).any() or not np.isfinite(votes).all():
                raise DataError(f"{label_file}:{lineno}: vote counts must be finite and non-negative")
            major = int(np.argmax(votes))
            if votes.sum() == 0 or major >= 8:
                dropped["unknown/NF majority"] = dropped.get("unknown/NF majority", 0) + 1
                continue
            if cfg.label_mode == "authors" and not _authors_majority(votes):
                dropped["no clear majority (authors' rule)"] = dropped.get("no clear majority (authors' rule)", 0) + 1
                continue
            if major >= n_classes:
                dropped["contempt (7-class mode)"] = dropped.get("contempt (7-class mode)", 0) + 1
                continue
            path = inside(root / folder, name)
            kept = votes[:n_classes]
            dist = kept / kept.sum()
            records.append(
                Record(
                    id=f"{folder}/{name}",
                    split=FOLDERS[folder],
                    label=major,
                    load=lambda p=path: read_inside(root, p, 1),
                    votes=dist,
                    path=str(path),
                )
            )
    return SourceData(
        records=records,
        classes=classes,
        mapping={c: (c if c in classes else "dropped") for c in COLUMNS},
        channels=1,
        native_size=48,
        dropped=dropped,
        notes=[f"splits from folders: {', '.join(f'{f}->{FOLDERS[f]}' for f in present)}"],
    )


def _authors_majority(votes: np.ndarray) -> bool:
    """Barsoum et al.'s majority rule: after dropping single votes, the top emotion holds over half the votes
    (its index is then the plain argmax, which the caller has already checked is an emotion)."""
    v = np.where(votes > 1, votes, 0)
    return v.sum() > 0 and v.max() > 0.5 * v.sum() and int(np.argmax(v)) == int(np.argmax(votes))
