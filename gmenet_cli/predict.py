"""`gmenet predict`: find faces in photos, frames or crops and classify their expression.

Pipeline per input: decode -> detect (Haar cascade from the OpenCV wheel by default, YuNet with its ONNX
file, boxes from a CSV, or none) -> square crop with margin -> model channels -> resized to the LR size that
matches the face (the largest trained LR size not above the face's own size, so no detail is invented)
-> classified in batches -> one result per face. Small images are upscaled before detection so faces of
12-24 px reach the detector's minimum window.
"""

from __future__ import annotations

import csv
import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from gmenet_cli.data.imageio import ImageError, read_image, to_channels
from gmenet_cli.data.sources.folder import IMAGE_EXTS
from gmenet_cli.errors import UsageError

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.pt"
# The same weights as ONNX (graph fixed at the working size): the default on the CPU, no torch import.
DEFAULT_ONNX = Path(__file__).parent / "weights" / "default.onnx"
DETECT_MIN_SIDE = 640  # small images are upscaled to about this before detection


# ---------------------------------------------------------------------------------------------- detectors

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


# ---------------------------------------------------------------------------------------------- inputs

@dataclass
class Item:
    """One thing to classify: a decoded image (or video frame) with its face boxes, or an error."""

    file: str
    frame: int | None = None
    image: np.ndarray | None = None
    boxes: list = field(default_factory=list)
    error: str | None = None
    note: str | None = None


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


def iter_items(files: list[str], every: int) -> Iterator[Item]:
    """Decode each input: images once; videos every `every`-th frame."""
    for f in files:
        if Path(f).suffix.lower() in VIDEO_EXTS and Path(f).is_file():
            cap = cv2.VideoCapture(f)
            if not cap.isOpened():
                yield Item(f, error="cannot open video")
                continue
            index, any_frame = 0, False
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                any_frame = True
                if index % every == 0:
                    yield Item(f, frame=index, image=frame)
                index += 1
            cap.release()
            if not any_frame:
                yield Item(f, error="video has no readable frames")
            continue
        try:
            yield Item(f, image=read_image(f, 3))
        except ImageError as e:
            yield Item(f, error=str(e))


# ---------------------------------------------------------------------------------------------- classify

class Classifier:
    """A trained model, ready to classify crops: picks each crop's LR size from the face's size.

    Two backends share this interface: `TorchClassifier` (a .pt checkpoint, CPU or CUDA) and
    `OnnxClassifier` (a gmenet .onnx export through onnxruntime on the CPU, no torch import)."""

    path: str
    backend: str
    classes: list[str]
    channels: int
    sizes: list[int]  # trained face sizes (LR sizes for a student, the HR size for a teacher)

    def input_size(self, face_px: float) -> int:
        """Largest trained size not above the face's own size (never invent detail); else the smallest."""
        fitting = [s for s in self.sizes if s <= face_px + 0.5]
        return max(fitting) if fitting else min(self.sizes)

    def prepare_crop(self, image: np.ndarray, box, margin: float) -> tuple[np.ndarray, int]:
        from gmenet_cli.data.sources.base import crop_box

        x, y, w, h = box[:4]
        crop = crop_box(image, x, y, x + w, y + h, margin)
        crop = to_channels(crop, self.channels)
        size = self.input_size(max(w, h))
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (size, size), interpolation=interp)
        return (crop[None] if crop.ndim == 2 else crop.transpose(2, 0, 1)), size

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """Same-size uint8 (C, s, s) crops -> (N, K) probabilities."""
        raise NotImplementedError


class TorchClassifier(Classifier):
    backend = "torch"

    def __init__(self, path: str, device):
        import torch

        from gmenet_cli import checkpoint

        self.torch = torch
        self.path = path
        ck = checkpoint.load(path)
        self.model = checkpoint.build_model(ck, path).to(device)
        self.device = device
        self.classes = list(ck["classes"])
        self.channels = int(ck["input"]["channels"])
        self.sizes = checkpoint.trained_sizes(ck)

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():  # no autograd bookkeeping at all (cheaper than no_grad)
            x = torch.from_numpy(np.stack(crops)).to(self.device)
            return torch.softmax(self.model(x).float(), dim=1).cpu().numpy()


