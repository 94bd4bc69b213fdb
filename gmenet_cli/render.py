"""What each command shows: Rich tables and progress on stderr for people, JSON lines and CSV on stdout for
programs. The library returns data; everything here only formats it (cli.py decides what to call)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gmenet_cli.console import data_out, err


# ---------------------------------------------------------------------------------------------- prepare

def store_summary(path: Path, manifest: dict, seconds: float) -> None:
    classes = manifest["classes"]
    table = Table(title=f"{manifest['source']} -> {path}", title_justify="left")
    table.add_column("split")
    table.add_column("faces", justify="right")
    for c in classes:
        table.add_column(c[:8], justify="right")
    total = 0
    for split, info in manifest["splits"].items():
        total += info["count"]
        table.add_row(split, str(info["count"]), *(str(info["class_counts"][c]) for c in classes))
    err.print(table)
    lowres = ", ".join(f"x{s}: {n}px" for s, n in manifest["lr_sizes"].items())
    err.print(f"HR {manifest['hr_size']}px, {manifest['channels']} channel(s); LR {lowres}; "
              f"{total} faces in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f} faces/s)")
    if manifest["skipped"]["count"]:
        err.print(f"[yellow]skipped {manifest['skipped']['count']} unreadable image(s): see {path / 'skipped.tsv'}[/yellow]")
    for reason, n in manifest.get("dropped", {}).items():
        err.print(f"dropped {n} row(s): {reason}")
    err.print(f"Next: gmenet distill-teacher --data {path}")


# ---------------------------------------------------------------------------------------------- training

class RichTraining:
    """Renders training callbacks: a progress bar per epoch (loss, accuracy, ETA) and one line per epoch."""

    def __init__(self, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=err, transient=True,
                            disable=quiet or not err.is_terminal)
        self.task = None

    def start(self, info: dict) -> None:
        where = f"{info['device']}" + (f" x{info['world']} processes" if info["world"] > 1 else "")
        resumed = f", resuming at epoch {info['start_epoch'] + 1}" if info["start_epoch"] else ""
        err.print(f"{info['model']} ({info['params']:,} parameters) on {where}: {info['train']} training faces from "
                  f"{info['store']}, {info['epochs']} epochs{resumed} -> {info['run_dir']}")

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.bar.disable:
            return
        self.bar.start()
        self.task = self.bar.add_task(f"epoch {epoch + 1}/{epochs}", total=batches, stats="")

    def batch(self, i: int, scalars: dict) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=i + 1, stats=f"loss {scalars['loss']:.3f} acc {scalars['acc']:.3f}")

    def epoch_end(self, row: dict) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.bar.stop()
            self.task = None
        val = "".join(f" {k} {row[k]:.4f}" for k in row if k.startswith("val_acc"))
        mark = " *best*" if row.get("best") else ""
        err.print(f"epoch {row['epoch']}: loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f}{val} "
                  f"({row['epoch_time_s']:.0f}s, {row['images_per_s']:.0f} img/s){mark}")

    def message(self, text: str) -> None:
        err.print(text)


def training_done(result, next_command: str) -> None:
    err.print(f"[green]done[/green]: best {result.best_metric:.4f} (validation accuracy) -> {result.best}")
    err.print(f"results: {result.run_dir / 'results.csv'}, curves: {result.run_dir / 'results.png'}")
    err.print(f"Next: {next_command}")


# ---------------------------------------------------------------------------------------------- evaluate

def evaluation_report(report: dict) -> None:
    table = Table(title=f"{report['split']} split of {report['data']} ({report['count']} faces)", title_justify="left")
    for col in ("model", "view", "face px", "accuracy", "mean class acc", "macro F1"):
        table.add_column(col, justify="left" if col in ("model", "view") else "right")
    for m in report["models"]:
        for r in m["results"]:
            table.add_row(f"{m['model']} ({Path(m['weights']).parent.parent.name})", r["view"], str(r["face_px"]),
                          f"{r['accuracy']:.4f}", f"{r['mean_class_accuracy']:.4f}", f"{r['macro_f1']:.4f}")
    err.print(table)
    first = report["models"][0]["results"][0]
    per = Table(title=f"per class ({report['models'][0]['model']}, {first['view']})", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for c, v in first["per_class"].items():
        per.add_row(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    err.print(per)


# ---------------------------------------------------------------------------------------------- predict

class PredictOutput:
    """One result dict at a time -> JSON lines, CSV rows (both streamed to stdout) or a table at the end;
    errors and faceless inputs are reported on stderr as they come. Counts them for the exit code."""

    def __init__(self, mode: str, classes: list[str]):
        self.mode, self.classes = mode, classes  # mode: json | csv | table
        self.rows: list[dict] = []
        self.bad = self.faceless = 0
        self.writer = None
        if mode == "csv":
            self.writer = csv.writer(sys.stdout, lineterminator="\n")
            self.writer.writerow(["file", "frame", "face", "x", "y", "w", "h", "label", "confidence", "face_px", *classes])

    def add(self, r: dict) -> None:
        if "error" in r:
            self.bad += 1
            err.print(f"[red]error[/red]: {r['file']}: {r['error']}", soft_wrap=True)
            return
        if r.get("faces") == 0:
            self.faceless += 1
            err.print(f"{r['file']}: {r.get('note', 'no face found')}", soft_wrap=True)
        if self.mode == "json":
            data_out(json.dumps(r))
        elif self.mode == "csv":
            self._csv_row(r)
        elif "label" in r:
            self.rows.append(r)

    def _csv_row(self, r: dict) -> None:
        if "label" in r:
            self.writer.writerow([r["file"], r.get("frame", ""), r["face"], *r["box"], r["label"], r["confidence"],
                                  r["face_px"], *(r["probs"][c] for c in self.classes)])
        else:
            self.writer.writerow([r["file"], r.get("frame", ""), "", "", "", "", "", "", "", "", *([""] * len(self.classes))])
        sys.stdout.flush()

    def finish(self) -> None:
        if self.mode != "table" or not self.rows:
            return
        table = Table()
        for col in ("file", "face", "label", "confidence", "face px", "box"):
            # file names wrap instead of being cut to "examples/astronaut…" on a narrow terminal
            table.add_column(col, justify="right" if col in ("confidence", "face px") else "left",
                             overflow="fold" if col == "file" else "ellipsis")
        for r in self.rows:
            name = r["file"] + (f"#{r['frame']}" if "frame" in r else "")
            table.add_row(name, str(r["face"]), r["label"], f"{r['confidence']:.3f}", f"{r['face_px']:.0f}",
                          ",".join(f"{v:.0f}" for v in r["box"]))
        Console(highlight=False).print(table)


# ---------------------------------------------------------------------------------------------- models

def models_table(rows: list[dict], input_size: int, channels: int, classes: int) -> None:
    table = Table(title=f"models at {input_size}px working size ({channels} ch, {classes} classes)", title_justify="left")
    for col in ("name", "kind", "params", "GFLOPs", "input px", "about"):
        table.add_column(col, justify="right" if col in ("params", "GFLOPs", "input px") else "left")
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['params']:,}", f"{r['gflops']:.3f}", str(r["input_px"]), r["about"])
    Console(highlight=False).print(table)
