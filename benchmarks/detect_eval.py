"""Face detection on real group photos: recall, false positives, speed, and expression-label stability.

Ground truth: the 8 PASCAL VOC group photos of ../shared/images/scenes/dlib with hand-made boxes
(training.xml + testing.xml, 36 faces of 37-110 px). Each photo is evaluated at full size and shrunk (area
interpolation, the whole photo, so faces keep their real context) until its median face is 16 px and
12 px wide. A detection matches an unmatched ground-truth face when their IoU is at least 0.3 (the hand
boxes are tight squares, YuNet's boxes taller); unmatched detections are false positives, except those on
the few real faces the hand boxes leave out (IGNORE, checked by eye: people in the background, faces on
posters), which count neither way.

Stability: for every ground-truth face found both at full size and at 16 px, whether the shipped model
(predict's default path: onnxruntime, flip TTA) gives it the same expression label at both sizes.

Speed: milliseconds per photo, the 17 photos of ../shared/images/scenes/group resized to 1024x768, every
detector on the same photo in turn (interleaved), medians. Also the faces each detector finds there at
full size (no boxes exist for them; `--save DIR` writes annotated copies to look at).

    python benchmarks/detect_eval.py [--save DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from _common import SHARED, header

DLIB = SHARED / "images" / "scenes" / "dlib"
GROUP = SHARED / "images" / "scenes" / "group"
IOU = 0.3
# Real faces without a hand box (x, y, w, h in full-size pixels), checked by eye on the photos.
IGNORE = {
    "2008_002079.jpg": [(268, 30, 30, 32), (408, 66, 80, 40)],  # a man behind the bar; diners in the back
    "2008_004176.jpg": [(200, 0, 135, 24)],  # the printed faces of four cut-out figures on the wall
}


def load_truth() -> dict[str, list[tuple]]:
    truth = {}
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(DLIB / xml).getroot().iter("image"):
            truth[image.get("file")] = [tuple(float(b.get(k)) for k in ("left", "top", "width", "height"))
                                        for b in image.iter("box")]
    return truth


def iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def in_ignored(box, regions) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return any(x <= cx <= x + w and y <= cy <= y + h for x, y, w, h in regions)


def match(truth: list, found: list, ignore: list, min_iou: float = IOU) -> tuple[dict, int]:
    """-> ({truth index: detection index}, false positives); greedy by IoU, best pairs first."""
    pairs = sorted(((iou(t, d), i, j) for i, t in enumerate(truth) for j, d in enumerate(found)), reverse=True)
    matched, used = {}, set()
    for overlap, i, j in pairs:
        if overlap >= min_iou and i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    fp = sum(1 for j, d in enumerate(found) if j not in used and not in_ignored(d, ignore))
    return matched, fp


class OpenCvNet:
    """YuNet through OpenCV's DNN module (cv2.FaceDetectorYN): the engine of the default before 2026-12-03."""

    def __init__(self):
        from gmenet_cli.predict.detect import SHIPPED_YUNET

        self.net = cv2.FaceDetectorYN.create(str(SHIPPED_YUNET), "", (320, 320), 0.3, 0.3, 5000)

    def __call__(self, bgr, score):
        self.net.setScoreThreshold(score)
        self.net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.net.detect(np.ascontiguousarray(bgr))
        return [] if faces is None else [(*map(float, f[:4]), float(f[14])) for f in faces]


DEFAULT, BEFORE = "yunet (default: focused pyramid, onnxruntime)", "yunet, whole pyramid, OpenCV DNN (before)"


def detectors() -> dict:
    from gmenet_cli.predict.detect import HaarDetector, YuNetDetector

    before = YuNetDetector(focus=False)
    before.net = OpenCvNet()
    single = YuNetDetector()
    single.scales = lambda shape: [1.0]  # one pass at the photo's own scale: what the pyramid adds
    return {DEFAULT: YuNetDetector(), "yunet, whole pyramid, onnxruntime": YuNetDetector(focus=False),
            BEFORE: before, "yunet, one pass at 1x": single, "haar (OpenCV cascade)": HaarDetector()}


