"""Face detectors behind one interface: OpenCV's Haar cascade (in the OpenCV wheel) and YuNet (an ONNX file
run by cv2.FaceDetectorYN). Small images are upscaled before detection so faces of 12-24 px reach the
detector's minimum window."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gmenet_cli.errors import UsageError

DETECT_MIN_SIDE = 640  # small images are upscaled to about this before detection


class FaceDetector:
    """Interface: `detect(bgr) -> list of (x, y, w, h, score)` in the image's own pixels."""

    min_face = 30  # the smallest face (px, at detection scale) the detector finds reliably
    min_score = 0.0  # detections scoring below this are dropped (see --min-score)

    def detect(self, bgr: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        raise NotImplementedError


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade, shipped inside the opencv-python(-headless) 4.x wheel."""

    def __init__(self):
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / "haarcascade_frontalface_default.xml" if data else None
        if path is None or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
            raise UsageError("this OpenCV build ships no Haar cascades (OpenCV 5?); install opencv-python-headless<5 "
                             "or use --detector yunet --detector-model yunet.onnx")
        self.cascade = cv2.CascadeClassifier(str(path))
        self.min_face = 24
        # Haar level weights: on astronaut.png and 12-24 px copies the face scored 3.2-6.4, the two false
        # positives 0.8 and 1.2 (benchmarks/predict_speed.py prints them).
        self.min_score = 2.0

    def detect(self, bgr):
        gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr)
        found, _, weights = self.cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=(self.min_face, self.min_face), outputRejectLevels=True)
        return [(float(x), float(y), float(w), float(h), float(s)) for (x, y, w, h), s in zip(found, np.ravel(weights))]


class YuNetDetector(FaceDetector):
    """YuNet (cv2.FaceDetectorYN) from a user-supplied ONNX file (opencv_zoo, MIT)."""

    def __init__(self, model_path: str, score: float = 0.6):
        if not model_path:
            raise UsageError("--detector yunet needs --detector-model PATH/TO/yunet.onnx")
        if not Path(model_path).is_file():
            raise UsageError(f"detector model not found: {model_path}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise UsageError("this OpenCV build has no FaceDetectorYN; upgrade opencv-python-headless")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score, 0.3, 5000)
        except cv2.error:
            raise UsageError(f"{model_path} is not a YuNet ONNX model OpenCV can load") from None
        self.min_face = 10

    def detect(self, bgr):
        img = bgr if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        self.net.setInputSize((img.shape[1], img.shape[0]))
        _, faces = self.net.detect(img)
        if faces is None:
            return []
        return [(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[14])) for f in faces]


def make_detector(name: str, model_path: str | None, min_score: float | None = None) -> FaceDetector | None:
    if name == "none":
        return None
    if name == "haar":
        det: FaceDetector = HaarDetector()
    elif name == "yunet":
        det = YuNetDetector(model_path or "")
    else:
        raise UsageError(f"unknown detector '{name}'. Valid: haar, yunet, none")
    if min_score is not None:
        det.min_score = min_score
    return det


def detect_faces(detector: FaceDetector, bgr: np.ndarray) -> tuple[list, float]:
    """Detect on an upscaled copy when the image is small; boxes come back in original pixels.

    Returns (boxes, upscale factor). With factor f, the smallest detectable face is min_face / f px."""
    h, w = bgr.shape[:2]
    f = 1.0
    if max(h, w) < DETECT_MIN_SIDE:
        f = min(8.0, DETECT_MIN_SIDE / max(h, w))
        bgr = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
    boxes = [b for b in detector.detect(bgr) if b[4] >= detector.min_score]
    boxes = [(x / f, y / f, bw / f, bh / f, s) for x, y, bw, bh, s in boxes]
    # Most confident first: face 0 is the detector's best guess.
    return sorted(boxes, key=lambda b: -b[4]), f


