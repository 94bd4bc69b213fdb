"""Recipes side by side for the rare-class issue: for each trained student (and its teacher), FERPlus Valid
accuracy and mean class accuracy at every face size, the recall of the rare classes at 12 px, and mean class
accuracy on a labelled folder from another source (cross_eval.py: predict's own code path), in one table.

    python benchmarks/recipe_compare.py --runs /work/exp/runs/train/qA_s /work/exp/runs/train/qB_s \\
        --store prepared/ferplus-x2-4-8 --cross ../shared/data/muxspace-val [--markdown]

Each run's teacher is read from its checkpoint. Numbers are computed afresh every time (nothing cached), on
the validation split the runs chose best.pt on: compare recipes here once, not once per epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cross_eval  # noqa: E402

from gmenet_cli import checkpoint  # noqa: E402
from gmenet_cli.evaluate import evaluate  # noqa: E402

RARE = ("disgust", "contempt", "fear")


def ferplus(weights: str, store: str, scales: list[int]) -> dict:
    report = evaluate([weights], store, "val", scales, "cpu", 512)
    return {r["face_px"]: r for r in report["models"][0]["results"]}


def cross(weights: str, folder: str, sizes: str) -> dict:
    import contextlib
    import io
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.json"
        with contextlib.redirect_stdout(io.StringIO()):
            cross_eval.main([folder, "--weights", weights, "--sizes", sizes, "--json", str(out)])
        return json.loads(out.read_text())["sizes"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="runs/train/<name> folders (their best.pt)")
    ap.add_argument("--store", required=True)
    ap.add_argument("--cross", help="a labelled <class>/*.jpg folder from another source (validation only)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    rows = []
    for run in args.runs:
        best = str(Path(run) / "weights" / "best.pt")
        ckpt = checkpoint.load(best)
        teacher = (ckpt.get("teacher") or {}).get("path")
        cfg = ckpt["config"]
        camera = ("brightness", "contrast", "gamma", "blur", "noise")
        recipe = f"tau {cfg['train'].get('logit_adjust', 0)}" + "".join(
            f", {k} {v}" for k, v in cfg["augment"].items() if k in camera and v)
        s = ferplus(best, args.store, [2, 4, 8])
        row = {"run": Path(run).name, "recipe": recipe}
        for px in (24, 12, 6):
            row[f"acc{px}"], row[f"mca{px}"] = s[px]["accuracy"], s[px]["mean_class_accuracy"]
        for c in RARE:
            row[f"{c}12"] = s[12]["per_class"][c]["recall"]
        if teacher:
            t = ferplus(teacher, args.store, [1])[48]
            row["t_acc"], row["t_mca"] = t["accuracy"], t["mean_class_accuracy"]
        if args.cross:
            x = cross(best, args.cross, "full,12")
            row["x_full"], row["x_12"] = x["full"]["mean_class_accuracy"], x["12"]["mean_class_accuracy"]
            if teacher:
                row["xt_full"] = cross(teacher, args.cross, "full")["full"]["mean_class_accuracy"]
        rows.append(row)
        print(row, flush=True)

    cols = ["run", "recipe", "t_acc", "t_mca", "acc24", "mca24", "acc12", "mca12", "disgust12", "contempt12", "fear12",
            "acc6", "mca6", "xt_full", "x_full", "x_12"]
    if args.markdown:
        print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(r.get(c, "") if isinstance(r.get(c, ""), str) else f"{100 * r[c]:.1f}"
                                      for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
