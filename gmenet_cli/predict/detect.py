"""Face detectors behind one interface: `detect(bgr) -> [(x, y, w, h, score), ...]` in the image's pixels.

- `YuNetDetector` (the default): the YuNet network (OpenCV Zoo, MIT; shipped as weights/yunet.onnx with its
  licence) run by onnxruntime (`YuNetNet`, OpenCV's decoding) over an image pyramid chosen from the image
  size and the smallest face asked for (`--min-face`): YuNet finds faces of about 20-300 px at its input's
  scale, so a 10 px face needs the image upscaled 2x (only around the faint marks such faces leave at 1x),
  while large faces need it shrunk. Detections from every scale and tile are merged by non-maximum
  suppression.
- `HaarDetector`: OpenCV's frontal-face Haar cascade (in the OpenCV wheel), on an upscaled copy of small images.
"""

from __future__ import annotations

import math
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


class YuNetNet:
    """The YuNet network (OpenCV Zoo's 2023mar ONNX format) in an onnxruntime CPU session, decoded exactly as
    OpenCV's cv2.FaceDetectorYN decodes it (zero padding to a multiple of 32, score = sqrt(cls * obj), boxes
    from the stride-8/16/32 grids, NMS on integer boxes): the same boxes and scores, in less time than
    OpenCV's DNN module takes on the CPU (measured: BENCHMARKS.md, face detection)."""

    STRIDES = (8, 16, 32)
    NMS_IOU, TOP_K = 0.3, 5000

    def __init__(self, path: Path, threads: int = 0):
        from gmenet_cli.ortmodel import cpu_session

        try:
            self.session = cpu_session(path, threads)
        except UsageError:
            raise
        except Exception:  # ORT raises its own exception types (Fail, InvalidProtobuf, ...)
            raise UsageError(f"{path} is not a YuNet ONNX model onnxruntime can load") from None
        self.outputs = [o.name for o in self.session.get_outputs()]
        wanted = {f"{k}_{s}" for k in ("cls", "obj", "bbox") for s in self.STRIDES}
        if not wanted <= set(self.outputs) or len(self.session.get_inputs()) != 1:
            raise UsageError(f"{path} is not a YuNet face detector (OpenCV Zoo's 2023mar format: outputs "
                             "cls/obj/bbox/kps at strides 8, 16, 32)")
        self.input = self.session.get_inputs()[0].name
        self._buf = np.zeros((1, 3, 0, 0), np.float32)

    def __call__(self, bgr: np.ndarray, score: float) -> list[Box]:
        """Faces in a BGR uint8 image scoring at least `score`: [(x, y, w, h, score), ...] in its pixels."""
        H, W = bgr.shape[:2]
        ph, pw = -(-H // 32) * 32, -(-W // 32) * 32
        if self._buf.shape[2:] != (ph, pw):
            self._buf = np.zeros((1, 3, ph, pw), np.float32)
        else:
            self._buf[0, :, H:] = 0
            self._buf[0, :, :, W:] = 0
        self._buf[0, :, :H, :W] = bgr.transpose(2, 0, 1)
        out = dict(zip(self.outputs, self.session.run(None, {self.input: self._buf})))
        boxes, scores = [], []
        for st in self.STRIDES:
            s = np.sqrt(np.clip(out[f"cls_{st}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{st}"][0, :, 0], 0, 1))
            idx = np.nonzero(s >= score)[0]
            if len(idx):
                b = out[f"bbox_{st}"][0, idx]
                w, h = np.exp(b[:, 2]) * st, np.exp(b[:, 3]) * st
                cx, cy = (idx % (pw // st) + b[:, 0]) * st, (idx // (pw // st) + b[:, 1]) * st
                boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], 1))
                scores.append(s[idx])
        if not boxes:
            return []
        b, s = np.concatenate(boxes), np.concatenate(scores)
        keep = cv2.dnn.NMSBoxes(b.astype(np.int32).tolist(), s.tolist(), score, self.NMS_IOU, top_k=self.TOP_K)
        keep = np.ravel(keep)
        return [(*map(float, b[i]), float(s[i])) for i in keep]


