"""Video end to end: frames per second and identity switches, on clips made from the shared group photos.

Each clip is 640x480 at 30 fps, made from one photo of ../shared/images/scenes/group (faces from about 15 to
150 px) by moving a camera window over it:

- pan: the window (the photo shrunk so its median face is about 30 px) slides across the photo at
  `--speed` px per frame (faces leave at one edge and enter at the other);
- zoom: the window shrinks from the whole photo to half of it, centred, so faces grow 2x.

The truth comes from the full-size photo: the faces the whole YuNet pyramid finds there, moved into each
frame's pixels; a face counts in a frame when it lies inside it and is 16-60 px wide there (others count
neither way). Each clip runs through the real command line, `gmenet predict CLIP --every K --json`, with
the shipped models, timed from start to exit. For every true face, the track ids of the faces matched to it
(IoU >= 0.3) on the classified frames, in order: each change is an identity switch. Reported: frames per
second end to end (all frames of the clip / wall time, start-up included, and without the start-up of a
one-frame clip), the recall of faces on classified frames, identity switches per 100 matched track-frames.

    python benchmarks/video_eval.py [--every 1,3,5] [--photos 4] [--frames 90]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import SHARED, header

GROUP = SHARED / "images" / "scenes" / "group"
W, H, FPS = 640, 480, 30


def truth_faces(photo: np.ndarray) -> list[tuple]:
    from gmenet_cli.predict.detect import YuNetDetector

    return [b[:4] for b in YuNetDetector(focus=False).detect(photo)]


def camera(kind: str, shape: tuple, faces: list, frames: int, speed: float) -> list[tuple]:
    """-> per frame (x0, y0, width) of the window on the photo (height = width * 3 / 4)."""
    ph, pw = shape[:2]
    if kind == "pan":
        median = float(np.median([max(b[2], b[3]) for b in faces]))
        win = min(pw, ph * 4 / 3, W * median / 30)  # faces about 30 px in the frame
        travel = min(speed * frames * win / W, pw - win)
        y0 = (ph - win * 3 / 4) / 2
        return [((pw - win - travel) / 2 + travel * i / max(frames - 1, 1), y0, win) for i in range(frames)]
    full = min(pw, ph * 4 / 3)
    out = []
    for i in range(frames):
        win = full * (1 - 0.5 * i / max(frames - 1, 1))
        out.append(((pw - win) / 2, (ph - win * 3 / 4) / 2, win))
    return out


def make_clip(photo: np.ndarray, path: Path, views: list[tuple]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for x0, y0, win in views:
        s = W / win
        m = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])
        writer.write(cv2.warpAffine(photo, m, (W, H), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR))
    writer.release()


def in_frame(box, view) -> tuple | None:
    x0, y0, win = view
    s = W / win
    x, y, w, h = (box[0] - x0) * s, (box[1] - y0) * s, box[2] * s, box[3] * s
    if x < 0 or y < 0 or x + w > W or y + h > H or not 16 <= max(w, h) <= 60:
        return None
    return (x, y, w, h)


def iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def predict(clip: Path, every: int) -> tuple[float, list[dict]]:
    cmd = [sys.executable, "-m", "gmenet_cli", "predict", str(clip), "--every", str(every), "--json"]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed: {res.stderr.strip()[-300:]}")
    return wall, [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def score(records: list[dict], truth: list, views: list, every: int) -> tuple[int, int, int, int]:
    """-> (true faces on classified frames, of them found, identity switches, matched track-frames)."""
    by_frame: dict[int, list[dict]] = {}
    for r in records:
        if "box" in r and "frame" in r:
            by_frame.setdefault(r["frame"], []).append(r)
    seen, found, tracks = 0, 0, {}
    for f in range(0, len(views), every):
        gt = {i: b for i, t in enumerate(truth) if (b := in_frame(t, views[f])) is not None}
        dets = by_frame.get(f, [])
        pairs = sorted(((iou(b, d["box"]), i, j) for i, b in gt.items() for j, d in enumerate(dets)), reverse=True)
        used_i, used_j = set(), set()
        for o, i, j in pairs:
            if o >= 0.3 and i not in used_i and j not in used_j:
                used_i.add(i)
                used_j.add(j)
                tracks.setdefault(i, []).append(dets[j].get("track"))
        seen, found = seen + len(gt), found + len(used_i)
    switches = sum(sum(a != b for a, b in zip(ids, ids[1:])) for ids in tracks.values())
    return seen, found, switches, sum(len(ids) for ids in tracks.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", default="1,3,5", help="the --every values to run, comma-separated")
    ap.add_argument("--photos", type=int, default=4, help="how many group photos (the most faces first)")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--speed", type=float, default=2.0, help="pan speed, px per frame in the clip")
    args = ap.parse_args()
    if not GROUP.is_dir():
        sys.exit(f"needs {GROUP} (the shared scenes)")
    photos = []
    for p in sorted(GROUP.glob("*.jpg")):
        img = cv2.imread(str(p))
        faces = truth_faces(img)
        if len(faces) >= 3:
            photos.append((len(faces), p.name, img, faces))
    # mid-sized crowds: 3 to 60 faces (the 700-face stadium would make a clip of specks)
    photos = sorted([p for p in photos if p[0] <= 60], reverse=True)[: args.photos]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.mp4"
        make_clip(photos[0][2], one, camera("zoom", photos[0][2].shape, photos[0][3], 1, args.speed))
        startup = statistics.median(predict(one, 1)[0] for _ in range(3))
        for kind in ("pan", "zoom"):
            for every in (int(v) for v in args.every.split(",")):
                total = [0, 0, 0, 0]
                walls, frames = [], 0
                for _, name, img, faces in photos:
                    views = camera(kind, img.shape, faces, args.frames, args.speed)
                    clip = Path(tmp) / f"{kind}_{name}.mp4"
                    make_clip(img, clip, views)
                    wall, records = predict(clip, every)
                    walls.append(wall)
                    frames += len(views)
                    total = [a + b for a, b in zip(total, score(records, faces, views, every))]
                wall = sum(walls)
                rows.append((kind, every, frames / wall, frames / max(wall - startup * len(walls), 1e-6),
                             total[1] / max(total[0], 1), total[2], 100 * total[2] / max(total[3], 1), total[3]))
    print(header(f"video end to end: {len(photos)} group photos ({', '.join(p[1] for p in photos)}), "
                 f"{args.frames} frames of {W}x{H} at {FPS} fps per clip"))
    print(f"start-up (a one-frame clip): {startup:.2f} s\n")
    print("| clip | --every | frames/s end to end | frames/s beyond start-up | recall (classified frames) "
          "| identity switches | per 100 track-frames | track-frames |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, every, fps, fps_run, recall, sw, per100, tf in rows:
        print(f"| {kind} | {every} | {fps:.1f} | {fps_run:.1f} | {recall:.3f} | {sw} | {per100:.2f} | {tf} |")


if __name__ == "__main__":
    main()
