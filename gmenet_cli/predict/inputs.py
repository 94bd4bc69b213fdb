"""What predict reads: paths, folders, globs and stdin expanded to media files; images decoded once and
videos sampled every N-th frame; optional face boxes from a CSV."""

from __future__ import annotations

import csv
import glob
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from gmenet_cli.data.imageio import ImageError, read_image
from gmenet_cli.data.sources.folder import IMAGE_EXTS
from gmenet_cli.errors import UsageError

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Item:
    """One thing to classify: a decoded image (or video frame) with its face boxes, or an error."""

    file: str
    frame: int | None = None
    image: np.ndarray | None = None
    boxes: list = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    fps: float = 0.0  # video frames: the rate of the frames yielded (for an annotated video)
    carried: bool = False  # a video frame between sampled ones: not classified, shown with the last results


def expand_inputs(sources: list[str], stdin=None) -> tuple[list[str], list[str]]:
    """Paths, directories (recursive), globs and '-' (paths on stdin) -> (files, skipped non-media files)."""
    files, skipped = [], []
    for src in sources:
        if src == "-":
            stream = stdin or sys.stdin
            files += [line.strip() for line in stream if line.strip()]
            continue
        p = Path(src)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
                    files.append(str(q))  # a folder named like an image is kept: it is reported as unreadable
                elif q.is_file() and not q.name.startswith("."):
                    skipped.append(str(q))
            continue
        if is_stream(src):  # webcam index or stream URL: read live
            files.append(src)
            continue
        if not p.exists() and any(ch in src for ch in "*?["):
            matches = sorted(glob.glob(src, recursive=True))
            if matches:
                files += matches
                continue
        files.append(src)  # missing files are reported when read
    return files, skipped


def read_box_csv(path: str) -> dict[str, list]:
    """`--boxes FILE.csv`: rows `file,x,y,w,h` (header optional) -> {file: [(x, y, w, h, 1.0), ...]}."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--boxes file not found: {path}")
    boxes: dict[str, list] = {}
    with open(p, newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or (lineno == 1 and row[0].strip().lower() in ("file", "path", "image")):
                continue
            if len(row) != 5:
                raise UsageError(f"{path}:{lineno}: expected file,x,y,w,h")
            try:
                x, y, w, h = (float(v) for v in row[1:])
            except ValueError:
                raise UsageError(f"{path}:{lineno}: x,y,w,h must be numbers") from None
            boxes.setdefault(row[0].strip(), []).append((x, y, w, h, 1.0))
    return boxes


def is_stream(source: str) -> bool:
    """A webcam index ("0", "1") or a stream URL (rtsp://, http://...): what cv2.VideoCapture opens live."""
    return (source.isdigit() and not Path(source).exists()) or "://" in source


def is_video(source: str) -> bool:
    return is_stream(source) or (Path(source).suffix.lower() in VIDEO_EXTS and Path(source).is_file())


def iter_items(files: list[str], every: int, all_frames: bool = False) -> Iterator[Item]:
    """Decode each input: images once; video files, webcams and streams every `every`-th frame (with
    `all_frames`, the others too, as `carried` items: an annotated video keeps the source's frame rate)."""
    for f in files:
        if is_video(f):
            yield from _frames(f, every, all_frames)
            continue
        try:
            yield Item(f, image=read_image(f, 3))
        except ImageError as e:
            yield Item(f, error=str(e))


def _frames(source: str, every: int, all_frames: bool = False) -> Iterator[Item]:
    """The sampled frames of a video; a skipped frame is only grabbed (read from the file, not converted
    into an image), unless `all_frames` wants it (decoded, marked carried)."""
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        what = ("camera (in use, or no camera with that index)" if source.isdigit()
                else "stream (refused, unreachable or not a video stream)" if "://" in source
                else "video (not a format OpenCV's FFmpeg reads)")
        yield Item(source, error=f"cannot open {what}")
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    rate = (fps if all_frames else fps / every) if fps > 0 else 0.0
    index, any_frame = 0, False
    try:
        while True:
            sampled = index % every == 0
            if sampled or all_frames:
                ok, frame = cap.read()
            else:
                ok, frame = cap.grab(), None
            if not ok:
                break
            any_frame = True
            if sampled or all_frames:
                yield Item(source, frame=index, image=frame, fps=rate, carried=not sampled)
            index += 1
    finally:
        cap.release()
    if not any_frame:
        yield Item(source, error="video has no readable frames")
