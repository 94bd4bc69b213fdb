"""Classifiers: a trained model ready to classify face crops, choosing each crop's size from the face's.

Two backends share one interface: `TorchClassifier` (a .pt checkpoint, CPU or CUDA) and `OnnxClassifier`
(a gmenet .onnx export through onnxruntime on the CPU, no torch import: the shipped default's fast path).
A gmenet .onnx export also carries its checkpoint (checkpoint.from_onnx), so with --device cuda, or
without onnxruntime, PyTorch rebuilds the model from the same file: the shipped models ship once, as .onnx.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gmenet_cli.config import parse_device
from gmenet_cli.data.imageio import to_channels
from gmenet_cli.errors import UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# The shipped all-sizes student: an ONNX export with float16 weights that also carries its checkpoint, so
# onnxruntime runs it on the CPU (no torch import) and PyTorch rebuilds it (--device cuda, train --init default).
DEFAULT_ONNX = WEIGHTS_DIR / "default.onnx"
DEFAULT_WEIGHTS = DEFAULT_ONNX


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
    calibration: dict | None = None  # the model's temperatures per face size (calibrate.py); None: T = 1

    def temperature(self, size: int):
        """For faces read at `size`: a temperature per predicted class (a list), or one number (older files)."""
        from gmenet_cli.calibrate import temperatures_for

        return temperatures_for(self.calibration, size)

    def input_size(self, face_px: float) -> int:
        """Largest trained size not above the face's own size (never invent detail); else the smallest."""
        fitting = [s for s in self.sizes if s <= face_px + 0.5]
        return max(fitting) if fitting else min(self.sizes)

    def prepare_crop(self, image: np.ndarray, box, margin: float) -> tuple[np.ndarray, int]:
        """The face's square crop (box plus `margin` on each side), at the model's channels and at the trained
        size chosen from the *crop's* side: the pixels the model reads, context included, not the box's."""
        from gmenet_cli.data.degrade import resize_face
        from gmenet_cli.data.sources.base import crop_box

        x, y, w, h = box[:4]
        crop = to_channels(crop_box(image, x, y, x + w, y + h, margin), self.channels)
        size = self.input_size(crop.shape[0])
        crop = resize_face(crop, size)
        return (crop[None] if crop.ndim == 2 else crop.transpose(2, 0, 1)), size

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """Same-size uint8 (C, s, s) crops -> (N, K) probabilities: the softmax of the (optionally flip-averaged,
        tta.flip_average) logits divided by the model's temperature for s and the class on top."""
        from gmenet_cli.calibrate import calibrated_softmax
        from gmenet_cli.tta import flip_average

        x = np.stack(crops)

        def run(faces: np.ndarray) -> np.ndarray:
            return self.logits(np.ascontiguousarray(faces)).astype(np.float64)

        z = flip_average(run, x, lambda f: f[..., ::-1]) if self.tta else run(x)
        return calibrated_softmax(z, self.temperature(x.shape[-1])).astype(np.float32)

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
        self.calibration = ckpt.get("calibration")

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
        self.calibration = self.model.calibration

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.model.logits(np.ascontiguousarray(x))


