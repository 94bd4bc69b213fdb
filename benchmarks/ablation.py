"""The paper's claim, measured: the ablation table of issue 7 on FERPlus (8 classes, majority labels).

Rows (same recipe and budget): 1 teacher on HR; 2 teacher on upsampled LR; 3 student, CE only, no global
branch; 4 student + A-SKD, no global branch; 5 full GME-Net (A-SKD + global); 6 full GME-Net on x2/x4/x8;
7 (a control, only when asked for with --rows) student + logit KD from the teacher, no A-SKD, no global
branch: it tells how much of a recipe with logit KD comes from A-SKD and how much from plain KD.
Rows 3-5 (and 7) train at one scale (--scale, default 4); rows 2, 3, 5, 6 are also evaluated at x2 and x8 when
--sweep is given (rows 3 and 5 then train once per scale). Everything runs through the gmenet CLI in
--workdir, so each number can be reproduced with the command printed next to it. Rows whose run already
finished in --workdir are reused, not retrained (their train time is then the sum of the epoch times in
results.csv; otherwise it is the wall time of the train command). Params and GFLOPs are per face at the
model's working size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import FERPLUS, header, require_ferplus


def finished_seconds(run: Path, epochs: int) -> float | None:
    """A run this script already finished (best.pt and `epochs` rows in results.csv): its training seconds.

    Lets an interrupted multi-hour ablation be rerun without retraining the rows it has."""
    import csv

    results = run / "results.csv"
    if not (run / "weights" / "best.pt").is_file() or not results.is_file():
        return None
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) < epochs:
        return None
    print(f"reusing {run} (finished earlier)", file=sys.stderr)
    return sum(float(r["epoch_time_s"]) for r in rows)


def train(workdir: Path, command: str, name: str, epochs: int, *args: str) -> float:
    run = workdir / "runs" / command / name
    done = finished_seconds(run, epochs)
    return done if done is not None else gm(workdir, command, *args, "--name", name)


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
    report = json.loads((out / "metrics.json").read_text())["models"][0]
    report["gflops"] = gflops(weights)
    return report


def gflops(weights: Path) -> float:
    """GFLOPs (2 x multiply-adds) of one face at the model's working size (students resize LR faces up to it)."""
    from gmenet_cli import checkpoint
    from gmenet_cli.models.registry import count_flops

    ckpt = checkpoint.load(weights)
    spec = ckpt["input"]
    return count_flops(checkpoint.build_model(ckpt, weights), int(spec["channels"]), int(spec["hr_size"])) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", default="ablation-run")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", default="s")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--sweep", action="store_true", help="also train rows 3 and 5 at x2 and x8")
    ap.add_argument("--teacher", help="reuse an existing teacher checkpoint (row 1) instead of training one")
    ap.add_argument("--rows", default="3,4,5,6", help="student rows to train (comma list of 3,4,5,6; 7 is the logit-KD-only control)")
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
        times["teacher"] = train(wd, "distill-teacher", "row1", args.epochs, *common, "--model", f"teacher_{args.size}")
        teacher = wd / "runs/distill-teacher/row1/weights/best.pt"
    t_eval = evaluate(wd, teacher, "1,2,4,8", "row1-2")
    table.append(("1 teacher, HR", t_eval, t_eval["results"][:1], times.get("teacher")))
    table.append(("2 teacher on upsampled LR", t_eval, t_eval["results"][1:], None))
    scales = [2, 4, 8] if args.sweep else [args.scale]
    # Row 7 switches A-SKD off (weight 0, after the user's --set so it wins) and keeps or sets logit KD.
    kd_only = ["--set", "distill.weight=0"]
    if not any(kv.startswith("distill.kd_weight=") for kv in args.set):
        kd_only += ["--set", "distill.kd_weight=1"]
    model = ["--model", f"gmenet_{args.size}"]
    for s in scales:
        for row, extra in (("3 student CE only, no global", ["--no-distill", "--no-global"]),
                           ("4 student + A-SKD, no global", ["--no-global"]),
                           ("5 GME-Net (A-SKD + global)", []),
                           ("7 student + logit KD only, no A-SKD, no global", ["--no-global", *kd_only])):
            if int(row[0]) not in rows or (row.startswith("4") and s != args.scale):
                continue
            name = f"row{row[0]}-x{s}{tag}"
            flags = model if "--no-distill" in extra else model + ["--teacher", str(teacher)]
            times[name] = train(wd, "train", name, args.epochs, *student, *flags, *extra, "--scales", str(s))
            res = evaluate(wd, wd / f"runs/train/{name}/weights/best.pt", str(s), name)
            table.append((row, res, res["results"], times[name]))
    if 6 in rows:
        name = f"row6{tag}"
        times[name] = train(wd, "train", name, args.epochs, *student, *model, "--teacher", str(teacher), "--scales", "2,4,8")
        res = evaluate(wd, wd / f"runs/train/{name}/weights/best.pt", "2,4,8", name)
        table.append(("6 GME-Net on x2/x4/x8 together", res, res["results"], times[name]))
    extra = f", overrides {' '.join(args.set)}" if args.set else ""
    title = f"FERPlus ablation ({args.epochs} epochs, size {args.size}{extra})"
    scales_name = "2-4-8" if args.sweep else str(args.scale)
    plot_path = wd / f"resolution_sweep_{args.size}_x{scales_name}_rows{args.rows.replace(',', '')}{tag}.png"
    plot(table, plot_path, title)
    print(header(title))
    print(f"Plot: {plot_path}\n")
    print("| row | view | face px | accuracy | mean class acc | params | GFLOPs | train time (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for row, rep, results, secs in table:
        for r in results:
            t = f"{secs / 60:.1f}" if secs else ""
            print(f"| {row} | {r['view']} | {r['face_px']} | {r['accuracy'] * 100:.2f} | {r['mean_class_accuracy'] * 100:.2f} "
                  f"| {rep['params']:,} | {rep['gflops']:.3f} | {t} |")


def plot(table: list, path: Path, title: str) -> None:
    """Accuracy against face size, one line per row (rows trained at one scale are single points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row, _, results, _ in table:
        px = [r["face_px"] for r in results]
        ax.plot(px, [r["accuracy"] * 100 for r in results], marker="o", label=row)
    ax.set_xscale("log", base=2)
    ax.set_xticks([6, 12, 24, 48], ["6", "12", "24", "48"])
    ax.set_xlabel("face size (px)")
    ax.set_ylabel("FERPlus Valid accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
