"""What an input shows as a whole: how many faces and which expressions, per image, and per video over the
whole clip and per track (from the smoothed labels, steadier than any one frame)."""

from __future__ import annotations

from collections import Counter


def _counts(counter: Counter) -> dict:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))  # most frequent first, then by name


class InputSummary:
    """Fed one input's result records in order (images: its faces; videos: every frame's faces)."""

    def __init__(self, file: str):
        self.file = file
        self.faces = 0
        self.labels: Counter = Counter()
        self.frames: set = set()
        self.tracks: dict[int, Counter] = {}

    def add(self, r: dict) -> None:
        if "label" not in r:
            return
        self.faces += 1
        if "frame" in r:
            self.frames.add(r["frame"])
        if "track" in r:
            label = r.get("smoothed_label", r["label"])
            self.tracks.setdefault(r["track"], Counter())[label] += 1
            self.labels[label] += 1
        else:
            self.labels[r["label"]] += 1

    @property
    def empty(self) -> bool:
        return self.faces == 0

    def record(self) -> dict:
        """{"file", "summary": {...}}: images {"faces", "labels"}; videos also "frames", "face_frames" and
        per track its frames and most frequent smoothed label ("faces" = tracks there)."""
        if not self.tracks:
            return {"file": self.file, "summary": {"faces": self.faces, "labels": _counts(self.labels)}}
        per_track = {str(t): {"frames": sum(c.values()), "label": c.most_common(1)[0][0], "labels": _counts(c)}
                     for t, c in sorted(self.tracks.items())}
        people = Counter(t["label"] for t in per_track.values())
        return {"file": self.file, "summary": {"faces": len(self.tracks), "labels": _counts(people),
                                                "frames": len(self.frames), "face_frames": self.faces,
                                                "frame_labels": _counts(self.labels), "tracks": per_track}}

    def line(self) -> str:
        """One line for the table's end: 'crowd.jpg: 12 faces: 7 happiness, 3 neutral, 2 surprise'."""
        s = self.record()["summary"]
        labels = ", ".join(f"{n} {label}" for label, n in s["labels"].items())
        if "tracks" not in s:
            return f"{self.file}: {s['faces']} face{'s' * (s['faces'] != 1)}: {labels}"
        tracks = ", ".join(f"#{t} {v['label']} ({v['frames']} of {s['frames']} frames)" for t, v in s["tracks"].items())
        faces = f"{s['faces']} tracked face{'s' * (s['faces'] != 1)}"
        return f"{self.file}: {faces} over {s['frames']} frames: {labels}; {tracks}"
