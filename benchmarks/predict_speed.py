"""predict speed: process start-up to first result, end-to-end images/s on astronaut.png, and batched
classification faces/s for each checkpoint given (default: the shipped model and a fresh gmenet_s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import ASTRONAUT, REPO, header


def startup(weights: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gmenet_cli", "predict", str(ASTRONAUT), "--weights", weights, "--json"],
                       capture_output=True, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def end_to_end(weights: str, n: int = 40) -> float:
    from gmenet_cli.predict import Classifier, HaarDetector, run

    clf = Classifier(weights, torch.device("cpu"))
    files = [str(ASTRONAUT)] * n
    list(run(files[:2], clf, HaarDetector(), 0.1, 1, 64))  # warm-up
    t = time.perf_counter()
    out = list(run(files, clf, HaarDetector(), 0.1, 1, 64))
    assert len(out) == n
    return n / (time.perf_counter() - t)


def classify_only(weights: str, batch: int = 256, reps: int = 10) -> tuple[float, int]:
    from gmenet_cli.predict import Classifier

    clf = Classifier(weights, torch.device("cpu"))
    size = clf.input_size(12)
    crops = [np.random.default_rng(i).integers(0, 256, (clf.channels, size, size), dtype=np.uint8) for i in range(batch)]
    clf.classify(crops)
    t = time.perf_counter()
    for _ in range(reps):
        clf.classify(crops)
    return batch * reps / (time.perf_counter() - t), size


def classify_onnx(weights: str, threads: int, batch: int = 256, reps: int = 10) -> tuple[float, float] | None:
    """The same model exported to ONNX (at the 12 px input) under onnxruntime: (faces/s, import seconds)."""
    t = time.perf_counter()
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import_s = time.perf_counter() - t
    from gmenet_cli.export import export

    out = Path(tempfile.mkdtemp()) / "model.onnx"
    info = export(weights, "onnx", str(out), 12)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, *info["input"][1:])).astype(np.float32)
    session.run(None, {"faces": x})
    t = time.perf_counter()
    for _ in range(reps):
        session.run(None, {"faces": x})
    return batch * reps / (time.perf_counter() - t), import_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights = args.weights
    tmp = tempfile.mkdtemp()
    if not weights:
        weights = []
        shipped = REPO / "gmenet_cli" / "weights" / "default.pt"
        if shipped.is_file():
            weights.append(str(shipped))
        # an untrained gmenet_s checkpoint measures the architecture's speed without needing a trained one
        from gmenet_cli import checkpoint
        from gmenet_cli.models import create_model

        kw = {"in_chans": 1, "num_classes": 8, "input_size": 48}
        m = create_model("gmenet_s", **kw)
        path = Path(tmp) / "gmenet_s_untrained.pt"
        checkpoint.save(path, {"kind": "student", "model": {"name": "gmenet_s", "kwargs": kw}, "state_dict": m.state_dict(),
                               "classes": ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"],
                               "input": {"channels": 1, "hr_size": 48, "view": "lr", "scales": [2, 4, 8],
                                         "lr_sizes": {"2": 24, "4": 12, "8": 6}}})
        weights.append(str(path))
    print(header(f"predict speed ({args.threads} threads)"))
    print("| checkpoint | start-up to first result (s) | end to end on astronaut.png (images/s) | classification only, batch 256 (faces/s) | same, ONNX Runtime (faces/s) | face px |")
    print("|---|---|---|---|---|---|")
    for w in weights:
        s = startup(w)
        e2e = end_to_end(w)
        fps, size = classify_only(w)
        onnx = classify_onnx(w, args.threads)
        ort_cell = f"{onnx[0]:,.0f} (import {onnx[1]:.2f} s)" if onnx else "not installed"
        print(f"| {Path(w).name} | {s:.2f} | {e2e:.1f} | {fps:,.0f} | {ort_cell} | {size} |")


if __name__ == "__main__":
    main()
