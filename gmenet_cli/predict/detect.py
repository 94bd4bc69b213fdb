"""Face detectors behind one interface: `detect(bgr) -> [(x, y, w, h, score), ...]` in the image's pixels.

- `YuNetDetector` (the default): the YuNet network (OpenCV Zoo, MIT; shipped as weights/yunet.onnx with its
  licence) run by cv2.FaceDetectorYN over an image pyramid chosen from the image size and the smallest face
  asked for (`--min-face`): YuNet finds faces of about 20-300 px at its input's scale, so a 10 px face needs
  the image (or tiles of it) upscaled 2x, while large faces need it shrunk. Detections from every scale and
  tile are merged by non-maximum suppression.
- `HaarDetector`: OpenCV's frontal-face Haar cascade (in the OpenCV wheel), on an upscaled copy of small images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gmenet_cli.errors import UsageError

DETECT_MIN_SIDE = 640  # Haar: small images are upscaled to about this before detection
SHIPPED_YUNET = Path(__file__).resolve().parent.parent / "weights" / "yunet.onnx"

Box = tuple[float, float, float, float, float]


class FaceDetector:
    """Interface. `min_score`: detections scoring below it are dropped (see --min-score)."""

    min_score = 0.0

    def detect(self, bgr: np.ndarray) -> list[Box]:
        raise NotImplementedError

    def smallest_face(self, shape: tuple) -> float:
        """The smallest face (px) this detector looks for in an image of this shape."""
        raise NotImplementedError


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade, shipped inside the opencv-python(-headless) 4.x wheel."""

    window = 24  # the cascade's smallest window, at detection scale

    def __init__(self):
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / "haarcascade_frontalface_default.xml" if data else None
        if path is None or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
            raise UsageError("this OpenCV build ships no Haar cascades (OpenCV 5?); install opencv-python-headless<5 "
                             "or use the default --detector yunet")
        self.cascade = cv2.CascadeClassifier(str(path))
        # Haar level weights: on astronaut.png and 12-24 px copies the face scored 3.2-6.4, the two false
        # positives 0.8 and 1.2 (benchmarks/predict_speed.py prints them).
        self.min_score = 2.0

    def _upscale(self, shape: tuple) -> float:
        return min(8.0, DETECT_MIN_SIDE / max(shape[:2])) if max(shape[:2]) < DETECT_MIN_SIDE else 1.0

    def smallest_face(self, shape: tuple) -> float:
        return self.window / self._upscale(shape)

    def detect(self, bgr):
        f = self._upscale(bgr.shape)
        if f != 1.0:
            bgr = cv2.resize(bgr, (round(bgr.shape[1] * f), round(bgr.shape[0] * f)), interpolation=cv2.INTER_CUBIC)
        gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr)
        found, _, weights = self.cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=(self.window, self.window), outputRejectLevels=True)
        return [(x / f, y / f, w / f, h / f, float(s)) for (x, y, w, h), s in zip(found, np.ravel(weights))
                if s >= self.min_score]


