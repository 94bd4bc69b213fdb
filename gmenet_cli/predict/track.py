"""Faces followed across the sampled frames of a video: one id per person, and a label smoothed over time.

An online tracker in the manner of SORT (Bewley et al. 2016), kept small: each track has a box and a
velocity (centre and size change per sampled frame, smoothed), so where a face should be in the next
sampled frame is predicted; faces are matched to the predictions greedily, best pairs first, by overlap
(IoU at least `min_iou`) or, for small or fast faces that no longer overlap their prediction (a pan or a
zoom between sampled frames, `--every 5`), by centre distance (at most `max_dist` face sizes) with a size
change of at most `max_ratio`. An unmatched face starts a new track; a track unmatched for more than
`max_age` sampled frames ends. Each track keeps the probabilities of its last `window` frames: their mean
is the smoothed label, steadier than any single low-resolution frame.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _centre_size(box) -> np.ndarray:
    x, y, w, h = box[:4]
    return np.array([x + w / 2, y + h / 2, max(w, h)], dtype=np.float64)


class Tracker:
    VELOCITY_MEMORY = 0.5  # weight of the old velocity when a match gives a new one (exponential smoothing)

    def __init__(self, classes: list[str], window: int = 5, min_iou: float = 0.3, max_age: int = 3,
                 min_confidence: float = 0.0, max_dist: float = 1.5, max_ratio: float = 1.6):
        self.classes, self.window, self.min_iou, self.max_age = classes, window, min_iou, max_age
        self.min_confidence = min_confidence  # a smoothed label below it is "uncertain", as a frame's label
        self.max_dist, self.max_ratio = max_dist, max_ratio
        self.tracks: dict[int, dict] = {}  # id -> {"box", "velocity" (dcx, dcy, dsize), "probs": deque, "missed"}
        self.next_id = 1

    def predicted(self, track: dict) -> list[float]:
        """Where the track's face should be now: its last box moved on by its velocity for every sampled frame
        since it was last seen."""
        cx, cy, size = _centre_size(track["box"]) + track["velocity"] * (track["missed"] + 1)
        w, h = track["box"][2], track["box"][3]
        k = max(size, 1.0) / max(w, h, 1e-6)
        return [cx - w * k / 2, cy - h * k / 2, w * k, h * k]

    def similarity(self, track: dict, box) -> float:
        """> 0 when `box` may be this track's face: its IoU with the prediction when they overlap enough;
        else, for a near centre and a similar size, a score below any such IoU (nearer is higher)."""
        pred = self.predicted(track)
        overlap = iou(pred, box)
        if overlap >= self.min_iou:
            return overlap
        a, b = _centre_size(pred), _centre_size(box)
        ratio = max(a[2], b[2]) / max(min(a[2], b[2]), 1e-6)
        dist = float(np.hypot(*(a[:2] - b[:2]))) / max(a[2], b[2], 1e-6)
        if ratio > self.max_ratio or dist > self.max_dist:
            return 0.0
        return self.min_iou * (1.0 - dist / self.max_dist) * 0.999

    def update(self, faces: list[dict]) -> None:
        """Give each face result of one frame (dicts with "box" and "probs") a "track" id and the smoothed
        label of its track ("smoothed_label", "smoothed_confidence"), in place."""
        pairs = sorted(((self.similarity(t, f["box"]), tid, j) for tid, t in self.tracks.items()
                        for j, f in enumerate(faces)), reverse=True)
        taken_tracks, taken_faces = set(), set()
        for score, tid, j in pairs:
            if score <= 0:
                break
            if tid not in taken_tracks and j not in taken_faces:
                taken_tracks.add(tid)
                taken_faces.add(j)
                self._assign(tid, faces[j])
        for j, face in enumerate(faces):
            if j not in taken_faces:
                tid = self.next_id
                self.next_id += 1
                self.tracks[tid] = {"box": face["box"], "velocity": np.zeros(3), "probs": deque(maxlen=self.window),
                                    "missed": 0, "new": True}
                taken_tracks.add(tid)
                self._assign(tid, face)
        for tid in list(self.tracks):
            if tid not in taken_tracks:
                self.tracks[tid]["missed"] += 1
                if self.tracks[tid]["missed"] > self.max_age:
                    del self.tracks[tid]

    def _assign(self, tid: int, face: dict) -> None:
        track = self.tracks[tid]
        if not track.pop("new", False):  # a match: the motion since the last sighting, per sampled frame
            step = (_centre_size(face["box"]) - _centre_size(track["box"])) / (track["missed"] + 1)
            keep = self.VELOCITY_MEMORY if len(track["probs"]) > 1 else 0.0  # the first step is the estimate
            track["velocity"] = keep * track["velocity"] + (1 - keep) * step
        track["box"], track["missed"] = face["box"], 0
        track["probs"].append(np.array([face["probs"][c] for c in self.classes], dtype=np.float64))
        mean = np.mean(track["probs"], axis=0)
        k = int(np.argmax(mean))
        label = self.classes[k] if mean[k] >= self.min_confidence else "uncertain"
        face.update(track=tid, smoothed_label=label, smoothed_confidence=round(float(mean[k]), 4))
