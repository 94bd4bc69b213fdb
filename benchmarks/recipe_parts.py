"""What two inference-side parts of the recipe add, measured on one finished run: the weight average
(train.ema) against the raw weights of the same last epoch, each with and without flip TTA.

Reads RUN/weights/last.pt (state_dict = the average, train_state_dict = the raw weights) and evaluates both
on the Valid split of the run's own store, at HR for a teacher and at each trained LR scale for a student.

    python benchmarks/recipe_parts.py runs/distill-teacher/NAME [--split val]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    from gmenet_cli import checkpoint
    from gmenet_cli.data.store import Store
    from gmenet_cli.evaluate import confusion, metrics_from_confusion

    last = checkpoint.load(args.run / "weights" / "last.pt")
    if not last.get("train_state_dict"):
        sys.exit(f"{args.run} was trained without train.ema: nothing to compare")
    store = Store(last["data"]["path"])
    part = store.split(args.split)
    scales = [None] if last["kind"] == "teacher" else list(last["input"]["scales"])
    weights = {"weight average (saved)": last["state_dict"], "raw weights, same epoch": last["train_state_dict"]}
    print(header(f"{last['model']['name']} ({args.run.name}, epoch {last['epoch']}): weight average and flip TTA"))
    print("| weights | TTA | " + " | ".join("HR" if s is None else f"x{s}" for s in scales) + " |")
    print("|---|---|" + "---|" * len(scales))
    for name, state in weights.items():
        model = checkpoint.build_model({**last, "state_dict": state}, args.run)
        for tta in (True, False):
            accs = [metrics_from_confusion(confusion(model, part, s, "cpu", 512, tta=tta), store.classes)["accuracy"]
                    for s in scales]
            print(f"| {name} | {'on' if tta else 'off'} | " + " | ".join(f"{a * 100:.2f}" for a in accs) + " |")


if __name__ == "__main__":
    main()