def accuracy_table(dets: dict, truth: dict, clf) -> tuple[list, dict]:
    rows, labels = [], {}
    for det_name, det in dets.items():
        for target in (None, 16, 12):
            found_n = fp = n = 0
            for name, boxes in truth.items():
                img = cv2.imread(str(DLIB / name))
                s = 1.0 if target is None else target / float(np.median([b[2] for b in boxes]))
                if s != 1.0:
                    img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                gt = [tuple(v * s for v in b) for b in boxes]
                found = det.detect(img)
                matched, bad = match(gt, found, [tuple(v * s for v in r) for r in IGNORE.get(name, [])])
                found_n, fp, n = found_n + len(matched), fp + bad, n + len(gt)
                if det_name == DEFAULT and target in (None, 16):
                    for i, j in matched.items():
                        crop, _ = clf.prepare_crop(img, found[j], 0.1)
                        labels.setdefault((name, i), {})[target] = int(np.argmax(clf.classify([crop])[0]))
            rows.append((det_name, "full size" if target is None else f"median face {target} px", n, found_n / n,
                         fp / len(truth)))
    return rows, labels


def speed_table(dets: dict, save: Path | None) -> list:
    photos = sorted(GROUP.glob("*.jpg"))
    times = {k: [] for k in dets}
    counts = {k: 0 for k in dets}
    agree = {k: [0, 0] for k in dets}  # [boxes of the previous default matched at IoU >= 0.5, its boxes]
    for p in photos:
        img = cv2.resize(cv2.imread(str(p)), (1024, 768), interpolation=cv2.INTER_AREA)
        for k, det in dets.items():
            det.detect(img)  # warm
            t = time.perf_counter()
            found = det.detect(img)
            times[k].append((time.perf_counter() - t) * 1000)
        full = cv2.imread(str(p))
        found_by = {k: det.detect(full) for k, det in dets.items()}
        for k, found in found_by.items():
            counts[k] += len(found)
            matched, _ = match(found_by[BEFORE], found, [], 0.5)
            agree[k][0] += len(matched)
            agree[k][1] += len(found_by[BEFORE])
            if save and k == DEFAULT:
                from gmenet_cli.predict.annotate import annotate

                res = [{"box": list(b[:4]), "label": "neutral", "confidence": b[4]} for b in found]
                cv2.imwrite(str(save / p.name), annotate(full, res))
    return [(k, statistics.median(v), counts[k], agree[k][0] / max(agree[k][1], 1)) for k, v in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--save", type=Path, help="write the default detector's boxes on the group photos here")
    args = ap.parse_args()
    if not DLIB.is_dir():
        sys.exit(f"needs {DLIB} (the shared scenes)")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    from gmenet_cli.predict import load_classifier

    dets, truth = detectors(), load_truth()
    rows, labels = accuracy_table(dets, truth, load_classifier(None, "cpu"))
    speed = speed_table(dets, args.save)
    print(header("face detection on real group photos (8 dlib/PASCAL photos, 36 hand-boxed faces)"))
    print("| detector | photo size | faces | recall | false positives per photo |")
    print("|---|---|---|---|---|")
    for det, size, n, recall, fp in rows:
        print(f"| {det} | {size} | {n} | {recall:.3f} | {fp:.2f} |")
    both = [v for v in labels.values() if None in v and 16 in v]
    same = sum(v[None] == v[16] for v in both)
    print(f"\nExpression label stability (shipped model, default detector): {same}/{len(both)} = "
          f"{same / max(len(both), 1):.3f} of the faces found at both sizes keep their full-size label at 16 px.\n")
    print("| detector | ms per 1024x768 photo (median of 17) | x the previous default | x haar "
          "| faces found in the 17 full-size group photos | of the previous default's faces, found (IoU >= 0.5) |")
    print("|---|---|---|---|---|---|")
    base, before = speed[-1][1], dict((r[0], r[1]) for r in speed)[BEFORE]
    for det, ms, count, agreed in speed:
        print(f"| {det} | {ms:.0f} | {ms / before:.2f}x | {ms / base:.2f}x | {count} | {agreed:.3f} |")


if __name__ == "__main__":
    main()
