"""The paper's claim, measured: the ablation table on FERPlus (8 classes, majority labels, Valid).

Rows (same recipe and budget, the `ferplus` preset's, with --epochs): 0 a plain CNN of about the student's
FLOPs (plain_<size>: no attention, no global branch), CE only: the obvious baseline; 1 teacher on HR;
2 teacher on upsampled LR; 3 student, CE only, no global branch; 4 student + A-SKD, no global branch;
5 full GME-Net (A-SKD + global, plus the preset's logit KD); 6 full GME-Net on x2/x4/x8; 7 student + logit
KD from the teacher, no A-SKD, no global branch: with row 5 it tells what GME-Net's own parts (A-SKD + the
global branch) add over plain KD. Student rows train at each of --scales, once per --seeds. Everything runs
through the gmenet CLI in
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
    report = reusable(out / "metrics.json", weights, [int(v) for v in scales.split(",")])
    if report is None:
        gm(
            workdir,
            "evaluate",
            "--weights",
            str(weights),
            "--split",
            "val",
            "--scales",
            scales,
            "--out",
            str(out),
            "--batch-size",
            "512",
        )
        report = json.loads((out / "metrics.json").read_text())["models"][0]
    report["gflops"] = gflops(weights)
    return report


def reusable(metrics: Path, weights: Path, scales: list[int]) -> dict | None:
    """An earlier evaluation of these same weights at these scales (newer than the weights), or None: a rerun
    in the same workdir (another seed, another row) does not evaluate the teacher again."""
    if not metrics.is_file() or metrics.stat().st_mtime < weights.stat().st_mtime:
        return None
    model = json.loads(metrics.read_text())["models"][0]
    if Path(model["weights"]).resolve() != weights.resolve() or [r["scale"] for r in model["results"]] != scales:
        return None
    print(f"reusing {metrics} (evaluated after {weights} was written)", file=sys.stderr, flush=True)
    return model


def gflops(weights: Path) -> float:
    """GFLOPs (2 x multiply-adds) of one face at the model's working size (students resize LR faces up to it)."""
    from gmenet_cli import checkpoint
    from gmenet_cli.models.registry import count_flops

    ckpt = checkpoint.load(weights)
    model = checkpoint.build_model(ckpt, weights)
    return count_flops(model, int(ckpt["input"]["channels"]), int(model.input_size)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", default="ablation-run")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", default="s2", help="model size name: t, s, m (first generation) or t2, s2, m2")
    ap.add_argument("--scales", default="4", help="LR scales the student rows train at, e.g. 4,8")
    ap.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1 (each student row once per seed)")
    ap.add_argument("--teacher", help="reuse an existing teacher checkpoint (row 1) instead of training one")
    ap.add_argument("--rows", default="0,3,5,7", help="student rows to train (comma list of 0,3,4,5,6,7)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to every student run (recipe work), e.g. distill.weight=1",
    )
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
    scales = [int(v) for v in args.scales.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    # Row 7 switches A-SKD off (weight 0, after the user's --set so it wins) and keeps or sets logit KD.
    kd_only = ["--set", "distill.weight=0"]
    if not any(kv.startswith("distill.kd_weight=") for kv in args.set):
        kd_only += ["--set", "distill.kd_weight=1"]
    model = ["--model", f"gmenet_{args.size}"]
    student_rows = (
        ("0 plain CNN, CE only", ["--model", f"plain_{args.size}", "--no-distill"]),
        ("3 student CE only, no global", [*model, "--no-distill", "--no-global"]),
        ("4 student + A-SKD, no global", [*model, "--no-global"]),
        ("5 GME-Net (A-SKD + global)", model),
        ("7 student + logit KD only, no A-SKD, no global", [*model, "--no-global", *kd_only]),
    )
    for s in scales:
        for seed in seeds:
            for row, extra in student_rows:
                if int(row[0]) not in rows:
                    continue
                name = f"row{row[0]}-x{s}{tag}" + (f"-seed{seed}" if seed else "")
                flags = extra if "--no-distill" in extra else extra + ["--teacher", str(teacher)]
                times[name] = train(
                    wd, "train", name, args.epochs, *student, *flags, "--scales", str(s), "--seed", str(seed)
                )
                res = evaluate(wd, wd / f"runs/train/{name}/weights/best.pt", str(s), name)
                table.append((row + (f" (seed {seed})" if len(seeds) > 1 else ""), res, res["results"], times[name]))
    if 6 in rows:
        name = f"row6{tag}"
        times[name] = train(
            wd, "train", name, args.epochs, *student, *model, "--teacher", str(teacher), "--scales", "2,4,8"
        )
        res = evaluate(wd, wd / f"runs/train/{name}/weights/best.pt", "2,4,8", name)
        table.append(("6 GME-Net on x2/x4/x8 together", res, res["results"], times[name]))
    extra = f", overrides {' '.join(args.set)}" if args.set else ""
    title = f"FERPlus ablation ({args.epochs} epochs, size {args.size}{extra})"
    plot_path = (
        wd / f"resolution_sweep_{args.size}_x{args.scales.replace(',', '-')}_rows{args.rows.replace(',', '')}{tag}.png"
    )
    plot(table, plot_path, title)
    print(header(title))
    print(f"Plot: {plot_path}\n")
    print("| row | view | face px | accuracy | mean class acc | params | GFLOPs | train time (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for row, rep, results, secs in table:
        for r in results:
            t = f"{secs / 60:.1f}" if secs else ""
            print(
                f"| {row} | {r['view']} | {r['face_px']} | {r['accuracy'] * 100:.2f} | "
                f"{r['mean_class_accuracy'] * 100:.2f} "
                f"| {rep['params']:,} | {rep['gflops']:.3f} | {t} |"
            )
    summary(table)


def summary(table: list) -> None:
    """Per scale, each student row's mean over seeds, and the differences the paper's claim is about."""
    import statistics

    means: dict = {}
    for row, _, results, _ in table:
        if row[0] in "0357" and len(results) == 1:
            r = results[0]
            means.setdefault((row[0], r["view"]), []).append((r["accuracy"] * 100, r["mean_class_accuracy"] * 100))
    if not means:
        return
    print("\n| scale | row | seeds | accuracy (mean) | mean class acc (mean) |")
    print("|---|---|---|---|---|")
    for (row, view), vals in sorted(means.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(
            f"| {view} | {row} | {len(vals)} | {statistics.mean(v[0] for v in vals):.2f} | "
            f"{statistics.mean(v[1] for v in vals):.2f} |"
        )
    for view in sorted({v for _, v in means}):
        get = {row: statistics.mean(a for a, _ in vals) for (row, v), vals in means.items() if v == view}
        parts = [
            f"{a} - {b}: {get[a] - get[b]:+.2f}"
            for a, b in (("5", "0"), ("5", "3"), ("5", "7"), ("7", "3"))
            if a in get and b in get
        ]
        if parts:  # a run of one row has no differences to print
            print(
                f"\n{view}: " + "; ".join(parts) + " (accuracy points; 5 - 7 = what A-SKD + the global branch add "
                "over KD alone)"
            )


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
