"""Folder trees: `ROOT/<split>/<class>/*` or `ROOT/<class>/*`.

Split folder names: train, val (also valid, validation), test. Class folders are matched to the canonical
vocabulary through common synonyms (angry -> anger, happy -> happiness, ...); when any folder name is not
an expression we know, the folder names themselves (sorted) become the class list. With no split folders
the split is made from a seeded hash of each file (or of its `--group-regex` match, so that one subject's
images stay in one split).
"""

from __future__ import annotations

import re
from pathlib import Path

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.classes import SYNONYMS, canonical_subset
from gmenet_cli.data.imageio import read_image
from gmenet_cli.data.sources.base import Record, SourceData, seeded_split
from gmenet_cli.errors import DataError

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(class_dir: Path, root: Path) -> list[Path]:
    out = []
    resolved_root = root.resolve()
    for p in sorted(class_dir.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTS or p.name.startswith("."):
            continue
        if p.is_symlink() and resolved_root not in p.resolve().parents:
            continue  # a symlink out of the dataset root is never followed
        out.append(p)  # directories named like images are kept: they fail to load and are reported
    return out


def scan_tree(
    root: Path, cfg: PrepareConfig, class_of: dict[str, str] | None = None, channels: int = 3, native: int = 112
) -> SourceData:
    """Shared by `folder` and RAF-DB's re-packed layout (`class_of` maps folder name -> class name)."""
    top = _subdirs(root)
    if not top:
        raise DataError("expected class folders (ROOT/<class>/*.jpg) or split folders (ROOT/train/<class>/) under "
                        f"{root}, none found", exit_code=2)
    split_dirs = {SPLIT_NAMES[d.name.lower()]: d for d in top if d.name.lower() in SPLIT_NAMES}
    if split_dirs and len(split_dirs) != len(top):
        others = [d.name for d in top if d.name.lower() not in SPLIT_NAMES]
        raise DataError(f"{root} mixes split folders with other folders ({', '.join(others[:5])}); use one layout")
    groups: list[tuple[str | None, Path]] = []  # (split or None, class dir)
    if split_dirs:
        for split, d in split_dirs.items():
            groups += [(split, c) for c in _subdirs(d)]
    else:
        groups = [(None, c) for c in top]
    if not groups:
        raise DataError(f"no class folders found under the split folders of {root}")
    folder_names = sorted({c.name for _, c in groups})
    if class_of is not None:
        unknown = [n for n in folder_names if n not in class_of]
        if unknown:
            raise DataError(f"unexpected class folder(s) {', '.join(unknown)} under {root}; expected "
                            f"{', '.join(class_of)}")
        names = {n: class_of[n] for n in folder_names}
        classes = canonical_subset(names.values())
    elif all(n.lower() in SYNONYMS for n in folder_names):
        names = {n: SYNONYMS[n.lower()] for n in folder_names}
        classes = canonical_subset(names.values())
    else:
        names = {n: n for n in folder_names}
        classes = folder_names
    pattern = re.compile(cfg.group_regex) if cfg.group_regex else None
    records = []
    for split, class_dir in groups:
        label = classes.index(names[class_dir.name])
        for p in _images(class_dir, root):
            rel = p.relative_to(root).as_posix()
            if split is None:
                key = rel
                if pattern is not None:
                    m = pattern.search(p.name)
                    key = m.group(0) if m else rel
                s = seeded_split(key, cfg.seed, cfg.val_ratio, cfg.test_ratio)
            else:
                s = split
            records.append(Record(id=rel, split=s, label=label, load=lambda p=p: read_image(p, channels), path=str(p)))
    if not records:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found in the class folders under {root}",
                        exit_code=2)
    notes = []
    if not split_dirs:
        group = f", grouped by /{cfg.group_regex}/" if cfg.group_regex else ""
        notes.append(f"seeded split (seed {cfg.seed}, val {cfg.val_ratio}, test {cfg.test_ratio}{group})")
    return SourceData(records, classes, dict(names), channels, native, notes)


def load(root: Path, cfg: PrepareConfig) -> SourceData:
    return scan_tree(root, cfg, channels=3, native=112)
