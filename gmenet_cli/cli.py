"""The `gmenet` command line: a thin composition root.

Each command parses options, resolves the config, calls ONE library function and renders the result.
Heavy imports (torch, cv2) happen inside the commands so that `gmenet --help` stays instant.
Human text and progress go to stderr; `--json` data goes to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from gmenet_cli import __version__
from gmenet_cli.console import data_out, err, handle_errors

app = typer.Typer(
    name="gmenet",
    help="Recognise facial expressions on low-resolution faces (GME-Net).\n\n"
    "Typical run: prepare -> distill-teacher -> train -> evaluate -> predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Shared option definitions (one place, so every command spells them the same way).
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (sections: prepare, model, optim, train, distill).")
SetOpt = typer.Option(None, "--set", help="Override one config key, e.g. --set train.epochs=3 (repeatable).")
PresetOpt = typer.Option(None, "--preset", help="Start from a built-in preset: ferplus, fer2013, raf, tiny.")
DeviceOpt = typer.Option(None, "--device", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout (human text stays on stderr).")


def _version(value: bool):
    if value:
        data_out(f"gmenet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
):
    """Recognise facial expressions on low-resolution faces (GME-Net)."""


def _scales(values: Optional[List[str]]) -> Optional[list[int]]:
    """`--scale 8`, `--scale 2,4,8` and `--scale 2 --scale 4` all work."""
    from gmenet_cli.errors import UsageError

    if not values:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip().lower().lstrip("x")
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                raise UsageError(f"--scale expects integers like 4 or 2,4,8, got '{v}'") from None
    return out


SOURCE_HELP = """Sources and the files each expects under --root:

