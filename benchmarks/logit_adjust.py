"""Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment", 2021) on a trained
student: predict argmax(logits - tau * log(prior)), prior = the training split's class frequencies, for a
sweep of tau. It trades accuracy for mean per-class accuracy on the rare expressions. The sweep is read on
the evaluation split itself, so it shows the trade-off, not a tuned operating point.

    python benchmarks/logit_adjust.py --weights gmenet_cli/weights/default.onnx --store prepared/ferplus-x2-4-8
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--store", required=True, help="prepared store (its train split gives the prior)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--taus", default="0,0.25,0.5,0.75,1")
    args = ap.parse_args()
    from gmenet_cli import checkpoint
    from gmenet_cli.data.loader import PairedBatches
    from gmenet_cli.data.store import Store
    from gmenet_cli.evaluate import metrics_from_confusion, tta_logits

    ckpt = checkpoint.load(args.weights)
    model = checkpoint.build_model(ckpt, args.weights).eval()
    store = Store(args.store)
    train = store.split("train")
    k = len(store.classes)
    prior = np.bincount(train.labels, minlength=k) / train.count
    part = store.split(args.split)
    print(header(f"post-hoc logit adjustment, {ckpt['model']['name']}, {args.split} split"))
    print("train prior: " + ", ".join(f"{c} {p:.4f}" for c, p in zip(store.classes, prior)) + "\n")
    print("| face px | tau | accuracy | mean class acc | recall per class (" + ", ".join(store.classes) + ") |")
    print("|---|---|---|---|---|")
    for s in sorted(store.scales):
        logits, target = [], []
        with torch.inference_mode():
            for b in PairedBatches(part, 512, [s], shuffle=False, with_hr=False, even=False):
                logits.append(tta_logits(model, b["lowres"]).numpy())
                target.append(b["target"].numpy())
        logits, target = np.concatenate(logits), np.concatenate(target)
        for tau in (float(t) for t in args.taus.split(",")):
            pred = (logits - tau * np.log(prior)).argmax(1)
            conf = np.zeros((k, k))
            np.add.at(conf, (target, pred), 1)
            m = metrics_from_confusion(conf, store.classes)
            recalls = " ".join(f"{100 * v['recall']:.0f}" for v in m["per_class"].values())
            print(f"| {store.hr_size // s} | {tau:g} | {100 * m['accuracy']:.2f} | "
                  f"{100 * m['mean_class_accuracy']:.2f} | {recalls} |")


if __name__ == "__main__":
    main()
