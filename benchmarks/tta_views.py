"""Test-time views beyond predict's flip: one model on a prepared store's validation split, each face read
as given, flipped (what predict does), and shifted by --shift pixels left/right/up/down or zoomed by
+-zoom, each view with its flip; the logits of chosen sets of views are summed and scored (accuracy and
mean class accuracy; labels only, so temperatures do not matter).

    python benchmarks/tta_views.py --store prepared/ferplus-x2-4-8 \
        --weights gmenet_cli/weights/default-24px.onnx --scale 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

# (x shift, y shift, zoom), in units of --shift and --zoom
VIEWS = {"as given": (0, 0, 0), "right": (1, 0, 0), "left": (-1, 0, 0), "down": (0, 1, 0),
         "up": (0, -1, 0), "zoom in": (0, 0, -1), "zoom out": (0, 0, 1)}
SETS = {
    "as given": ["as given"],
    "+ flip (predict)": ["as given"],
    "+ flip, shifts left and right": ["as given", "left", "right"],
    "+ flip, 4 shifts": ["as given", "left", "right", "up", "down"],
    "+ flip, zoom in and out": ["as given", "zoom in", "zoom out"],
    "+ flip, all 7 views (14 reads)": list(VIEWS),
}


def warp(x: torch.Tensor, dx: float, dy: float, scale: float) -> torch.Tensor:
    """Shift by (dx, dy) pixels and scale the sampling grid by `scale` (below 1 zooms in), through the
    training augmentation's own warp (border replicated, no erasing), back to the input's uint8 pixels."""
    if dx == 0 and dy == 0 and scale == 1:
        return x
    from gmenet_cli.data import augment

    n, _, h, w = x.shape
    theta = torch.tensor([[scale, 0, 2 * dx / w], [0, scale, 2 * dy / h]], dtype=torch.float32).expand(n, 2, 3)
    y = augment.warp(x, {"theta": theta, "erase": torch.zeros(n, 5)})
    return y.mul(255).round().clamp(0, 255).to(x.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt) or gmenet .onnx")
    ap.add_argument("--scale", type=int, default=1, help="1: the HR faces; else the LR faces of that scale")
    ap.add_argument("--shift", type=float, default=1.0, help="pixels, in the model's input")
    ap.add_argument("--zoom", type=float, default=0.08)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from gmenet_cli import checkpoint
    from gmenet_cli.data.loader import PairedBatches
    from gmenet_cli.data.store import Store
    from gmenet_cli.evaluate import confusion_from, metrics_from_confusion
    from gmenet_cli.runtime import to_device

    torch.set_num_threads(args.threads)
    store = Store(args.store)
    ckpt = checkpoint.load(args.weights)
    model = checkpoint.build_model(ckpt, args.weights).eval()
    hr = args.scale == 1
    loader = PairedBatches(store.split("val"), 256, [] if hr else [args.scale], shuffle=False, with_hr=hr, even=False)
    logits: dict[tuple[str, bool], list[np.ndarray]] = {}
    labels = []
    with torch.inference_mode():
        for batch in loader:
            batch = to_device(batch, torch.device("cpu"))
            x = batch["hr"] if hr else batch["lowres"]
            for name, (dx, dy, z) in VIEWS.items():
                dx, dy, s = dx * args.shift, dy * args.shift, 1 + z * args.zoom
                for flip in (False, True):
                    if hr:
                        v = warp(x, dx, dy, s)
                        v = v.flip(-1) if flip else v
                    else:  # the student's input: {scale: (positions, faces)}
                        v = {k: (p, warp(f, dx, dy, s)) for k, (p, f) in x.items()}
                        v = {k: (p, f.flip(-1) if flip else f) for k, (p, f) in v.items()}
                    logits.setdefault((name, flip), []).append(model(v).float().numpy())
            labels.append(batch["target"].numpy())
    y = torch.as_tensor(np.concatenate(labels))
    z = {k: np.concatenate(v) for k, v in logits.items()}
    print(f"{args.weights}, {'HR' if hr else f'x{args.scale}'} faces of {args.store} (val): shift {args.shift} px, "
          f"zoom {args.zoom}\n\n| views | reads | accuracy | mean class acc |\n|---|---|---|---|")
    for label, names in SETS.items():
        keys = [(n, False) for n in names] + ([(n, True) for n in names] if label != "as given" else [])
        total = sum(z[k] for k in keys)
        met = metrics_from_confusion(confusion_from(torch.as_tensor(total), y, total.shape[1]), store.classes)
        print(f"| {label} | {len(keys)} | {100 * met['accuracy']:.2f} | {100 * met['mean_class_accuracy']:.2f} |")


if __name__ == "__main__":
    main()
