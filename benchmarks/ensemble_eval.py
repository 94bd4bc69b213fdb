"""Per face size on a prepared store's validation split (flip TTA, each checkpoint's own temperatures, as
predict applies them): each model alone, the average of the first two models' probabilities (e.g. the
all-sizes student and the 48 px model reading the face upsampled), and for the first model the expected
calibration error at its fitted temperature against the best ECE any one temperature reaches.

    python benchmarks/ensemble_eval.py --store prepared/ferplus-x2-4-8 --weights STUDENT.pt --weights TEACHER.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--weights", action="append", required=True, help="checkpoint (.pt); repeat for the second")
    ap.add_argument("--scales", default="2,4,8")
    ap.add_argument("--teacher-weights", default="0.5,0.3", help="weights of the second model in the average")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from gmenet_cli import checkpoint
    from gmenet_cli.calibrate import calibrated_softmax, ece, nll, softmax, temperatures_for
    from gmenet_cli.data.store import Store
    from gmenet_cli.evaluate import confusion_from, logits_and_labels, metrics_from_confusion

    torch.set_num_threads(args.threads)
    store = Store(args.store)
    split = store.split("val")
    models = []
    for path in args.weights:
        ckpt = checkpoint.load(path)
        models.append((path, checkpoint.build_model(ckpt, path).eval(), ckpt.get("calibration")))
    print("| face | model | accuracy | mean class acc | ECE | recall per class |\n|---|---|---|---|---|---|")
    for scale in map(int, args.scales.split(",")):
        px = store.hr_size // scale
        probs, raw = [], None
        for path, model, cal in models:
            z, y = logits_and_labels(model, split, scale, "cpu", 256, tta=True)
            raw = z if raw is None else raw
            probs.append((path, calibrated_softmax(z, temperatures_for(cal, px))))
        rows = list(probs)
        if len(probs) > 1:
            rows += [(f"average, second model weighted {w}", (1 - float(w)) * probs[0][1] + float(w) * probs[1][1])
                     for w in args.teacher_weights.split(",")]
        for name, p in rows:
            met = metrics_from_confusion(confusion_from(np.log(p + 1e-12), y, p.shape[1]), store.classes)
            recall = " ".join(f"{100 * met['per_class'][c]['recall']:.0f}" for c in store.classes)
            print(f"| {px} px | {name} | {100 * met['accuracy']:.2f} | {100 * met['mean_class_accuracy']:.2f} | "
                  f"{ece(p, y):.3f} | {recall} |")
        scan = [(t, ece(softmax(raw, t), y), nll(raw, y, t)) for t in np.exp(np.linspace(np.log(0.3), np.log(2), 60))]
        by_nll, by_ece = min(scan, key=lambda r: r[2]), min(scan, key=lambda r: r[1])
        print(f"\n{px} px, first model: NLL-best T {by_nll[0]:.3f} (ECE {by_nll[1]:.3f}); "
              f"ECE-best T {by_ece[0]:.3f} (ECE {by_ece[1]:.3f})\n")


if __name__ == "__main__":
    main()
