"""The predict pipeline: decode -> detect (or boxes from a CSV, or the whole image) -> square crop with a
margin -> the classifier's channels and face size -> batches across inputs -> one result dict per face, or
one per faceless or unreadable input, in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from gmenet_cli.data.imageio import ImageError
from gmenet_cli.predict.classify import Classifier
from gmenet_cli.predict.detect import FaceDetector, detect_faces
from gmenet_cli.predict.inputs import Item, iter_items
from gmenet_cli.predict.track import Tracker

UNCERTAIN = "uncertain"  # the label of a face whose confidence is below --min-confidence


def run(files: list[str], clf: Classifier, detector: FaceDetector | None, margin: float, every: int,
        batch_size: int, boxes_csv: dict | None = None, smooth: int = 5,
        min_confidence: float = 0.0, all_frames: bool = False) -> Iterator[tuple[Item, list[dict]]]:
    """Yield (item, results) in input order: one result dict per face, or one for a faceless/unreadable input.

    Faces are gathered across inputs into batches of `batch_size` per LR size before classification. Video
    frames' faces are tracked (track id + a label smoothed over `smooth` sampled frames). On Ctrl-C the
    faces already found are still classified and yielded before the interrupt goes on. With `all_frames`,
    a video's frames between sampled ones come too, as `carried` items with the last sampled frame's
    results (for an annotated video at the source's frame rate; nothing is classified for them)."""
    pending: list[tuple[Item, list]] = []  # items waiting for their faces' probabilities
    trackers: dict[str, Tracker] = {}
    last: dict[str, list[dict]] = {}  # each video's latest sampled results, shown on the frames carried after it

    def flush():
        _classify(pending, clf, batch_size)
        for item, faces in pending:
            results = list(_results(item, faces, clf, min_confidence))
            if item.frame is not None and faces:
                trackers.setdefault(item.file, Tracker(clf.classes, smooth, min_confidence=min_confidence)).update(
                    results
                )
            if item.frame is not None:
                last[item.file] = results
            yield item, results
        pending.clear()

    try:
        for item in iter_items(files, every, all_frames):
            if item.carried:
                yield from flush()
                yield item, last.get(item.file, [])
                continue
            if item.error:
                yield from flush()
                yield item, [{"file": item.file, "error": item.error}]
                continue
            pending.append((item, _faces(item, clf, detector, margin, boxes_csv)))
            if sum(len(f) for _, f in pending) >= batch_size or item.frame is not None:
                yield from flush()  # video frames go out at once: a live stream must not wait for a batch
    except KeyboardInterrupt:
        yield from flush()
        raise
    yield from flush()


def _faces(item: Item, clf: Classifier, detector: FaceDetector | None, margin: float, boxes_csv: dict | None) -> list:
    """Find the item's faces (detector, --boxes or the whole image) and cut their crops."""
    img = item.image
    h, w = img.shape[:2]
    if boxes_csv is not None:
        found = boxes_csv.get(item.file, boxes_csv.get(Path(item.file).name, []))
    elif detector is None:
        found = [(0.0, 0.0, float(w), float(h), 1.0)]
    else:
        found = detect_faces(detector, img)
        if not found:
            smallest = detector.smallest_face(img.shape)
            if max(h, w) < 3 * max(smallest, 16):  # an image this small is most likely a face crop itself
                item.note = (f"no face found in this {w}x{h} image; if it is a face crop, pass --no-detect "
                             "(it is then read as one face)")
            else:
                item.note = (f"no face found (faces under about {smallest:.0f}px are below what the detector "
                             "looks for; see --min-face)")
    faces = []
    for b in found:
        try:
            crop, size = clf.prepare_crop(img, b, 0.0 if detector is None and boxes_csv is None else margin)
        except ImageError:
            continue
        faces.append(
            {
                "box": [round(v, 1) for v in b[:4]],
                "score": round(float(b[4]), 4),
                "crop": crop,
                "size": size,
                "face_px": round(max(b[2], b[3]), 1),
            }
        )
    return faces


def _classify(pending: list, clf: Classifier, batch_size: int) -> None:
    """Probabilities for every pending face not classified yet, in batches of one crop size (a flush cut
    short by Ctrl-C can be run again)."""
    groups: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    for i, (_, faces) in enumerate(pending):
        for j, face in enumerate(faces):
            if "probs" not in face:
                groups.setdefault(face["size"], []).append((i, j, face["crop"]))
    for entries in groups.values():
        for start in range(0, len(entries), batch_size):
            chunk = entries[start : start + batch_size]
            for (i, j, _), p in zip(chunk, clf.classify([c for _, _, c in chunk])):
                pending[i][1][j]["probs"] = p
                del pending[i][1][j]["crop"]


def _results(item: Item, faces: list, clf: Classifier, min_confidence: float = 0.0) -> Iterator[dict]:
    base = {"file": item.file}
    if item.frame is not None:
        base["frame"] = item.frame
    if not faces:
        yield {**base, "faces": 0, **({"note": item.note} if item.note else {})}
        return
    for j, face in enumerate(faces):
        p = face["probs"]
        k = int(np.argmax(p))
        sure = float(p[k]) >= min_confidence
        yield {
            **base,
            "face": j,
            "box": face["box"],
            "label": clf.classes[k] if sure else UNCERTAIN,
            **({} if sure else {"guess": clf.classes[k]}),
            "confidence": round(float(p[k]), 4),
            "probs": {c: round(float(v), 4) for c, v in zip(clf.classes, p)},
            "face_px": face["face_px"],
            "input_px": face["size"],
            "detector_score": face["score"],
        }
