"""`--save`: annotated copies of the inputs, boxes and labels drawn on them."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def annotate(image: np.ndarray, results: list[dict]) -> np.ndarray:
    out = image.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for r in results:
        if "box" not in r:
            continue
        x, y, w, h = (int(round(v)) for v in r["box"])
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 200, 0), thick)
        cv2.putText(out, f"{r['label']} {r['confidence']:.2f}", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 200, 0), thick, cv2.LINE_AA)
    return out


def save_annotated(save_dir: Path, item_file: str, frame: int | None, image: np.ndarray, results: list[dict],
                   used: set) -> Path:
    """Write an annotated copy under `save_dir` only (names from the input's base name, made unique)."""
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(item_file).stem)[:100] or "image"
    if frame is not None:
        stem += f"_f{frame:06d}"
    name, n = f"{stem}.jpg", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}.jpg"
    used.add(name)
    path = save_dir / name
    ok, enc = cv2.imencode(".jpg", annotate(image, results))
    if ok:
        tmp = save_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(enc.tobytes())
        tmp.replace(path)
    return path
