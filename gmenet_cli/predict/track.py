"""Faces followed across the sampled frames of a video: one id per person, and a label smoothed over time.

A greedy IoU tracker (as in "simple online tracking"): each frame's faces are matched to the live tracks
by box overlap, best pairs first (IoU at least `min_iou`); an unmatched face starts a new track; a track
unmatched for more than `max_age` sampled frames ends. Each track keeps the probabilities of its last
`window` frames: their mean is the smoothed label, steadier than any single low-resolution frame.
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


class Tracker:
    def __init__(self, classes: list[str], window: int = 5, min_iou: float = 0.3, max_age: int = 3,
                 min_confidence: float = 0.0):
        self.classes, self.window, self.min_iou, self.max_age = classes, window, min_iou, max_age
        self.min_confidence = min_confidence  # a smoothed label below it is "uncertain", as a frame's label
        self.tracks: dict[int, dict] = {}  # id -> {"box", "probs": deque, "missed"}
        self.next_id = 1

    def update(self, faces: list[dict]) -> None:
        """Give each face result of one frame (dicts with "box" and "probs") a "track" id and the smoothed
        label of its track ("smoothed_label", "smoothed_confidence"), in place."""
        pairs = sorted(((iou(t["box"], f["box"]), tid, j) for tid, t in self.tracks.items()
                        for j, f in enumerate(faces)), reverse=True)
        taken_tracks, taken_faces = set(), set()
        for overlap, tid, j in pairs:
            if overlap < self.min_iou:
                break
            if tid not in taken_tracks and j not in taken_faces:
                taken_tracks.add(tid)
                taken_faces.add(j)
                self._assign(tid, faces[j])
        for j, face in enumerate(faces):
            if j not in taken_faces:
                tid = self.next_id
                self.next_id += 1
                self.tracks[tid] = {"box": face["box"], "probs": deque(maxlen=self.window), "missed": 0}
                taken_tracks.add(tid)
                self._assign(tid, face)
        for tid in list(self.tracks):
            if tid not in taken_tracks:
                self.tracks[tid]["missed"] += 1
                if self.tracks[tid]["missed"] > self.max_age:
                    del self.tracks[tid]

    def _assign(self, tid: int, face: dict) -> None:
        track = self.tracks[tid]
        track["box"], track["missed"] = face["box"], 0
        track["probs"].append(np.array([face["probs"][c] for c in self.classes], dtype=np.float64))
        mean = np.mean(track["probs"], axis=0)
        k = int(np.argmax(mean))
        label = self.classes[k] if mean[k] >= self.min_confidence else "uncertain"
        face.update(track=tid, smoothed_label=label, smoothed_confidence=round(float(mean[k]), 4))