\b
  ferplus    ROOT/FER2013Train|FER2013Valid|FER2013Test/label.csv + PNGs (FERPlus vote counts)
  fer2013    ROOT/fer2013.csv (emotion,pixels,Usage) or the CSV itself
  raf        ROOT/EmoLabel/list_patition_label.txt + ROOT/Image/aligned/*_aligned.jpg,
             or the re-packed ROOT/{train,test}/{1..7}/*.jpg
  expw       ROOT/label/label.lst + ROOT/image/origin/*.jpg (faces cropped from the boxes)
  affectnet  ROOT/training.csv, ROOT/validation.csv + ROOT/Manually_Annotated_Images/...
  folder     ROOT/<split>/<class>/*.jpg or ROOT/<class>/*.jpg
"""


@app.command(epilog=SOURCE_HELP)
@handle_errors
def prepare(
    src: str = typer.Option(..., "--src", help="Dataset layout: ferplus, fer2013, raf, expw, affectnet, folder."),
    root_dir: Path = typer.Option(..., "--root", help="The dataset folder, as downloaded."),
    scale: Optional[List[str]] = typer.Option(None, "--scale", "-s", help="LR factor(s): 4, or 2,4,8 (HR size / scale = LR size)."),
    hr_size: Optional[int] = typer.Option(None, "--hr-size", help="HR face size in pixels (default: the source's, 48 or 112)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output store folder (default prepared/<src>-x<scales>)."),
    method: Optional[str] = typer.Option(None, "--method", help="Downsampling: area (default), bicubic, bilinear, nearest."),
    blur: Optional[float] = typer.Option(None, "--blur", help="Gaussian blur sigma in HR pixels before downsampling (0 = off)."),
    noise: Optional[float] = typer.Option(None, "--noise", help="Gaussian noise std on LR faces, 0..255 units (0 = off)."),
    jpeg: Optional[int] = typer.Option(None, "--jpeg", help="JPEG quality for an LR round-trip (0 = off)."),
    classes: Optional[int] = typer.Option(None, "--classes", help="7 or 8 (FERPlus/AffectNet; 7 drops contempt)."),
    label_mode: Optional[str] = typer.Option(None, "--label-mode", help="FERPlus: majority (default) or votes (also keep soft labels)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="1 (gray) or 3 (colour); default: the source's."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for LR degradations and seeded splits."),
    group_regex: Optional[str] = typer.Option(None, "--group-regex", help="folder source: keep files sharing this regex match in one split."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable image instead of skipping it."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decoding threads (0 = up to 4). Output bytes do not depend on it."),
    config: Optional[Path] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
):
    """Build HR/LR face pairs from a dataset in its native layout.

    Writes a prepared store (uint8 arrays + manifest.json) that distill-teacher, train and evaluate read.
    Example: gmenet prepare --src ferplus --root data/ferplus --scale 2,4,8
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gmenet_cli.config import build_config
    from gmenet_cli.data.store import prepare as run_prepare

    flags = {
        "prepare.scales": _scales(scale), "prepare.hr_size": hr_size, "prepare.method": method,
        "prepare.blur_sigma": blur, "prepare.noise_std": noise, "prepare.jpeg_quality": jpeg,
        "prepare.classes": classes, "prepare.label_mode": label_mode, "prepare.channels": channels,
        "prepare.seed": seed, "prepare.group_regex": group_regex,
    }
    cfg = build_config(config_file=str(config) if config else None, sets=sets, flags=flags)
    start = time.perf_counter()
    with Progress(TextColumn("preparing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("prepare", total=None)
        path, manifest = run_prepare(src, root_dir, out, cfg.prepare, strict=strict, workers=workers,
                                     progress=lambda d, t: bar.update(task, completed=d, total=t))
    seconds = time.perf_counter() - start
    if as_json:
        data_out(json.dumps(manifest))
    _print_store_summary(path, manifest, seconds)


def _print_store_summary(path: Path, manifest: dict, seconds: float) -> None:
    from rich.table import Table

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
    lr = ", ".join(f"x{s}: {n}px" for s, n in manifest["lr_sizes"].items())
    err.print(f"HR {manifest['hr_size']}px, {manifest['channels']} channel(s); LR {lr}; "
              f"{total} faces in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f} faces/s)")
    if manifest["skipped"]["count"]:
        err.print(f"[yellow]skipped {manifest['skipped']['count']} unreadable image(s): see {path / 'skipped.tsv'}[/yellow]")
    for reason, n in manifest.get("dropped", {}).items():
        err.print(f"dropped {n} row(s): {reason}")
    err.print(f"Next: gmenet distill-teacher --data {path}")


class _RichTraining:
    """Renders engine callbacks: a progress bar per epoch (loss, accuracy, ETA) and one line per epoch."""

    def __init__(self, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.quiet = quiet
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=err, transient=True)
        self.task = None

    def start(self, info: dict) -> None:
        where = f"{info['device']}" + (f" x{info['world']} processes" if info["world"] > 1 else "")
        resumed = f", resuming at epoch {info['start_epoch'] + 1}" if info["start_epoch"] else ""
        err.print(f"{info['model']} ({info['params']:,} parameters) on {where}: {info['train']} training faces from "
                  f"{info['store']}, {info['epochs']} epochs{resumed} -> {info['run_dir']}")

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.quiet:
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


def _train_common(preset, config, sets, flags):
    from gmenet_cli.config import build_config

    return build_config(preset=preset, config_file=str(config) if config else None, sets=sets, flags=flags)


def _finish_training(result, rt, command: str, next_hint: str) -> None:
    from gmenet_cli.runtime import shutdown

    shutdown(rt)
    if not rt.is_main:
        return
    err.print(f"[green]done[/green]: best {result.best_metric:.4f} (validation accuracy) -> {result.best}")
    err.print(f"results: {result.run_dir / 'results.csv'}, curves: {result.run_dir / 'results.png'}")
    err.print(f"Next: {next_hint.format(best=result.best)}")


EpochsOpt = typer.Option(None, "--epochs", help="Training epochs.")
BatchOpt = typer.Option(None, "--batch-size", "-b", help="Batch size (per process under torchrun).")
LrOpt = typer.Option(None, "--lr", help="Peak learning rate.")
NameOpt = typer.Option(None, "--name", help="Run name under runs/<command>/ (default exp, exp2, ...). Rerunning an unfinished name resumes it.")
ResumeOpt = typer.Option(False, "--resume", help="Continue the named (or most recent unfinished) run from its last.pt.")
DataOpt = typer.Option(None, "--data", "-d", help="Prepared store (default: the most recent under prepared/).")
SeedOpt = typer.Option(None, "--seed", help="Random seed (default 0).")
DetOpt = typer.Option(None, "--deterministic/--no-deterministic", help="Bit-for-bit reruns on CPU (slower).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar; one line per epoch.")


@app.command("distill-teacher")
@handle_errors
def distill_teacher(
    data: Optional[Path] = DataOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Teacher architecture: teacher_t, teacher_s (default), teacher_m."),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    name: Optional[str] = NameOpt,
    resume: bool = ResumeOpt,
    seed: Optional[int] = SeedOpt,
    deterministic: Optional[bool] = DetOpt,
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    quiet: bool = QuietOpt,
):
    """Train the high-resolution teacher on the HR faces of a prepared store.

    Writes runs/distill-teacher/<name>/ (config.yaml, weights/best.pt and last.pt, results.csv, results.png).
    Example: gmenet distill-teacher --data prepared/ferplus-x2-4-8 --epochs 12
    """
    from gmenet_cli.engine import train_teacher
    from gmenet_cli.runtime import setup

    cfg = _train_common(preset, config, sets, {
        "model.teacher": model, "train.epochs": epochs, "train.batch_size": batch_size, "optim.lr": lr,
        "train.device": device, "train.seed": seed, "train.deterministic": deterministic})
    rt = setup(cfg.train.device, cfg.train.amp, cfg.train.channels_last, cfg.train.threads, distributed=True)
    result = train_teacher(cfg, rt, str(data) if data else None, name, resume, _RichTraining(quiet))
    _finish_training(result, rt, "distill-teacher", "gmenet train --teacher {best}")


@app.command()
@handle_errors
def train(
    data: Optional[Path] = DataOpt,
    teacher: Optional[Path] = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint (default: the most recent distill-teacher run's best.pt)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Student architecture: gmenet_t, gmenet_s (default), gmenet_m."),
    scale: Optional[List[str]] = typer.Option(None, "--scale", "--scales", "-s", help="LR scale(s) to train on, e.g. 4 or 2,4,8 (default: all in the store); one drawn per sample."),
    no_distill: bool = typer.Option(False, "--no-distill", help="Cross-entropy only (the baseline): no teacher, same recipe."),
    no_global: bool = typer.Option(False, "--no-global", help="Ablation: drop the global branch (model.kwargs.global_branch=false)."),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    name: Optional[str] = NameOpt,
    resume: bool = ResumeOpt,
    seed: Optional[int] = SeedOpt,
    deterministic: Optional[bool] = DetOpt,
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    quiet: bool = QuietOpt,
):
    """Train the GME-Net student on LR faces with attention-similarity distillation from the teacher.

    Bare `gmenet train` uses the most recent prepared store and teacher (and says which).
    Example: gmenet train --scales 2,4,8 --epochs 12
    """
    from gmenet_cli.engine import train_student
    from gmenet_cli.runtime import setup

    flags = {"model.name": model, "train.epochs": epochs, "train.batch_size": batch_size, "optim.lr": lr,
             "train.device": device, "train.seed": seed, "train.deterministic": deterministic,
             "train.scales": _scales(scale), "distill.enabled": False if no_distill else None}
    cfg = _train_common(preset, config, sets, flags)
    if no_global:
        cfg.model.kwargs["global_branch"] = False
    if no_distill and teacher:
        raise typer.BadParameter("--teacher and --no-distill contradict each other", param_hint="--teacher")
    rt = setup(cfg.train.device, cfg.train.amp, cfg.train.channels_last, cfg.train.threads, distributed=True)
    result = train_student(cfg, rt, str(data) if data else None, str(teacher) if teacher else None, name, resume,
                           _RichTraining(quiet))
    _finish_training(result, rt, "train", "gmenet evaluate --weights {best}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
