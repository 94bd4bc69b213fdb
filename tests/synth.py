"""Tiny synthetic datasets in each source's real on-disk layout (never real images).

Each class gets a distinct, learnable pattern (a bright square at a class-specific place, plus noise), so
a few epochs on a few dozen faces move accuracy off chance and end-to-end tests can check that.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np


def face(label: int, size: int = 48, seed: int = 0, color: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 90, (size, size), dtype=np.int64)
    cells = 4
    cell = size // cells
    r, c = divmod(label % (cells * cells), cells)
    img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] += 150
    img = np.clip(img, 0, 255).astype(np.uint8)
    if color:
        img = np.stack([img, np.roll(img, 1, 0), img // 2 + 60], -1).astype(np.uint8)
    return img


def make_ferplus(root: Path, per_class: int = 4, splits=("FER2013Train", "FER2013Valid"), classes: int = 8,
                 extra_rows: list | None = None) -> Path:
    """FERPlus: folders of PNGs + header-less label.csv with 10 vote columns."""
    for s_i, folder in enumerate(splits):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        n = 0
        for label in range(classes):
            for k in range(per_class):
                name = f"fer{s_i:02d}{n:05d}.png"
                cv2.imwrite(str(d / name), face(label, 48, seed=hash((folder, n)) % 2**32))
                votes = [0] * 10
                votes[label] = 7
                votes[(label + 1) % 8] = 3
                rows.append([name, "(0, 0, 48, 48)", *votes])
                n += 1
        # one "unknown" majority and one NF row, which majority mode must drop
        for col in (8, 9):
            name = f"fer{s_i:02d}{n:05d}.png"
            cv2.imwrite(str(d / name), face(0, 48, seed=n))
            votes = [0] * 10
            votes[col] = 10
            rows.append([name, "(0, 0, 48, 48)", *votes])
            n += 1
        rows += extra_rows or []
        with open(d / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def make_fer2013(root: Path, per_class: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        i = 0
        for usage in ("Training", "PublicTest", "PrivateTest"):
            for label in range(7):
                for _ in range(per_class):
                    w.writerow([label, " ".join(str(v) for v in face(label, 48, seed=i).flatten()), usage])
                    i += 1
    return root


RAF_LABELS = 7


def make_raf(root: Path, per_class: int = 3) -> Path:
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    lines = []
    for split in ("train", "test"):
        n = 1
        for label in range(1, 8):
            for _ in range(per_class):
                name = f"{split}_{n:05d}.jpg"
                cv2.imwrite(
                    str(root / "Image" / "aligned" / f"{split}_{n:05d}_aligned.jpg"), face(label - 1, 100, n, True)
                )
                lines.append(f"{name} {label}")
                n += 1
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def make_raf_repacked(root: Path, per_class: int = 2) -> Path:
    for split in ("train", "test"):
        for label in range(1, 8):
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                cv2.imwrite(str(d / f"{split}_{label}_{k}.jpg"), face(label - 1, 100, k, True))
    return root


def make_expw(root: Path, photos: int = 12) -> Path:
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / "image" / "origin").mkdir(parents=True, exist_ok=True)
    lines = []
    for p in range(photos):
        photo = np.full((200, 300, 3), 30, np.uint8)
        name = f"photo_{p:03d}.jpg"
        for face_id in range(2):
            label = (p * 2 + face_id) % 7
            top, left = 40, 20 + face_id * 140
            photo[top : top + 100, left : left + 100] = face(label, 100, p * 2 + face_id, True)
            lines.append(f"{name} {face_id} {top} {left} {left + 100} {top + 100} 0.99 {label}")
        cv2.imwrite(str(root / "image" / "origin" / name), photo)
    (root / "label" / "label.lst").write_text("\n".join(lines) + "\n")
    return root


def make_affectnet(root: Path, per_class: int = 2) -> Path:
    images = root / "Manually_Annotated_Images"
    header = [
        "subDirectory_filePath",
        "face_x",
        "face_y",
        "face_width",
        "face_height",
        "facial_landmarks",
        "expression",
        "valence",
        "arousal",
    ]
    for fname in ("training.csv", "validation.csv"):
        rows = []
        for expr in range(11):
            for k in range(per_class):
                rel = f"{expr}/{fname[:5]}_{expr}_{k}.jpg"
                (images / str(expr)).mkdir(parents=True, exist_ok=True)
                img = np.full((160, 160, 3), 50, np.uint8)
                img[30:130, 30:130] = face(expr % 8, 100, k, True)
                cv2.imwrite(str(images / rel), img)
                rows.append([rel, 30, 30, 100, 100, "1;2;3", expr, 0.1, 0.2])
        with open(root / fname, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return root


def make_folder(
    root: Path, per_class: int = 5, with_splits: bool = False, names=("angry", "happy", "neutral", "sad")
) -> Path:
    for i, name in enumerate(names):
        for k in range(per_class):
            split = ("train" if k < per_class - 1 else "val") if with_splits else None
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"subj{k % 3}_{name}_{k}.png"), face(i, 64, k, True))
    return root
