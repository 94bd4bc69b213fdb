"""Two models for one face size, each reading one view (the first the face, the second its mirror image;
calibrated probabilities averaged), against the first alone with predict's flip TTA (the same two reads per
face), on a prepared store's validation split through onnxruntime as predict runs them. Prints accuracy,
mean class accuracy, calibrated ECE and recall per class for: the first model (flip TTA), the second (flip
TTA), the first on the face alone, the pair, and both with flip TTA (four reads); then a paired bootstrap
(faces resampled, 2,000 times) of the pair's gain over the first model, and of the second model's (flip TTA)
over the first's, as if it replaced it: the 95% interval of the differences in accuracy and in mean class
accuracy.

    python benchmarks/pair_eval.py --store prepared/ferplus-x2-4-8 --first A.onnx --second B.onnx --scale 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


class Mirrored(torch.nn.Module):
    """A model reading each face's mirror image (a batch, or evaluate's LR groups)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.num_classes = model, model.num_classes

    def forward(self, faces):
        if torch.is_tensor(faces):
            return self.model(faces.flip(-1))
        return self.model({s: (pos, f.flip(-1)) for s, (pos, f) in faces.items()})


def per_face_scores(p: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(correct (N,) 0/1, weight (N,) = 1 / (faces of its true class)): accuracy is correct.mean() and mean
    class accuracy is (correct * weight).sum() / k, so both resample face by face."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return (p.argmax(1) == y).astype(np.float64), 1.0 / counts[y]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--first", required=True, help="the model that reads the face (a gmenet .onnx)")
    ap.add_argument("--second", required=True, help="the model that reads its mirror image")
    ap.add_argument("--scale", type=int, required=True, help="LR scale of the store (1: the HR faces)")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from gmenet_cli.calibrate import calibrated_softmax, ece, temperatures_for
    from gmenet_cli.data.store import Store
    from gmenet_cli.evaluate import OnnxEvalModel, confusion_from, logits_and_labels, metrics_from_confusion

    torch.set_num_threads(args.threads)
    store = Store(args.store)
    split = store.split("val")
    px = store.hr_size // args.scale
    scale = args.scale if args.scale > 1 else None
    probs, y = {}, None
    for name, path in (("first", args.first), ("second", args.second)):
        model = OnnxEvalModel(path)
        t = temperatures_for(model.onnx.calibration, px)
        face, y = logits_and_labels(model, split, scale, "cpu", 256)
        mirror, _ = logits_and_labels(Mirrored(model), split, scale, "cpu", 256)
        probs[name, "tta"] = calibrated_softmax((face + mirror) / 2, t)  # predict's flip TTA: logits averaged
        probs[name, "face"] = calibrated_softmax(face, t)
        probs[name, "mirror"] = calibrated_softmax(mirror, t)
    k = probs["first", "tta"].shape[1]
    base = probs["first", "tta"]
    pair = (probs["first", "face"] + probs["second", "mirror"]) / 2
    rows = {
        "first, flip TTA (2 reads)": base,
        "second, flip TTA (2 reads)": probs["second", "tta"],
        "first on the face (1 read)": probs["first", "face"],
        "**pair: first on the face, second on the mirror (2 reads)**": pair,
        "both with flip TTA (4 reads)": (base + probs["second", "tta"]) / 2,
    }
    print(f"{px} px, FERPlus val ({len(y)} faces); recall per class: {' / '.join(store.classes)}\n")
    print("| model | accuracy | mean class acc | ECE | recall per class |\n|---|---|---|---|---|")
    for name, p in rows.items():
        met = metrics_from_confusion(confusion_from(np.log(p + 1e-12), y, k), store.classes)
        recall = " ".join(f"{100 * met['per_class'][c]['recall']:.0f}" for c in store.classes)
        print(f"| {name} | {100 * met['accuracy']:.2f} | {100 * met['mean_class_accuracy']:.2f} | "
              f"{ece(p, y):.3f} | {recall} |")
    replaced = probs["second", "tta"]  # the second model in the first's place
    for label, other in (("pair - first (flip TTA)", pair), ("second (flip TTA) - first (flip TTA)", replaced)):
        print("\n" + bootstrap(label, base, other, y, k, args.resamples))


def bootstrap(label: str, base: np.ndarray, other: np.ndarray, y: np.ndarray, k: int, resamples: int) -> str:
    """A paired bootstrap (faces resampled) of the gain of `other` over `base` in accuracy and mean class
    accuracy: the gains on all faces and the 95% intervals, in points, and how many faces change label."""
    base_ok, w = per_face_scores(base, y, k)
    other_ok, _ = per_face_scores(other, y, k)
    rng = np.random.default_rng(0)
    d_acc, d_mca = [], []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        cw = 1.0 / np.maximum(np.bincount(y[i], minlength=k), 1)[y[i]]  # class weights of this resample
        d_acc.append((other_ok[i] - base_ok[i]).mean())
        d_mca.append(((other_ok[i] - base_ok[i]) * cw).sum() / k)
    lo, hi = np.percentile(d_acc, [2.5, 97.5]) * 100
    mlo, mhi = np.percentile(d_mca, [2.5, 97.5]) * 100
    changed = int((base.argmax(1) != other.argmax(1)).sum())
    return (f"{label}, paired bootstrap of {resamples} resamples: accuracy "
            f"{100 * (other_ok - base_ok).mean():+.2f} (95% interval {lo:+.2f} to {hi:+.2f}), mean class accuracy "
            f"{100 * ((other_ok - base_ok) * w).sum() / k:+.2f} ({mlo:+.2f} to {mhi:+.2f}); "
            f"{changed} faces change label")


if __name__ == "__main__":
    main()
