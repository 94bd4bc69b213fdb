"""The shipped .onnx models against their int8-weight copies (`gmenet export --int8-weights`), on a prepared
store's validation split, each through onnxruntime as predict runs it (flip TTA, the file's own temperatures):
accuracy, mean class accuracy and calibrated ECE per face size, how many faces change their top class, and
the file sizes.

    python benchmarks/int8_parity.py --store prepared/ferplus-x2-4-8 [--weights gmenet_cli/weights/default.onnx ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--weights", action="append", help="a gmenet .onnx (default: every shipped model)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from gmenet_cli.calibrate import calibrated_softmax, ece, temperatures_for
    from gmenet_cli.data.store import Store
    from gmenet_cli.evaluate import OnnxEvalModel, confusion_from, logits_and_labels, metrics_from_confusion
    from gmenet_cli.export import export
    from gmenet_cli.predict.classify import default_files

    torch.set_num_threads(args.threads)
    store = Store(args.store)
    split = store.split("val")
    files = [Path(w) for w in args.weights] if args.weights else default_files()
    print("| model | face | weights | MB | accuracy | mean class acc | ECE | faces whose top class changes |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            base = OnnxEvalModel(str(path))
            small = Path(tmp) / path.name
            fixed = base.onnx.fixed_size
            export(str(path), "onnx", str(small), fixed, int8_weights=True)
            copy = OnnxEvalModel(str(small))
            sizes = base.onnx.trained_sizes
            for px in sorted(sizes, reverse=True):
                scale = store.hr_size // px if px < store.hr_size else None  # None: the HR faces
                labels = {}
                for name, model, f in (("float16", base, path), ("int8 + float16", copy, small)):
                    z, y = logits_and_labels(model, split, scale, "cpu", 256, tta=True)
                    p = calibrated_softmax(z, temperatures_for(model.onnx.calibration, px))
                    met = metrics_from_confusion(confusion_from(np.log(p + 1e-12), y, p.shape[1]), store.classes)
                    labels[name] = p.argmax(1)
                    changed = "" if name == "float16" else (
                        f"{int((labels['float16'] != labels[name]).sum())} of {len(y)}")
                    print(f"| {path.name} | {px} px | {name} | {f.stat().st_size / 1e6:.2f} | "
                          f"{100 * met['accuracy']:.2f} | {100 * met['mean_class_accuracy']:.2f} | "
                          f"{ece(p, y):.3f} | {changed} |", flush=True)


if __name__ == "__main__":
    main()
