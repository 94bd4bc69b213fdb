"""What each command shows: Rich tables and progress on stderr for people, JSON lines and CSV on stdout for
programs. The library returns data; everything here only formats it (cli.py decides what to call)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from rich.table import Table

from gmenet_cli.console import data_out, err, table_console

# ---------------------------------------------------------------------------------------------- prepare

def store_summary(path: Path, manifest: dict, seconds: float) -> None:
    """Faces per class and split: classes as rows, so class names are never cut, however narrow the terminal."""
    splits = list(manifest["splits"])
    table = Table(title=f"{manifest['source']} -> {path}", title_justify="left")
    table.add_column("class", no_wrap=True)
    for split in splits:
        table.add_column(split, justify="right")
    for c in manifest["classes"]:
        table.add_row(c, *(str(manifest["splits"][sp]["class_counts"][c]) for sp in splits))
    counts = [manifest["splits"][sp]["count"] for sp in splits]
    table.add_row("[bold]all[/bold]", *(f"[bold]{n}[/bold]" for n in counts))
    err.print(table)
    total = sum(counts)
    lowres = ", ".join(f"x{s}: {n}px" for s, n in manifest["lr_sizes"].items())
    err.print(f"HR {manifest['hr_size']}px, {manifest['channels']} channel(s); LR {lowres}; "
              f"{total} faces in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f} faces/s)")
    if manifest["skipped"]["count"]:
        err.print(f"[yellow]skipped {manifest['skipped']['count']} unreadable image(s): see "
                  f"{path / 'skipped.tsv'}[/yellow]")
    for reason, n in manifest.get("dropped", {}).items():
        err.print(f"dropped {n} row(s): {reason}")
    if "test" not in splits:
        err.print(f"no test split (the source folder had none): gmenet evaluate reports on "
                  f"{'val' if 'val' in splits else 'train'}, the split training chooses best.pt on")
    from gmenet_cli.config import presets

    err.print(f"wrote {path}")
    if manifest["source"] == "ferplus":  # a first try first; the 80-minute recipe of the shipped models after it
        err.print(f"Next: gmenet distill-teacher --preset quick --data {path}")
        err.print("      (a first try, 2 epochs; --preset ferplus is the full recipe of the shipped models)")
        return
    preset = f" --preset {manifest['source']}" if manifest["source"] in presets() else ""
    err.print(f"Next: gmenet distill-teacher{preset} --data {path}")


def datasets_table(rows: list[dict]) -> None:
    table = Table(
        title="dataset sources (gmenet prepare --src NAME looks in these places, in order)", title_justify="left"
    )
    for col in ("source", "looks in", "found"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["source"], "\n".join(r["looks_in"]), r["found"] or "-")
    table_console().print(table)
    err.print(
        "Put a dataset in one of these places (or pass --root); each must hold the layout in gmenet prepare --help."
    )


# ---------------------------------------------------------------------------------------------- training


class RichTraining:
    """Renders training callbacks: an overall bar (epochs, time left) over a per-epoch bar (loss, accuracy),
    one line per epoch, and one line with the estimated time of the whole run: after the first batches
    (training only), then again after the first epoch with its validation measured. Off a terminal (no bar),
    a plain progress line every PLAIN_EVERY seconds, unless quiet."""

    ESTIMATE_AFTER = 20  # batches timed before the estimate is printed (after the first progress call's)
    PLAIN_EVERY = 60.0  # seconds between progress lines when there is no bar (output piped or logged)

    def __init__(self, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        # The time column is ours: progress arrives every few batches, too rarely for Rich's own speed
        # estimate, which showed -:--:-- for whole short epochs.
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("{task.fields[eta]}"),
            console=err,
            transient=True,
            disable=quiet or not err.is_terminal,
        )
        self.quiet = quiet
        self.task = self.total = None
        self.epochs = self.epoch = self.batches = self.first_epoch = 0
        self.t_epoch, self.estimated = 0.0, False
        self.t_warm, self.warm = None, 0
        self.per_batch = None  # seconds per training batch, once measured
        self.t_plain = 0.0
        self.validation_s = None  # the first epoch's validation time, once measured

    def start(self, info: dict) -> None:
        where = f"{info['device']}" + (f" x{info['world']} processes" if info["world"] > 1 else "")
        resumed = f", resuming at epoch {info['start_epoch'] + 1}" if info["start_epoch"] else ""
        err.print(
            f"{info['model']} ({info['params']:,} parameters) on {where}: {info['train']} training faces from "
            f"{info['store']}, {info['epochs']} epoch{'s' if info['epochs'] != 1 else ''}{resumed}, batch "
            f"{info['batch_size']} -> {info['run_dir']}"
        )
        self.epochs = info["epochs"]

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        import time

        self.epoch, self.epochs, self.batches, self.t_epoch = epoch, epochs, batches, time.perf_counter()
        self.t_plain = self.t_epoch
        if not self.estimated:
            self.t_warm = None
        if self.bar.disable:
            return
        self.bar.start()
        if self.total is None:
            self.first_epoch = epoch
            self.total = self.bar.add_task("all epochs", total=(epochs - epoch) * batches, stats="", eta="")
        self.task = self.bar.add_task(f"epoch {epoch + 1}/{epochs}", total=batches, stats="", eta="")

    def batch(self, i: int, scalars: dict) -> None:
        import time

        if not self.estimated:
            if self.t_warm is None and i + 1 >= self.batches:  # a short epoch: time all of it
                self.t_warm, self.warm = self.t_epoch, 0
                self._estimate(i + 1)
            elif self.t_warm is None:  # the first batches pay one-time costs (page-in, kernel set-up): not timed
                self.t_warm, self.warm = time.perf_counter(), i + 1
            elif i + 1 >= min(self.warm + self.ESTIMATE_AFTER, self.batches):
                self._estimate(i + 1)
        stats = f"loss {scalars['loss']:.3f} acc {scalars['acc']:.3f}"
        now = time.perf_counter()
        if self.task is not None:
            left = self._left(i + 1)
            self.bar.update(self.task, completed=i + 1, stats=stats, eta=f"{_clock(now - self.t_epoch)} elapsed")
            self.bar.update(self.total, completed=(self.epoch - self.first_epoch) * self.batches + i + 1,
                            eta=f"~{_duration(left)} left" if left is not None else "")
        elif not self.quiet and now - self.t_plain >= self.PLAIN_EVERY:  # no bar: a line now and then
            self.t_plain = now
            err.print(f"  epoch {self.epoch + 1}/{self.epochs}: batch {i + 1}/{self.batches}, {stats}, "
                      f"{_clock(now - self.t_epoch)} elapsed")

    def _left(self, done: int) -> float | None:
        """Seconds left in the run after `done` batches of this epoch: training at the measured rate, plus
        each remaining validation once one has been measured."""
        if self.per_batch is None:
            return None
        left = self.per_batch * ((self.epochs - self.epoch) * self.batches - done)
        return left + (self.validation_s or 0.0) * (self.epochs - self.epoch)

    def _estimate(self, done: int) -> None:
        import datetime
        import time

        self.estimated = True
        self.per_batch = (time.perf_counter() - self.t_warm) / (done - self.warm)
        left = self._left(done)
        end = datetime.datetime.now() + datetime.timedelta(seconds=left)
        n = self.epochs - self.epoch
        err.print(
            f"estimate: {_duration(self.per_batch * self.batches)} of training per epoch, {n} epoch"
            f"{'s' if n != 1 else ''} to go: about {_duration(left)} plus validation, ending after {end:%H:%M} "
            "(updated once the first validation is timed)"
        )

    def epoch_end(self, row: dict) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        if row["epoch"] >= self.epochs and self.total is not None:
            self.bar.stop()
        val = "".join(f" {k} {row[k]:.4f}" for k in row if k.startswith("val_acc"))
        mark = " *best*" if row.get("best") else ""
        err.print(
            f"epoch {row['epoch']}/{self.epochs}: loss {row['train_loss']:.4f} train_acc "
            f"{row['train_acc']:.4f}{val} "
            f"({row['epoch_time_s']:.0f}s, {row['images_per_s']:.0f} img/s){mark}"
        )
        if self.validation_s is None and "val_time_s" in row and self.per_batch is not None:
            import datetime

            self.validation_s = float(row["val_time_s"])
            left = (self.per_batch * self.batches + self.validation_s) * (self.epochs - row["epoch"])
            if left > 0:
                end = datetime.datetime.now() + datetime.timedelta(seconds=left)
                err.print(f"estimate with validation ({_duration(self.validation_s)} each): about {_duration(left)} "
                          f"to go, ending around {end:%H:%M}")

    def message(self, text: str) -> None:
        err.print(text)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    minutes = round(seconds / 60)  # round once, so that 7,170 s reads "2 h 0 min", not "1 h 60 min"
    return f"{minutes // 60} h {minutes % 60} min"


def training_done(result, next_command: str) -> None:
    err.print(f"[green]done[/green]: best {result.best_metric:.4f} (validation accuracy) -> {result.best}")
    err.print(f"results: {result.run_dir / 'results.csv'}, curves: {result.run_dir / 'results.png'}")
    err.print(f"Next: {next_command}")


# ---------------------------------------------------------------------------------------------- evaluate


def evaluation_report(report: dict) -> None:
    out = table_console(stderr=True)  # stdout carries --json; a log file gets whole rows
    table = Table(
        title=f"{report['split']} split of {report['data']} ({report['count']} faces"
        f"{', flip TTA' if report.get('tta') else ''})",
        title_justify="left",
    )
    for col in ("model", "view", "face px", "accuracy", "mean class acc", "macro F1", "ECE"):
        numeric = col not in ("model", "view")
        table.add_column(
            col, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric and col != "mean class acc"
        )
    for m in report["models"]:
        for r in m["results"]:
            table.add_row(
                m["label"],
                r["view"],
                str(r["face_px"]),
                f"{r['accuracy']:.4f}",
                f"{r['mean_class_accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
                f"{r['ece']:.3f}" + _temperatures(r),
            )
    out.print(table)
    model = report["models"][0]
    first = model["results"][model.get("primary_view", 0)]
    per = Table(title=f"per class ({model['model']}, {first['view']}, {first['face_px']}px)", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
    for c, v in first["per_class"].items():
        per.add_row(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    out.print(per)
    # recall of every class at every size: where the rare classes (disgust, contempt, fear) are lost
    recall = Table(title="recall per class and face size", title_justify="left")
    recall.add_column("model / view", no_wrap=True)
    for c in report["classes"]:
        recall.add_column(c, justify="right", no_wrap=True)
    for m in report["models"]:
        for r in m["results"]:
            recall.add_row(
                f"{m['label']} {r['view']} {r['face_px']}px",
                *(f"{r['per_class'][c]['recall']:.3f}" for c in report["classes"]),
            )
    out.print(recall)


# ---------------------------------------------------------------------------------------------- predict


class PredictOutput:
    """One result dict at a time -> JSON lines, CSV rows (both streamed to stdout) or a table at the end.

    The contract: `--json` gives one record per face (every record has a `label`: `jq -r .label` gives one
    line per face); with `per_input` (predict --summary) also one record per input after its faces: its
    summary, or `faces: 0` and a `note` (no face), or `error` (unreadable). `--csv` gives one row per face and
    one per faceless or unreadable input (its last column `note` says why). Errors and faceless inputs are
    also reported on stderr as they come, and counted for the exit code."""

    def __init__(self, mode: str, classes: list[str], per_input: bool = False):
        self.mode, self.classes = mode, classes  # mode: json | csv | table
        self.per_input = per_input
        self.rows: list[dict] = []
        self.summary = None  # InputSummary of the input being reported (its records arrive together)
        self.summaries: list = []
        self.bad = self.faceless = 0
        self.writer = None
        if mode == "csv":
            self.writer = csv.writer(sys.stdout, lineterminator="\n")
            self.writer.writerow(
                [
                    "file",
                    "frame",
                    "face",
                    "x",
                    "y",
                    "w",
                    "h",
                    "label",
                    "confidence",
                    "face_px",
                    "input_px",
                    "detector_score",
                    "guess",
                    *classes,
                    "track",
                    "smoothed_label",
                    "note",
                ]
            )

    def _summarise(self, r: dict | None) -> None:
        """Close the previous input's summary when another input's records begin (or at the end): a JSON
        summary record (predict --summary) follows the input's faces; the table lists them all after its rows."""
        from gmenet_cli.predict.summary import InputSummary

        if self.summary is not None and (r is None or r["file"] != self.summary.file):
            if not self.summary.empty:
                self.summaries.append(self.summary)
                if self.mode == "json" and self.per_input:
                    data_out(json.dumps(self.summary.record()))
            self.summary = None
        if r is not None:
            self.summary = self.summary or InputSummary(r["file"])
            self.summary.add(r)

    def add(self, r: dict) -> None:
        self._summarise(r)
        if "error" in r:
            self.bad += 1
            err.print(f"[red]error[/red]: {r['file']}: {r['error']}", soft_wrap=True)
        elif r.get("faces") == 0:
            self.faceless += 1
            err.print(f"{r['file']}: {r.get('note', 'no face found')}", soft_wrap=True)
        if self.mode == "json":
            if "label" in r or self.per_input:
                data_out(json.dumps(r))
        elif self.mode == "csv":
            self._csv_row(r)
        elif "label" in r:
            self.rows.append(r)

    def _csv_row(self, r: dict) -> None:
        if "label" in r:
            self.writer.writerow(
                [
                    r["file"],
                    r.get("frame", ""),
                    r["face"],
                    *r["box"],
                    r["label"],
                    r["confidence"],
                    r["face_px"],
                    r["input_px"],
                    r["detector_score"],
                    r.get("guess", ""),
                    *(r["probs"][c] for c in self.classes),
                    r.get("track", ""),
                    r.get("smoothed_label", ""),
                    "",
                ]
            )
        else:
            note = r.get("error") or r.get("note") or "no face found"
            self.writer.writerow([r["file"], r.get("frame", ""), *([""] * (13 + len(self.classes))), note])
        sys.stdout.flush()

    def finish(self) -> None:
        self._summarise(None)
        if self.mode != "table" or not self.rows:
            return
        table = Table()
        tracked = any("track" in r for r in self.rows)
        for col in ("file", "face", "label", "confidence", "face px", "box") + (
            ("track", "smoothed") if tracked else ()
        ):
            # file names wrap instead of being cut to "examples/astronaut…" on a narrow terminal
            table.add_column(
                col,
                justify="right" if col in ("confidence", "face px") else "left",
                overflow="fold" if col in ("file", "box") else "ellipsis",
                no_wrap=col in ("label", "confidence"),
            )
        for r in self.rows:
            name = r["file"] + (f"#{r['frame']}" if "frame" in r else "")
            label = r["label"] + (f" ({r['guess']}?)" if "guess" in r else "")
            table.add_row(
                name,
                str(r["face"]),
                label,
                f"{r['confidence']:.3f}",
                f"{r['face_px']:.0f}",
                ",".join(f"{v:.0f}" for v in r["box"]),
                *((str(r.get("track", "")), r.get("smoothed_label", "")) if tracked else ()),
            )
        out = table_console()
        out.print(table)
        for s in self.summaries:
            out.print(s.line(), soft_wrap=True)


# ---------------------------------------------------------------------------------------------- models


def models_table(rows: list[dict], hr_size: int, lr_size: int, channels: int, classes: int) -> None:
    """`works at`: the size a model computes at for this HR size (students of the "2" family: half of it);
    `face px`: the face it is given for the FLOP count (teachers the HR face, students an LR face)."""
    table = Table(title=f"models for {hr_size}px HR faces ({channels} ch, {classes} classes); students given "
                        f"{lr_size}px faces", title_justify="left")
    for col in ("name", "kind", "params", "GFLOPs", "face px", "works at px", "about"):
        table.add_column(col, justify="right" if col in ("params", "GFLOPs", "face px", "works at px") else "left")
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['params']:,}", f"{r['gflops']:.3f}", str(r["input_px"]),
                      str(r["working_px"]), r["about"])
    table_console().print(table)


def _temperatures(r: dict) -> str:
    """The calibration behind an ECE: class temperatures (their range), one temperature, or none."""
    per = r.get("class_temperature")
    if per and min(per) < max(per):
        return " (T/class)"  # their range is in metrics.json and the checkpoint: a narrow table stays readable
    return "" if r["temperature"] == 1 else f" (T {r['temperature']:.2f})"
