"""Classifiers: a trained model ready to classify face crops, choosing each crop's size from the face's.

Two backends share one interface: `TorchClassifier` (a .pt checkpoint, CPU or CUDA) and `OnnxClassifier`
(a gmenet .onnx export through onnxruntime on the CPU, no torch import: the shipped default's fast path).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gmenet_cli.data.imageio import to_channels
from gmenet_cli.errors import UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.pt"
# The same weights as ONNX (graph fixed at the working size): the default on the CPU, no torch import.
DEFAULT_ONNX = WEIGHTS_DIR / "default.onnx"


class Classifier:
    """A trained model, ready to classify crops: picks each crop's LR size from the face's size.

    Two backends share this interface: `TorchClassifier` (a .pt checkpoint, CPU or CUDA) and
    `OnnxClassifier` (a gmenet .onnx export through onnxruntime on the CPU, no torch import)."""

    path: str
    backend: str
    classes: list[str]
    channels: int
    sizes: list[int]  # trained face sizes (LR sizes for a student, the HR size for a teacher)
    tta: bool = True  # flip test-time augmentation: average the logits of each crop and its mirror image

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
        """Same-size uint8 (C, s, s) crops -> (N, K) probabilities (softmax of the, optionally flip-averaged,
        logits; both views go through the model as one batch)."""
        x = np.stack(crops)
        if self.tta:
            z = self.logits(np.concatenate([x, x[..., ::-1]])).astype(np.float64)
            z = (z[: len(x)] + z[len(x):]) / 2
        else:
            z = self.logits(x).astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, C, s, s) uint8 -> (N, K) logits."""
        raise NotImplementedError


class TorchClassifier(Classifier):
    backend = "torch"

    def __init__(self, path: str, device):
        import torch

        from gmenet_cli import checkpoint

        self.torch = torch
        self.path = path
        ckpt = checkpoint.load(path)
        self.model = checkpoint.build_model(ckpt, path).to(device)
        self.device = device
        self.classes = list(ckpt["classes"])
        self.channels = int(ckpt["input"]["channels"])
        self.sizes = checkpoint.trained_sizes(ckpt)

    def logits(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():  # no autograd bookkeeping at all (cheaper than no_grad)
            return self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).float().cpu().numpy()


class OnnxClassifier(Classifier):
    backend = "onnxruntime"

    def __init__(self, path: str, threads: int = 0):
        from gmenet_cli.ortmodel import OnnxModel

        self.path = path
        self.model = OnnxModel(path, threads)  # threads 0: onnxruntime's default (one per physical core)
        self.classes, self.channels = self.model.classes, self.model.channels
        self.sizes = sorted(self.model.trained_sizes)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.model.logits(np.ascontiguousarray(x))


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def load_classifier(weights: str | None, device: str | None = None, tta: bool = True) -> Classifier:
    clf = _load_classifier(weights, device)
    clf.tta = tta
    return clf


def _load_classifier(weights: str | None, device: str | None = None) -> Classifier:
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