class OnnxClassifier(Classifier):
    backend = "onnxruntime"

    def __init__(self, path: str, threads: int = 0):
        from gmenet_cli.ortmodel import OnnxModel

        self.path = path
        self.model = OnnxModel(path, threads)  # threads 0: onnxruntime's default (one per physical core)
        self.classes, self.channels = self.model.classes, self.model.channels
        self.sizes = sorted(self.model.trained_sizes)

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        z = self.model.logits(np.stack(crops)).astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def load_classifier(weights: str | None, device: str | None = None) -> Classifier:
    """`--weights` (a .pt checkpoint or a gmenet .onnx export) or the shipped default, on `--device`.

    The default runs through onnxruntime on the CPU (no torch import: predict starts in about a second);
    `--device cuda` uses the shipped .pt instead. An .onnx file always runs on the CPU."""
    import re

    device = (device or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got '{device}'")
    wants_gpu = device.startswith("cuda")
    if weights is None:
        if DEFAULT_ONNX.is_file() and not wants_gpu and onnxruntime_available():
            return OnnxClassifier(str(DEFAULT_ONNX))
        if not DEFAULT_WEIGHTS.is_file():
            raise UsageError("no default model ships with this install; pass --weights runs/train/<name>/weights/best.pt "
                             "(train one: gmenet prepare, gmenet distill-teacher, gmenet train)")
        weights = str(DEFAULT_WEIGHTS)
    if Path(weights).suffix.lower() == ".onnx":
        if wants_gpu:
            raise UsageError(f"{weights}: .onnx models run on the CPU (onnxruntime); pass the .pt checkpoint for --device {device}")
        return OnnxClassifier(weights)
    from gmenet_cli.runtime import select_device

    return TorchClassifier(weights, select_device(device))


def run(files: list[str], clf: Classifier, detector: FaceDetector | None, margin: float, every: int,
        batch_size: int, boxes_csv: dict | None = None) -> Iterator[tuple[Item, list[dict]]]:
    """Yield (item, results) in input order: one result dict per face, or one for a faceless/unreadable input.

    Faces are gathered across inputs into batches of `batch_size` per LR size before classification."""
    pending: list[tuple[Item, list]] = []  # items waiting for their faces' probabilities
    queued = 0

    def flush():
        groups: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for i, (_, faces) in enumerate(pending):
            for j, face in enumerate(faces):
                groups.setdefault(face["size"], []).append((i, j, face.pop("crop")))
        for size, entries in groups.items():
            for start in range(0, len(entries), batch_size):
                chunk = entries[start : start + batch_size]
                probs = clf.classify([c for _, _, c in chunk])
                for (i, j, _), p in zip(chunk, probs):
                    pending[i][1][j]["probs"] = p
        for item, faces in pending:
            yield item, list(_results(item, faces, clf))
        pending.clear()

    for item in iter_items(files, every):
        if item.error:
            yield from flush()
            yield item, [{"file": item.file, "error": item.error}]
            continue
        img = item.image
        h, w = img.shape[:2]
        if boxes_csv is not None:
            found = boxes_csv.get(item.file, boxes_csv.get(Path(item.file).name, []))
        elif detector is None:
            found = [(0.0, 0.0, float(w), float(h), 1.0)]
        else:
            found, f = detect_faces(detector, img)
            if not found:
                smallest = detector.min_face / f
                item.note = f"no face found (faces under about {smallest:.0f}px are below what the detector can see)"
        faces = []
        for b in found:
            try:
                crop, size = clf.prepare_crop(img, b, 0.0 if detector is None and boxes_csv is None else margin)
            except ImageError:
                continue
            faces.append({"box": [round(v, 1) for v in b[:4]], "score": round(float(b[4]), 4), "crop": crop,
                          "size": size, "face_px": round(max(b[2], b[3]), 1)})
        pending.append((item, faces))
        queued += len(faces)
        if queued >= batch_size:
            yield from flush()
            queued = 0
    yield from flush()


def _results(item: Item, faces: list, clf: Classifier) -> Iterator[dict]:
    base = {"file": item.file}
    if item.frame is not None:
        base["frame"] = item.frame
    if not faces:
        yield {**base, "faces": 0, **({"note": item.note} if item.note else {})}
        return
    for j, face in enumerate(faces):
        p = face["probs"]
        k = int(np.argmax(p))
        yield {**base, "face": j, "box": face["box"], "label": clf.classes[k], "confidence": round(float(p[k]), 4),
               "probs": {c: round(float(v), 4) for c, v in zip(clf.classes, p)}, "face_px": face["face_px"],
               "input_px": face["size"], "detector_score": face["score"]}


def annotate(image: np.ndarray, results: list[dict]) -> np.ndarray:
    out = image.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for r in results:
        if "box" not in r:
            continue
        x, y, w, h = (int(round(v)) for v in r["box"])
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 200, 0), thick)
        cv2.putText(out, f"{r['label']} {r['confidence']:.2f}", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 200, 0), thick, cv2.LINE_AA)
    return out


def save_annotated(save_dir: Path, item_file: str, frame: int | None, image: np.ndarray, results: list[dict],
                   used: set) -> Path:
    """Write an annotated copy under `save_dir` only (names from the input's base name, made unique)."""
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(item_file).stem)[:100] or "image"
    if frame is not None:
        stem += f"_f{frame:06d}"
    name, n = f"{stem}.jpg", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}.jpg"
    used.add(name)
    path = save_dir / name
    ok, enc = cv2.imencode(".jpg", annotate(image, results))
    if ok:
        tmp = save_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(enc.tobytes())
        tmp.replace(path)
    return path
