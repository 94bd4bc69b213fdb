"""`--save`: annotated copies of the inputs: images as JPEGs, videos as one annotated video each.

Drawn for small faces in crowds: each box in its expression's colour with a short label (the first three
letters and the confidence, "hap .93") *outside* it (above, or below at the top edge), text and lines sized
from the image rather than the box, so a 12 px face still gets a readable label without hiding its
neighbours; a legend of the expressions shown, with their colours and full names, in a strip added below
the picture, so it never hides a face.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# One colour per canonical expression (BGR), distinct and readable on photos (Okabe-Ito based).
COLOURS = {
    "neutral": (200, 200, 200), "happiness": (66, 228, 240), "surprise": (233, 180, 86), "sadness": (178, 114, 0),
    "anger": (0, 94, 213), "disgust": (115, 158, 0), "fear": (167, 121, 204), "contempt": (0, 159, 230),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, (0, 200, 0))


def annotate(image: np.ndarray, results: list[dict]) -> np.ndarray:
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    H, W = out.shape[:2]
    scale = max(0.33, min(W, H) / 1400)  # text size from the image, not the face
    thick = max(1, round(scale * 2))
    labels = []
    for r in results:
        if "box" not in r:
            continue
        label = r.get("smoothed_label", r["label"])
        conf = r.get("smoothed_confidence", r["confidence"])
        labels.append(label)
        x, y, w, h = (int(round(v)) for v in r["box"])
        cv2.rectangle(out, (x, y), (x + w, y + h), colour(label), max(1, min(thick, w // 8 or 1)))
        text = f"{label[:3]} {conf:.2f}".replace(" 0.", " .").replace(" 1.00", " 1.0") + (
            f" #{r['track']}" if "track" in r else ""
        )
        _label(out, text, x, y, y + h, scale, thick, colour(label))
    return _with_legend(out, [c for c in COLOURS if c in labels] + sorted(set(labels) - set(COLOURS)), scale, thick)


def _label(img: np.ndarray, text: str, x: int, top: int, bottom: int, scale: float, thick: int, col) -> None:
    """Text on a filled background just outside the box: above it, or below where there is no room."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    pad = max(1, thick)
    y0 = top - th - base - 2 * pad
    if y0 < 0:
        y0 = bottom + 1
    x0 = min(max(0, x), max(0, img.shape[1] - tw - 2 * pad))
    cv2.rectangle(img, (x0, y0), (x0 + tw + 2 * pad, y0 + th + base + 2 * pad), col, -1)
    cv2.putText(img, text, (x0 + pad, y0 + pad + th), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)


def _with_legend(img: np.ndarray, labels: list[str], scale: float, thick: int) -> np.ndarray:
    """The image with a dark strip below it: a colour swatch and the name of each expression shown."""
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, thick)
    line = th + base + 8
    strip = np.full((line, img.shape[1], 3), 30, np.uint8)
    x = 6
    for c in labels or ["no face found"]:
        tw = cv2.getTextSize(c, FONT, scale, thick)[0][0]
        if x + line + tw > img.shape[1]:
            break
        if c in labels:
            cv2.rectangle(strip, (x, 4), (x + line - 10, line - 6), colour(c), -1)
            x += line - 4
        cv2.putText(strip, c, (x, 4 + th), FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
        x += tw + 16
    return np.vstack([img, strip])


def _safe_stem(item_file: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(item_file).stem)[:100] or "image"


def save_annotated(
    save_dir: Path, item_file: str, frame: int | None, image: np.ndarray, results: list[dict], used: set
) -> Path:
    """Write an annotated copy under `save_dir` only (names from the input's base name, made unique)."""
    stem = _safe_stem(item_file) + (f"_f{frame:06d}" if frame is not None else "")
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


class Saver:
    """`--save DIR`: images -> DIR/<name>.jpg; each video (file, webcam, stream) -> DIR/<name>_annotated.mp4
    of its sampled frames, written as they come and closed when the video ends (or on Ctrl-C)."""

    def __init__(self, save_dir: Path):
        self.dir, self.used = save_dir, set()
        self.videos: dict[str, tuple] = {}  # source -> (writer, path, size)
        self.written: list[Path] = []

    def add(self, item, results: list[dict]) -> None:
        if item.image is None:
            return
        if item.frame is None:
            self.written.append(save_annotated(self.dir, item.file, None, item.image, results, self.used))
            return
        frame = annotate(item.image, results)
        if item.file not in self.videos:
            self._open(item, frame)
        writer, _, size = self.videos[item.file]
        writer.write(frame if frame.shape[1::-1] == size else cv2.resize(frame, size))

    def _open(self, item, frame: np.ndarray) -> None:
        stem = "camera" + item.file if item.file.isdigit() else _safe_stem(item.file)
        name, n = f"{stem}_annotated.mp4", 1
        while name in self.used:
            n += 1
            name = f"{stem}_annotated_{n}.mp4"
        self.used.add(name)
        size = frame.shape[1::-1]
        writer = cv2.VideoWriter(str(self.dir / name), cv2.VideoWriter_fourcc(*"mp4v"), item.fps or 5.0, size)
        self.videos[item.file] = (writer, self.dir / name, size)

    def close(self) -> list[Path]:
        for writer, path, _ in self.videos.values():
            writer.release()
            self.written.append(path)
        self.videos.clear()
        return self.written