class YuNetDetector(FaceDetector):
    """YuNet over an image pyramid and tiles, merged by NMS.

    Each pyramid level k scales the image by f_k and keeps faces of at least `NET_MIN` px there, i.e. of
    NET_MIN / f_k px in the image: level 0 (f_0 = NET_MIN / min_face) reaches the smallest face asked for,
    each next level is `STEP` times smaller, until a face as large as the image fits under NET_MAX. Levels
    larger than `TILE` px on a side run in overlapping tiles, so memory stays bounded on big photos."""

    NET_MIN, NET_MAX = 20.0, 300.0  # face sizes (px at the network's input) YuNet finds reliably (BENCHMARKS.md)
    STEP = 4.0  # scale ratio between pyramid levels: bands of 20-300 px overlap by almost 4x
    TILE, OVERLAP = 1280, 128  # tile side and overlap, px at the level's scale
    NMS_IOU = 0.4

    def __init__(self, model_path: str | None = None, score: float = 0.6, min_face: float = 10.0):
        path = Path(model_path) if model_path else SHIPPED_YUNET
        if not path.is_file():
            raise UsageError(f"detector model not found: {path}" + ("" if model_path else
                             " (this install ships no YuNet file; pass --detector-model or --detector haar)"))
        if not hasattr(cv2, "FaceDetectorYN"):
            raise UsageError("this OpenCV build has no FaceDetectorYN; upgrade opencv-python-headless (4.8+)")
        if not 2 <= min_face <= 4096:
            raise UsageError(f"--min-face must be between 2 and 4096 px, got {min_face}")
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.3, 0.3, 5000)
        except cv2.error:
            raise UsageError(f"{path} is not a YuNet ONNX model OpenCV can load") from None
        self.min_score, self.min_face = score, float(min_face)

    def smallest_face(self, shape: tuple) -> float:
        return self.min_face

    def scales(self, shape: tuple) -> list[float]:
        """Pyramid scale factors for an image of this shape, largest first. The last level is never smaller
        than needed to fit a face as large as the image under NET_MAX: YuNet on a tiny level (a 1024 px
        photo at 1/8 is 128 px) finds faces in chins and necklaces."""
        side = min(shape[:2])
        out = [self.NET_MIN / self.min_face]
        while self.NET_MAX / out[-1] < side and len(out) < 8:
            out.append(max(out[-1] / self.STEP, self.NET_MAX / side))
        return out

    def detect(self, bgr):
        img = bgr if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        found: list[Box] = []
        for f in self.scales(img.shape):
            # this level's band, with some slack: a face of min_face px gets a box a little smaller than that
            lo = 0.75 * max(self.min_face, self.NET_MIN / f)
            level = (
                img
                if f == 1
                else cv2.resize(
                    img,
                    (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                    interpolation=cv2.INTER_LINEAR if f > 1 else cv2.INTER_AREA,
                )
            )
            for x, y, w, h, s in self._tiles(level):
                if s >= self.min_score and max(w, h) / f >= lo:
                    found.append((x / f, y / f, w / f, h / f, s))
        return suppress_nested(nms(found, self.NMS_IOU))

    def _tiles(self, level: np.ndarray) -> list[Box]:
        H, W = level.shape[:2]
        step = self.TILE - self.OVERLAP
        out: list[Box] = []
        for y0 in range(0, max(H - self.OVERLAP, 1), step):
            for x0 in range(0, max(W - self.OVERLAP, 1), step):
                tile = level[y0 : y0 + self.TILE, x0 : x0 + self.TILE]
                self.net.setInputSize((tile.shape[1], tile.shape[0]))
                _, faces = self.net.detect(np.ascontiguousarray(tile))
                if faces is not None:
                    out += [(float(f[0]) + x0, float(f[1]) + y0, float(f[2]), float(f[3]), float(f[14])) for f in faces]
        return out


def nms(boxes: list[Box], iou: float) -> list[Box]:
    """Non-maximum suppression (OpenCV's), most confident first."""
    if not boxes:
        return []
    keep = cv2.dnn.NMSBoxes([list(b[:4]) for b in boxes], [b[4] for b in boxes], 0.0, iou)
    return sorted((boxes[i] for i in np.ravel(keep)), key=lambda b: -b[4])


def suppress_nested(boxes: list[Box], inside: float = 0.6) -> list[Box]:
    """Drop a box lying mostly (`inside` of its area) within a more confident one: a face part found at one
    pyramid level inside the whole face found at another, which IoU-based NMS lets through."""
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b[4]):
        area = b[2] * b[3]
        if all(_intersection(b, k) < inside * area for k in kept):
            kept.append(b)
    return kept


def _intersection(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy


def make_detector(
    name: str, model_path: str | None, min_score: float | None = None, min_face: float = 10.0
) -> FaceDetector | None:
    name = name.strip().lower()
    if name == "none":
        return None
    if name == "haar":
        det: FaceDetector = HaarDetector()
    elif name == "yunet":
        det = YuNetDetector(model_path, min_face=min_face)
    else:
        raise UsageError(f"unknown detector '{name}'. Valid: yunet (default), haar, none")
    if min_score is not None:
        det.min_score = min_score
    return det


def detect_faces(detector: FaceDetector, bgr: np.ndarray) -> list[Box]:
    """Boxes in the image's pixels, most confident first (face 0 is the detector's best guess)."""
    return sorted(detector.detect(bgr), key=lambda b: -b[4])