class YuNetDetector(FaceDetector):
    """YuNet over an image pyramid and tiles, merged by NMS.

    Each pyramid level k scales the image by f_k and keeps faces of at least `NET_MIN` px there, i.e. of
    NET_MIN / f_k px in the image: level 0 (f_0 = NET_MIN / min_face) reaches the smallest face asked for,
    each next level is `STEP` times smaller, until a face as large as the image fits under NET_MAX. Levels
    larger than `TILE` px on a side run in overlapping tiles, so memory stays bounded on big photos.

    An upscaled level (faces under NET_MIN px, e.g. 10 px faces at 2x) costs 4x the pixels of the photo.
    With `focus` (the default, for 2-4x levels) it runs only where a small face can be: the photo is first
    read at 1x (then the smaller levels as usual), where YuNet already marks faces of 10-40 px with a low
    score (`CANDIDATE_SCORE*`), and the upscaled level then sees windows around those marks (`WINDOW_SMALL`
    or `WINDOW` px, on the network's 32 px grid), packed side by side into one image; it alone decides on
    faces under `SMALL` px. A photo with too many marks (a dense crowd) gets the upscaled level over the
    rectangle that holds them all."""

    NET_MIN, NET_MAX = 20.0, 300.0  # face sizes (px at the network's input) YuNet finds reliably (BENCHMARKS.md)
    STEP = 4.0  # scale ratio between pyramid levels: bands of 20-300 px overlap by almost 4x
    TILE, OVERLAP = 1280, 128  # tile side and overlap, px at the level's scale
    NMS_IOU = 0.4
    SMALL = 40.0  # faces under this (px at 1x) are only marks at 1x; the upscaled level decides on them
    # marks worth a closer look: under NET_MIN px (10 px faces score 0.06-0.4 at 1x), and NET_MIN-SMALL px
    CANDIDATE_SCORE, CANDIDATE_SCORE_LARGE = 0.03, 0.1
    # px at 1x: windows around small and larger marks, and the blank between packed windows; at 2x each
    # window and its gap is a multiple of 32 px, the network's coarsest stride
    WINDOW_SMALL, WINDOW, GAP = 64, 112, 16
    FOCUS_MAX = 0.8  # packed windows larger than this share of the upscaled photo: run the whole level

    def __init__(self, model_path: str | None = None, score: float = 0.6, min_face: float = 10.0,
                 focus: bool = True):
        path = Path(model_path) if model_path else SHIPPED_YUNET
        if not path.is_file():
            raise UsageError(f"detector model not found: {path}" + ("" if model_path else
                             " (this install ships no YuNet file; pass --detector-model or --detector haar)"))
        if not 2 <= min_face <= 4096:
            raise UsageError(f"--min-face must be between 2 and 4096 px, got {min_face}")
        self.net = YuNetNet(path)
        self.min_score, self.min_face, self.focus = score, float(min_face), focus

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
        levels = self.scales(img.shape)
        # focus on 2-4x levels (--min-face 5-19); a larger upscale makes the windows themselves large
        up = levels[0] if self.focus and 1 < levels[0] <= 4 else None
        if up is not None:
            levels = [1.0] + levels[1:]  # the photo at 1x, then the levels below as before; the upscaled one last
        found: list[Box] = []
        marks: list[Box] = []
        for f in levels:
            # this level's band, with some slack: a face of min_face px gets a box a little smaller than that
            lo = 0.75 * max(self.min_face, self.NET_MIN / f)
            score = min(self.CANDIDATE_SCORE, self.min_score) if up is not None and f == 1.0 else self.min_score
            for x, y, w, h, s in self._tiles(_resized(img, f), score):
                box = (x / f, y / f, w / f, h / f, s)
                if up is not None and f == 1.0 and max(w, h) < self.SMALL:
                    marks.append(box)
                elif s >= self.min_score and max(w, h) / f >= lo:
                    found.append(box)
        if up is not None:
            found += self._upscaled(img, up, marks)
        return suppress_nested(nms(found, self.NMS_IOU))

    def _upscaled(self, img: np.ndarray, f: float, marks: list[Box]) -> list[Box]:
        """Faces under SMALL px, from the level upscaled by f: in windows around the marks (a small window for
        a mark under NET_MIN px, a large one above), packed; or over the rectangle holding all windows."""
        lo = 0.75 * max(self.min_face, self.NET_MIN / f)
        H, W = img.shape[:2]
        groups: dict[int, list[tuple[int, int]]] = {}  # window side -> top-left corners
        # corners on the network's coarsest grid (32 px at the level's scale): a window then sees what the
        # whole upscaled level sees there, and a face well inside it gets the same box and score
        grid = max(1, round(32 / f))
        for x, y, w, h, s in sorted(marks, key=lambda b: -b[4]):
            win = self.WINDOW if max(w, h) >= self.NET_MIN else self.WINDOW_SMALL
            if s < (self.CANDIDATE_SCORE if win == self.WINDOW_SMALL else self.CANDIDATE_SCORE_LARGE):
                continue
            # a mark lying well inside a window already chosen is looked at there
            m = 4 + 0.15 * max(w, h)
            if any(x0 <= x - m and y0 <= y - m and x + w + m <= x0 + v and y + h + m <= y0 + v
                   for v, cs in groups.items() for x0, y0 in cs):
                continue
            cx, cy = x + w / 2, y + h / 2
            # (a window reaching past the photo's edge is cropped there)
            x0, y0 = max(int((cx - win / 2) // grid) * grid, 0), max(int((cy - win / 2) // grid) * grid, 0)
            groups.setdefault(win, []).append((x0, y0))
        if not groups:
            return []
        if sum(len(c) * (v + self.GAP) ** 2 for v, c in groups.items()) > self.FOCUS_MAX * H * W:
            # too many windows to pack: the upscaled level over the rectangle that holds them all
            x0 = min(c[0] for cs in groups.values() for c in cs)  # on the grid, as every corner
            y0 = min(c[1] for cs in groups.values() for c in cs)
            x1 = min(max(c[0] + v for v, cs in groups.items() for c in cs), W)
            y1 = min(max(c[1] + v for v, cs in groups.items() for c in cs), H)
            boxes = self._tiles(_resized(img[y0:y1, x0:x1], f), self.min_score)
            return [b for b in self._placed(boxes, [(x0, y0, x1 - x0, y1 - y0)], f, 0, W, H) if max(b[2:4]) >= lo]
        out: list[Box] = []
        for win, corners in groups.items():
            pitch = round((win + self.GAP) * f)  # one window and its gap, px at the level's scale
            cols = max(1, min(math.ceil(math.sqrt(len(corners))), self.TILE // pitch))
            rows = max(1, self.TILE // pitch)  # rows per packed image: at most a tile's side
            for first in range(0, len(corners), cols * rows):
                batch = corners[first : first + cols * rows]
                canvas = np.zeros((math.ceil(len(batch) / cols) * pitch, cols * pitch, 3), np.uint8)
                windows = []
                for k, (x0, y0) in enumerate(batch):
                    crop = img[y0 : y0 + win, x0 : x0 + win]
                    r, c = divmod(k, cols)
                    up = _resized(crop, f)
                    canvas[r * pitch : r * pitch + up.shape[0], c * pitch : c * pitch + up.shape[1]] = up
                    windows.append((x0, y0, crop.shape[1], crop.shape[0]))
                found = self._placed(self.net(canvas, self.min_score), windows, f, cols, W, H, pitch)
                out += [b for b in found if max(b[2:4]) >= lo]
        return out

    @staticmethod
    def _placed(boxes, windows, f, cols, W, H, pitch=0) -> list[Box]:
        """Boxes found in windows of the photo upscaled by f (packed `cols` to a row, `pitch` px apart; one
        window: cols 0) -> boxes in the photo's pixels. A box must have its centre in its window, and one
        cut by a window edge inside the photo is dropped: that face lies whole in another window or is
        larger than the upscaled level looks for."""
        out: list[Box] = []
        for x, y, w, h, s in boxes:
            r, c = (int((y + h / 2) // pitch), int((x + w / 2) // pitch)) if cols else (0, 0)
            k = r * cols + c
            if (cols and c >= cols) or k >= len(windows):
                continue
            x0, y0, ww, wh = windows[k]
            ox, oy, cw, ch, slack = x - c * pitch, y - r * pitch, ww * f, wh * f, 0.1 * max(w, h)
            cut = (
                (ox < -slack and x0 > 0)
                or (oy < -slack and y0 > 0)
                or (ox + w > cw + slack and x0 + ww < W)
                or (oy + h > ch + slack and y0 + wh < H)
            )
            if not cut and 0 <= ox + w / 2 < cw and 0 <= oy + h / 2 < ch:
                out.append((x0 + ox / f, y0 + oy / f, w / f, h / f, s))
        return out

    def _tiles(self, level: np.ndarray, score: float) -> list[Box]:
        H, W = level.shape[:2]
        step = self.TILE - self.OVERLAP
        out: list[Box] = []
        for y0 in range(0, max(H - self.OVERLAP, 1), step):
            for x0 in range(0, max(W - self.OVERLAP, 1), step):
                tile = level[y0 : y0 + self.TILE, x0 : x0 + self.TILE]
                out += [(x + x0, y + y0, w, h, s) for x, y, w, h, s in self.net(tile, score)]
        return out


def _resized(img: np.ndarray, f: float) -> np.ndarray:
    if f == 1:
        return img
    size = (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f)))
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR if f > 1 else cv2.INTER_AREA)


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