class RoutedClassifier(Classifier):
    """Several models with one class list, each face size sent to the model trained at that size with the
    fewest trained sizes (a specialist before a model of all sizes); ties go to the model listed first."""

    def __init__(self, members: list[Classifier]):
        first = members[0]
        for m in members[1:]:
            if m.classes != first.classes:
                raise UsageError(f"--weights {m.path} knows classes {m.classes}, {first.path} knows {first.classes}: "
                                 "models used together must share one class list")
            if m.channels != first.channels:
                raise UsageError(f"--weights {m.path} reads {m.channels}-channel faces, {first.path} "
                                 f"{first.channels}-channel: "
                                 "models used together must read the same faces")
        self.members = members
        self.path = ", ".join(m.path for m in members)
        self.backend = "+".join(dict.fromkeys(m.backend for m in members))
        self.classes, self.channels = first.classes, first.channels
        self.sizes = sorted({s for m in members for s in m.sizes})
        self.route = {s: min((m for m in members if s in m.sizes), key=lambda m: len(m.sizes)) for s in self.sizes}
        self.unused = [m for m in members if all(m is not r for r in self.route.values())]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Same-size crops (and, with TTA, their mirror images: Classifier.classify) to the model for their size."""
        return self.route[x.shape[-1]].logits(x)

    def temperature(self, size: int):
        return self.route[size].temperature(size)


class LazyClassifier(Classifier):
    """A shipped model loaded only when a face of its size is classified: start-up pays for the models it uses,
    not for every file that ships. Its sizes, class list and channels come from the file's metadata (or, for a
    one-size model, its name and the default beside it) and are checked against the model when it loads."""

    def __init__(self, path: str, sizes: list[int], classes: list[str], channels: int, backend: str, load):
        self.path, self.sizes = path, sorted(sizes)
        self.backend = backend  # loaded by _load_classifier on the same --device as the others
        self.classes, self.channels = classes, channels
        self._load, self._model = load, None

    @property
    def model(self) -> Classifier:
        if self._model is None:
            m = self._load(self.path)
            if m.classes != self.classes or m.channels != self.channels or not set(self.sizes) <= set(m.sizes):
                raise UsageError(f"{self.path} does not match the default model beside it (classes, channels or "
                                 f"face sizes {', '.join(map(str, self.sizes))} px); reinstall gmenet")
            self._model = m
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.model.logits(x)

    def temperature(self, size: int):
        return self.model.temperature(size)


def onnx_file(path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def default_files() -> list[Path]:
    """The shipped default models: default.onnx (every face size) first, then any specialists for one size
    (default-12px.onnx, ...)."""
    name = re.compile(r"default-(\d+)px\.onnx")
    found = sorted((int(m.group(1)), p) for p in WEIGHTS_DIR.glob("default-*px.onnx")
                   if (m := name.fullmatch(p.name)))
    main = WEIGHTS_DIR / "default.onnx"
    return ([main] if main.is_file() else []) + [p for _, p in found]


def load_classifier(weights: str | list[str] | None, device: str | None = None, tta: bool = True) -> Classifier:
    """`--weights` (one or more .pt checkpoints / gmenet .onnx exports) or the shipped default. Several models
    are combined: each face size goes to the model trained at it (a specialist before a model of all sizes)."""
    paths = [weights] if isinstance(weights, str) else list(weights or [])
    members = [_load_classifier(p, device) for p in paths] if paths else _load_default(device)
    clf = members[0] if len(members) == 1 else RoutedClassifier(members)
    clf.tta = tta
    return clf


def _load_default(device: str | None) -> list[Classifier]:
    """The shipped default (default_files): the all-sizes model, then the one-size ones, each loaded only
    when a face of its size comes (no torch import on the default CPU path, and no onnxruntime session for a
    model no face needs: predict starts in about a second). With --device cuda PyTorch runs them all, rebuilt
    from the same files."""
    device = parse_device(device)
    files = default_files()
    if not files:
        raise UsageError(
            "no default model ships with this install; pass --weights runs/train/<name>/weights/best.pt "
            "(train one: gmenet prepare, gmenet distill-teacher, gmenet train)"
        )
    load = lambda path: _load_classifier(path, device)  # noqa: E731
    main = _lazy_main(str(files[0]), device, load) or _load_classifier(str(files[0]), device)
    sized = re.compile(r"default-(\d+)px\.onnx")
    return [main] + [LazyClassifier(str(p), [int(sized.fullmatch(p.name).group(1))], main.classes, main.channels,
                                    main.backend, load) for p in files[1:]]


def _lazy_main(path: str, device: str, load) -> Classifier | None:
    """The shipped default.onnx as a LazyClassifier described by its metadata, when onnxruntime will run it;
    None (load it now, with load's own errors) on CUDA, without onnxruntime, or for a file whose metadata
    cannot be read."""
    if device.startswith("cuda") or not onnxruntime_available():
        return None
    import json

    from gmenet_cli.ortmodel import FORMAT, read_metadata

    try:
        meta = read_metadata(path)
        if meta.get("gmenet_format") != FORMAT:
            return None
        sizes = [int(v) for v in json.loads(meta.get("trained_sizes", meta["sizes"]))]
        return LazyClassifier(path, sizes, list(json.loads(meta["classes"])), int(meta["channels"]),
                              "onnxruntime", load)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_classifier(weights: str, device: str | None = None) -> Classifier:
    """One `--weights` file (a .pt checkpoint or a gmenet .onnx export) on `--device`. An .onnx file runs
    through onnxruntime on the CPU; with --device cuda (or without onnxruntime) PyTorch rebuilds it from the
    checkpoint the export carries."""
    device = parse_device(device)
    if onnx_file(weights) and not device.startswith("cuda") and onnxruntime_available():
        return OnnxClassifier(weights)
    from gmenet_cli.checkpoint import NoCheckpointError
    from gmenet_cli.runtime import select_device

    dev = select_device(device)
    try:
        return TorchClassifier(weights, dev)
    except NoCheckpointError:
        fix = f"drop --device {device}" if device.startswith("cuda") else "install onnxruntime"
        raise UsageError(f"{weights} carries no checkpoint (an export from an older gmenet or another tool), so "
                         f"only onnxruntime on the CPU runs it: {fix}, or re-export it with gmenet export") from None
