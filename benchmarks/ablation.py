"""The paper's claim, measured: the ablation table of issue 7 on FERPlus (8 classes, majority labels).

Rows (same recipe and budget): 1 teacher on HR; 2 teacher on upsampled LR; 3 student, CE only, no global
branch; 4 student + A-SKD, no global branch; 5 full GME-Net (A-SKD + global); 6 full GME-Net on x2/x4/x8.
Rows 3-5 train at one scale (--scale, default 4); rows 2, 3, 5, 6 are also evaluated at x2 and x8 when
--sweep is given (rows 3 and 5 then train once per scale). Everything runs through the gmenet CLI in
--workdir, so each number can be reproduced with the command printed next to it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import FERPLUS, header, require_ferplus


def gm(workdir: Path, *args: str) -> float:
    cmd = [sys.executable, "-m", "gmenet_cli", *args]
    print("$ gmenet " + " ".join(args), file=sys.stderr, flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True)
    return time.perf_counter() - t


def evaluate(workdir: Path, weights: Path, scales: str, name: str) -> dict:
    out = workdir / "runs" / "evaluate" / name
    gm(workdir, "evaluate", "--weights", str(weights), "--split", "val", "--scales", scales, "--out", str(out),
       "--batch-size", "512")
    return json.loads((out / "metrics.json").read_text())["models"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", default="ablation-run")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", default="s")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--sweep", action="store_true", help="also train rows 3 and 5 at x2 and x8")
    ap.add_argument("--teacher", help="reuse an existing teacher checkpoint (row 1) instead of training one")
    ap.add_argument("--rows", default="3,4,5,6", help="student rows to train (comma list of 3,4,5,6)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override passed to every student run (recipe work), e.g. distill.weight=1")
    ap.add_argument("--tag", default="", help="suffix for run names, so recipe variants share one workdir")
    args = ap.parse_args()
    require_ferplus()
    wd = Path(args.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    store = wd / "prepared" / "ferplus-x2-4-8"
    if not (store / "manifest.json").is_file():
        gm(wd, "prepare", "--src", "ferplus", "--root", str(FERPLUS), "--scale", "2,4,8", "--out", str(store))
    common = ["--data", str(store), "--preset", "ferplus", "--epochs", str(args.epochs), "-q"]
    rows = {int(r) for r in args.rows.split(",")}
    student = common + [a for kv in args.set for a in ("--set", kv)]
    tag = args.tag
    times, table = {}, []
    if args.teacher:
        teacher = Path(args.teacher).resolve()
    else:
        times["teacher"] = gm(wd, "distill-teacher", *common, "--model", f"teacher_{args.size}", "--name", "row1")
        teacher = wd / "runs/distill-teacher/row1/weights/best.pt"
    t_eval = evaluate(wd, teacher, "1,2,4,8", "row1-2")
    table.append(("1 teacher, HR", t_eval["results"][:1], times.get("teacher")))
    table.append(("2 teacher on upsampled LR", t_eval["results"][1:], None))
    scales = [2, 4, 8] if args.sweep else [args.scale]
    model = ["--model", f"gmenet_{args.size}"]
    for s in scales:
        for row, extra in (("3 student CE only, no global", ["--no-distill", "--no-global"]),
                           ("4 student + A-SKD, no global", ["--no-global"]),
                           ("5 GME-Net (A-SKD + global)", [])):
            if int(row[0]) not in rows or (row.startswith("4") and s != args.scale):
                continue
            name = f"row{row[0]}-x{s}{tag}"
            flags = model if "--no-distill" in extra else model + ["--teacher", str(teacher)]
            times[name] = gm(wd, "train", *student, *flags, *extra, "--scales", str(s), "--name", name)
            res = evaluate(wd, wd / f"runs/train/{name}/weights/best.pt", str(s), name)
            table.append((row, res["results"], times[name]))
    if 6 in rows:
        name = f"row6{tag}"
        times[name] = gm(wd, "train", *student, *model, "--teacher", str(teacher), "--scales", "2,4,8", "--name", name)
        res = evaluate(wd, wd / f"runs/train/{name}/weights/best.pt", "2,4,8", name)
        table.append(("6 GME-Net on x2/x4/x8 together", res["results"], times[name]))
    extra = f", overrides {' '.join(args.set)}" if args.set else ""
    print(header(f"FERPlus ablation ({args.epochs} epochs, size {args.size}{extra})"))
    print("| row | view | face px | accuracy | mean class acc | train time (min) |")
    print("|---|---|---|---|---|---|")
    for row, results, secs in table:
        for r in results:
            t = f"{secs / 60:.1f}" if secs else ""
            print(f"| {row} | {r['view']} | {r['face_px']} | {r['accuracy'] * 100:.2f} | {r['mean_class_accuracy'] * 100:.2f} | {t} |")


if __name__ == "__main__":
    main()
