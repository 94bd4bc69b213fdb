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
from gmenet_cli.data.layouts import layout_help


def _plain_usage_name(self) -> str:
    """Usage lines in the classic form (`gmenet predict [OPTIONS] INPUTS...`), not Typer 0.2x's `{inputs}...`."""
    name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
    return name + ("..." if self.nargs != 1 else "")


if hasattr(typer.core.TyperArgument, "_usage_display_name"):  # private in Typer 0.2x: patched only where it exists
    typer.core.TyperArgument._usage_display_name = _plain_usage_name

if hasattr(typer.core.TyperOption, "display_type_rich"):  # Typer 0.2x writes <bool> next to every flag, --help too
    _display_type = typer.core.TyperOption.display_type_rich
    typer.core.TyperOption.display_type_rich = lambda self, ctx: (
        None if getattr(self, "is_flag", False) else _display_type(self, ctx))

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
ConfigOpt = typer.Option(
    None, "--config", "-c", rich_help_panel="Config",
    help="YAML config file (sections: prepare, model, optim, train, augment, distill).",
)
SetOpt = typer.Option(
    None, "--set", metavar="KEY=VALUE", rich_help_panel="Config",
    help="Override one config key, e.g. --set train.epochs=3 (repeatable).",
)
PresetOpt = typer.Option(
    None, "--preset", rich_help_panel="Config",
    help="Built-in recipe: ferplus (the shipped models'), quick (the same, 2 + 3 epochs: a first try), fer2013, raf, "
    "tiny (tests).",
)
DeviceOpt = typer.Option(
    None, "--device", rich_help_panel="Run",
    help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N.",
)
JsonOpt = typer.Option(
    False, "--json", metavar="", rich_help_panel="Output",
    help="Print machine-readable JSON on stdout (human text stays on stderr).",
)


def _version(value: bool):
    if value:
        data_out(f"gmenet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, metavar="",
        help="Show the version and exit.",
    ),
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
            part = part.strip().lower()
            if part[:1] == "x" and part[1:].isdigit():  # "x4" reads as 4
                part = part[1:]
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                raise UsageError(f"--scale expects integers like 4 or 2,4,8, got '{v}'") from None
    return out


@app.command(epilog=layout_help())
@handle_errors
def prepare(
    src: Optional[str] = typer.Option(
        None, "--src", rich_help_panel="Dataset",
        help="Dataset layout: ferplus, fer2013, raf, expw, affectnet, folder (any case).",
    ),
    root_dir: Optional[Path] = typer.Option(
        None, "--root", rich_help_panel="Dataset",
        help="The dataset folder, as downloaded (default: the first of ./datasets/<src>, $GMENET_DATASETS/<src>, the "
        "settings file's datasets_dir/<src> that holds it).",
    ),
    scale: Optional[List[str]] = typer.Option(
        None, "--scale", "--scales", "-s", metavar="4|2,4,8", rich_help_panel="Data and model",
        help="LR factor(s): 4, or 2,4,8 (HR size / scale = LR size).",
    ),
    hr_size: Optional[int] = typer.Option(
        None, "--hr-size", rich_help_panel="Faces",
        help="HR face size in pixels (default: the source's, 48 or 112).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", rich_help_panel="Output",
        help="Output store folder (default prepared/<src>-x<scales>).",
    ),
    method: Optional[str] = typer.Option(
        None, "--method", rich_help_panel="Degradation",
        help="Downsampling: area (default), bicubic, bilinear, nearest.",
    ),
    blur: Optional[float] = typer.Option(
        None, "--blur", rich_help_panel="Degradation",
        help="Gaussian blur sigma in HR pixels before downsampling (0 = off).",
    ),
    noise: Optional[float] = typer.Option(
        None, "--noise", rich_help_panel="Degradation",
        help="Gaussian noise std on LR faces, 0..255 units (0 = off).",
    ),
    jpeg: Optional[int] = typer.Option(
        None, "--jpeg", rich_help_panel="Degradation",
        help="JPEG quality for an LR round-trip (0 = off).",
    ),
    classes: Optional[int] = typer.Option(
        None, "--classes", rich_help_panel="Dataset",
        help="7 or 8 (FERPlus/AffectNet; 7 drops contempt).",
    ),
    label_mode: Optional[str] = typer.Option(
        None, "--label-mode", rich_help_panel="Dataset",
        help="FERPlus hard labels: majority (default, the most votes) or authors (the FERPlus paper's rule: drops "
        "faces without a clear majority). Vote distributions are always kept.",
    ),
    channels: Optional[int] = typer.Option(
        None, "--channels", rich_help_panel="Faces",
        help="1 (gray) or 3 (colour); default: the source's.",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", rich_help_panel="Schedule",
        help="Seed for LR degradations and seeded splits.",
    ),
    group_regex: Optional[str] = typer.Option(
        None, "--group-regex", rich_help_panel="Dataset",
        help="folder source: keep files sharing this regex match in one split.",
    ),
    strict: bool = typer.Option(
        False, "--strict", metavar="", rich_help_panel="Dataset",
        help="Stop at the first unreadable image instead of skipping it.",
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, metavar="N", rich_help_panel="Run",
        help="Decoding processes (0 = up to 4). Output bytes do not depend on it.",
    ),
    list_sources: bool = typer.Option(
        False, "--list-sources", metavar="", rich_help_panel="Dataset",
        help="List every source, where it looks for it and whether it is there; then exit.",
    ),
    config: Optional[Path] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
):
    """Build HR/LR face pairs from a dataset in its native layout.

    Writes a prepared store (uint8 arrays + manifest.json) that distill-teacher, train and evaluate read.
    Without --root the dataset is looked for in ./datasets/<src>, then $GMENET_DATASETS/<src>, then the
    settings file's datasets_dir/<src> (gmenet datasets shows where).
    Example: gmenet prepare --src raf --scale 8
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gmenet_cli.config import build_config
    from gmenet_cli.data.prepare import prepare as run_prepare

    if list_sources:
        return datasets(as_json)
    src = _source(src)
    if root_dir is None:
        from gmenet_cli.data.roots import find_root

        root_dir = find_root(src)
        err.print(f"using the {src} dataset in {root_dir}")
    flags = {
        "prepare.scales": _scales(scale), "prepare.hr_size": hr_size, "prepare.method": method,
        "prepare.blur_sigma": blur, "prepare.noise_std": noise, "prepare.jpeg_quality": jpeg,
        "prepare.classes": classes, "prepare.label_mode": label_mode, "prepare.channels": channels,
        "prepare.seed": seed, "prepare.group_regex": group_regex,
    }
    cfg = build_config(config_file=str(config) if config else None, sets=sets, flags=flags)
    start = time.perf_counter()
    with Progress(TextColumn("preparing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("prepare", total=None)
        path, manifest = run_prepare(src, root_dir, out, cfg.prepare, strict=strict, workers=workers,
                                     progress=lambda d, t: bar.update(task, completed=d, total=t))
    seconds = time.perf_counter() - start
    if as_json:
        data_out(json.dumps(manifest))
    from gmenet_cli import render

    render.store_summary(path, manifest, seconds)


def _source(src: Optional[str]) -> str:
    """--src, case-insensitive; a missing or unknown one names the valid sources."""
    from gmenet_cli.data.layouts import LAYOUTS
    from gmenet_cli.errors import UsageError

    if not src:
        raise UsageError(f"--src is required: one of {', '.join(LAYOUTS)} (gmenet datasets lists them)")
    name = src.strip().lower()
    if name not in LAYOUTS:
        import difflib

        close = difflib.get_close_matches(name, list(LAYOUTS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown source '{src}'.{hint} Valid sources: {', '.join(LAYOUTS)}")
    return name


@app.command()
@handle_errors
def datasets(as_json: bool = JsonOpt):
    """List every dataset source, the places prepare looks for it (in order) and whether it is there.

    Example: GMENET_DATASETS=/data/faces gmenet datasets
    """
    from gmenet_cli import render
    from gmenet_cli.data.roots import survey

    rows = survey()
    if as_json:
        for r in rows:
            data_out(json.dumps(r))
        return
    render.datasets_table(rows)


def _train_common(preset, config, sets, flags):
    from gmenet_cli.config import build_config

    return build_config(preset=preset, config_file=str(config) if config else None, sets=sets, flags=flags)


def _finish_training(result, runtime, next_command: str) -> None:
    from gmenet_cli import render
    from gmenet_cli.runtime import shutdown

    shutdown(runtime)
    if runtime.is_main:
        render.training_done(result, next_command)


def _carried(preset, config, sets, device, seed) -> list[str]:
    """The options a printed next command must repeat so that it runs as the user's command did."""
    import shlex

    out = [f"--preset {preset}"] if preset else []
    out += [f"--config {shlex.quote(str(config))}"] if config else []
    out += [f"--set {shlex.quote(s)}" for s in sets or []]
    out += [f"--device {device}"] if device else []
    out += [f"--seed {seed}"] if seed is not None else []
    return out


def _next_train(result, cfg, preset, config, sets, device, seed, batch_given: bool) -> str:
    """`gmenet train` for the teacher just trained: its store, a student that pairs with it, the same preset,
    config, overrides and batch size."""
    import shlex

    from gmenet_cli.training.runs import paired_teacher

    parts = ["gmenet train", f"--teacher {shlex.quote(str(result.best))}", f"--data {shlex.quote(str(result.store))}"]
    parts += _carried(preset, config, sets, device, seed)
    if paired_teacher(cfg.model.name) != result.model:
        parts.append(f"--model gmenet_{result.model.split('_', 1)[-1]}")
    if batch_given or result.batch_size != cfg.train.batch_size:
        parts.append(f"--batch-size {result.batch_size}")
    return " ".join(parts)


def _init(init: Optional[Path], resume: bool) -> Optional[str]:
    if init and resume:
        raise typer.BadParameter("--init starts a new run from given weights; --resume continues a run from its own "
                                 "last.pt: use one", param_hint="--init")
    if init and str(init) == "default":
        from gmenet_cli.predict.classify import DEFAULT_WEIGHTS

        return str(DEFAULT_WEIGHTS)
    return str(init) if init else None


def _shipped(name) -> Optional[Path]:
    """A shipped one-size model by its name (default-12px -> weights/default-12px.onnx), else None."""
    import re

    if not re.fullmatch(r"default-\d+px", str(name)):
        return None
    from gmenet_cli.predict.classify import DEFAULT_WEIGHTS

    path = DEFAULT_WEIGHTS.parent / f"{name}.onnx"
    if not path.is_file():
        from gmenet_cli.errors import UsageError

        shipped = sorted(p.stem for p in DEFAULT_WEIGHTS.parent.glob("default-*px.onnx"))
        raise UsageError(f"no shipped model named {name} (shipped: default, {', '.join(shipped)})")
    return path


def _model_path(weights: Optional[Path], verb: str, allow_default: bool = True) -> Path:
    """--weights for evaluate, calibrate and export: a path; `default` (the shipped student, as train --init
    default); or, when not given, the newest best.pt under runs/, said in one line (and whether its run is
    still unfinished)."""
    from gmenet_cli.errors import UsageError

    if weights is not None and allow_default and (shipped := _shipped(weights)) is not None:
        return shipped
    if weights is not None and str(weights) == "default":
        if not allow_default:
            raise UsageError(f"{verb} rewrites the .pt checkpoint it is given, and the shipped models are calibrated "
                             "already (see gmenet_cli/weights/MODEL_CARD.md); pass --weights runs/.../best.pt")
        from gmenet_cli.predict.classify import DEFAULT_WEIGHTS

        return DEFAULT_WEIGHTS
    if weights is not None:
        return weights
    from gmenet_cli.training import find_latest_weights

    found = find_latest_weights()
    if found is None:
        raise UsageError("no trained model found under runs/; pass --weights CKPT (or --weights default for the "
                         "model shipped with gmenet)")
    from gmenet_cli.training.runs import unfinished

    note = ""
    if (progress := unfinished(found)) is not None:
        note = (f" (its run is unfinished: {progress[0]} of {progress[1]} epochs so far; pass --weights to choose "
                "another)")
    err.print(f"{verb} the most recent model: {found}{note}")
    return found


EpochsOpt = typer.Option(None, "--epochs", help="Training epochs.", rich_help_panel="Schedule")
BatchOpt = typer.Option(
    None, "--batch-size", "-b", rich_help_panel="Schedule",
    help="Batch size (per process under torchrun).",
)
LrOpt = typer.Option(
    None, "--lr", rich_help_panel="Schedule",
    help="Peak learning rate at a batch of 128 (optim.base_batch); other batch sizes scale it (optim.scale_lr).",
)
NameOpt = typer.Option(
    None, "--name", rich_help_panel="Run",
    help="Run name under runs/<command>/ (default exp, exp2, ...). Rerunning an unfinished name resumes it.",
)
ResumeOpt = typer.Option(
    False, "--resume", metavar="", rich_help_panel="Run",
    help="Continue the named (or most recent unfinished) run from its last.pt.",
)
DataOpt = typer.Option(
    None, "--data", "-d", rich_help_panel="Data and model",
    help="Prepared store (default: the most recent under prepared/).",
)
SeedOpt = typer.Option(None, "--seed", help="Random seed (default 0).", rich_help_panel="Schedule")
DetOpt = typer.Option(
    None, "--deterministic/--no-deterministic", metavar="", rich_help_panel="Schedule",
    help="Bit-for-bit reruns on CPU (slower).",
)
InitOpt = typer.Option(
    None, "--init", metavar="CKPT", rich_help_panel="Data and model",
    help="Fine-tune: start from this checkpoint's weights ('default': the shipped student), fresh schedule.",
)
QuietOpt = typer.Option(
    False, "--quiet", "-q", metavar="", rich_help_panel="Run",
    help="No progress bar; one line per epoch.",
)


@app.command("distill-teacher")
@handle_errors
def distill_teacher(
    data: Optional[Path] = DataOpt,
    model: Optional[str] = typer.Option(
        None, "--model", "-m", rich_help_panel="Data and model",
        help="Teacher architecture (default teacher_s2; gmenet models lists them).",
    ),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    name: Optional[str] = NameOpt,
    resume: bool = ResumeOpt,
    init: Optional[Path] = InitOpt,
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
    from gmenet_cli.render import RichTraining
    from gmenet_cli.runtime import setup
    from gmenet_cli.training import Callbacks, train_teacher

    cfg = _train_common(preset, config, sets, {
        "model.teacher": model, "train.epochs": epochs, "train.teacher_epochs": epochs, "train.batch_size": batch_size,
        "optim.lr": lr, "train.init": _init(init, resume),
        "train.device": device, "train.seed": seed, "train.deterministic": deterministic})
    runtime = setup(cfg.train.device, cfg.train.amp, cfg.train.channels_last, cfg.train.threads, distributed=True,
                    cpu_bf16=cfg.train.cpu_bf16)
    progress = RichTraining(quiet) if runtime.is_main else Callbacks()
    result = train_teacher(cfg, runtime, str(data) if data else None, name, resume, progress)
    _finish_training(
        result, runtime, _next_train(result, cfg, preset, config, sets, device, seed, batch_size is not None)
    )


@app.command()
@handle_errors
def train(
    data: Optional[Path] = DataOpt,
    teacher: Optional[Path] = typer.Option(
        None,
        "--teacher",
        "-t",
        rich_help_panel="Data and model",
        help="Teacher checkpoint (default: the newest distill-teacher run that pairs with the student).",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        rich_help_panel="Data and model",
        help="Student architecture (default gmenet_s2; gmenet models lists them); pairs with the teacher of its size.",
    ),
    scale: Optional[List[str]] = typer.Option(
        None,
        "--scale",
        "--scales",
        "-s",
        metavar="4|2,4,8",
        rich_help_panel="Data and model",
        help="LR scale(s) to train on, e.g. 4 or 2,4,8 (default: all in the store); one drawn per sample.",
    ),
    no_distill: bool = typer.Option(
        False,
        "--no-distill",
        metavar="",
        rich_help_panel="Data and model",
        help="Cross-entropy only (the baseline): no teacher, same recipe.",
    ),
    no_global: bool = typer.Option(
        False,
        "--no-global",
        metavar="",
        rich_help_panel="Data and model",
        help="Ablation: drop the global branch (model.kwargs.global_branch=false).",
    ),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    name: Optional[str] = NameOpt,
    resume: bool = ResumeOpt,
    init: Optional[Path] = InitOpt,
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
    from gmenet_cli.render import RichTraining
    from gmenet_cli.runtime import setup
    from gmenet_cli.training import Callbacks, train_student

    flags = {
        "model.name": model,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "optim.lr": lr,
        "train.device": device,
        "train.seed": seed,
        "train.deterministic": deterministic,
        "train.init": _init(init, resume),
        "train.scales": _scales(scale),
        "distill.enabled": False if no_distill else None,
    }
    cfg = _train_common(preset, config, sets, flags)
    if no_global:
        cfg.model.kwargs["global_branch"] = False
    if no_distill and teacher:
        raise typer.BadParameter("--teacher and --no-distill contradict each other", param_hint="--teacher")
    runtime = setup(
        cfg.train.device,
        cfg.train.amp,
        cfg.train.channels_last,
        cfg.train.threads,
        distributed=True,
        cpu_bf16=cfg.train.cpu_bf16,
    )
    result = train_student(
        cfg,
        runtime,
        str(data) if data else None,
        str(teacher) if teacher else None,
        name,
        resume,
        (RichTraining(quiet) if runtime.is_main else Callbacks()),
    )
    import shlex

    _finish_training(
        result,
        runtime,
        " ".join(
            [f"gmenet evaluate --weights {shlex.quote(str(result.best))}"] + ([f"--device {device}"] if device else [])
        ),
    )


@app.command()
@handle_errors
def evaluate(
    weights: Optional[Path] = typer.Option(
        None,
        "--weights",
        "-w",
        rich_help_panel="Model",
        help="Checkpoint or gmenet .onnx export to evaluate (default: the most recent train run's best.pt, else "
        "distill-teacher's; 'default', 'default-12px', 'default-24px', 'default-48px': the shipped models).",
    ),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        "-d",
        rich_help_panel="Data and model",
        help="Prepared store (default: the one the model was trained on).",
    ),
    split: Optional[str] = typer.Option(
        None,
        "--split",
        rich_help_panel="Data and model",
        help="test or val (default: test if the store has it, else val).",
    ),
    scale: Optional[List[str]] = typer.Option(
        None,
        "--scales",
        "--scale",
        "-s",
        metavar="1,2,4,8",
        rich_help_panel="Data and model",
        help="Face scales to sweep, e.g. 1,2,4,8 (1 = HR faces). Default: every scale in the store (teachers also HR).",
    ),
    compare: Optional[List[Path]] = typer.Option(
        None,
        "--compare",
        metavar="CKPT",
        rich_help_panel="Model",
        help="More checkpoints (or .onnx exports, or a shipped model's name) to evaluate side by side (e.g. the "
        "teacher); repeatable.",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        rich_help_panel="Output",
        help="Folder for metrics.json and plots (default runs/evaluate/exp<N>).",
    ),
    batch_size: int = typer.Option(
        256,
        "--batch-size",
        "-b",
        min=1,
        metavar="N",
        rich_help_panel="Schedule",
        help="Evaluation batch size.",
    ),
    tta: bool = typer.Option(
        True,
        "--tta/--no-tta",
        metavar="",
        rich_help_panel="Model",
        help="Average each face's logits with its mirror image's (flip test-time augmentation).",
    ),
    device: Optional[str] = DeviceOpt,
    as_json: bool = JsonOpt,
):
    """Report accuracy, mean per-class accuracy, macro-F1, per-class precision/recall and the confusion matrix.

    For several scales this is a resolution sweep (accuracy against face size), for every model given.
    Example: gmenet evaluate --weights runs/train/exp/weights/best.pt --compare runs/distill-teacher/exp/weights/best.pt
    """
    from gmenet_cli import render
    from gmenet_cli.evaluate import evaluate as run_evaluate
    from gmenet_cli.evaluate import write_outputs
    from gmenet_cli.runtime import select_device
    from gmenet_cli.training import resolve_run_dir

    dev = select_device(device)
    weights = _model_path(weights, "evaluating")
    report = run_evaluate(
        [str(weights)] + [str(_shipped(c) or c) for c in compare or []],
        str(data) if data else None,
        split,
        _scales(scale),
        dev,
        batch_size,
        message=err.print,
        tta=tta,
    )
    out_dir = out or resolve_run_dir("evaluate", None, False)[0]
    written = write_outputs(report, out_dir)
    if as_json:
        data_out(json.dumps(report))
    render.evaluation_report(report)
    err.print(f"wrote {', '.join(str(p) for p in written)}")
    err.print(f"Next: gmenet predict photo.jpg --weights {weights}")


@app.command()
@handle_errors
def calibrate(
    weights: Optional[Path] = typer.Option(
        None,
        "--weights",
        "-w",
        rich_help_panel="Model",
        help="Checkpoint to calibrate, rewritten in place (default: the most recent train run's best.pt, else "
        "distill-teacher's).",
    ),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        "-d",
        rich_help_panel="Data and model",
        help="Prepared store (default: the one the model was trained on).",
    ),
    split: str = typer.Option(
        "val",
        "--split",
        rich_help_panel="Data and model",
        help="The split to fit on: the validation split (never the one you report on).",
    ),
    batch_size: int = typer.Option(
        256,
        "--batch-size",
        "-b",
        min=1,
        metavar="N",
        rich_help_panel="Schedule",
        help="Evaluation batch size.",
    ),
    device: Optional[str] = DeviceOpt,
):
    """Fit temperatures per trained face size and predicted class, so that predict's confidences are probabilities.

    Training does this by itself at its end; use it for checkpoints from before, or to fit on other
    validation faces. The labels never change, only the confidences. Then gmenet export carries it into
    the .onnx file. Example: gmenet calibrate --weights runs/train/exp/weights/best.pt
    """
    from gmenet_cli import checkpoint
    from gmenet_cli.calibrate import describe
    from gmenet_cli.data.store import Store
    from gmenet_cli.errors import UsageError
    from gmenet_cli.evaluate import _check_compatible, calibrate_checkpoint
    from gmenet_cli.runtime import select_device

    dev = select_device(device)
    weights = _model_path(weights, "calibrating", allow_default=False)
    if Path(weights).suffix.lower() == ".onnx":
        raise UsageError(f"{weights}: calibrate rewrites a .pt checkpoint; calibrate the run's best.pt, then "
                         "gmenet export it again")
    ckpt = checkpoint.load(weights)
    path = str(data) if data else ckpt.get("data", {}).get("path")
    if not path:
        raise UsageError("pass --data PREPARED (the checkpoint does not name its store)")
    store = Store(path)
    _check_compatible(ckpt, store, str(weights))
    if split not in store.splits:
        raise UsageError(f"{store.path} has no '{split}' split (it has {', '.join(store.splits)})")
    cal = calibrate_checkpoint(weights, store.split(split), dev, batch_size, tta=True)
    for px in cal["temperature"]:
        err.print(f"{px:>3}px: {describe(cal, px)}")
    err.print(f"wrote the temperatures into {weights} (fitted on {store.path} {split})")
    err.print(f"Next: gmenet export --weights {weights}")


@app.command()
@handle_errors
def predict(
    inputs: List[str] = typer.Argument(
        ...,
        metavar="INPUTS",
        help="Images, videos, folders (recursive), globs, - to read paths from stdin, a webcam index (0) or a stream "
        "URL (rtsp://...).",
    ),
    weights: Optional[List[Path]] = typer.Option(
        None,
        "--weights",
        "-w",
        rich_help_panel="Model",
        help="A .pt checkpoint or gmenet .onnx export (default: the shipped models). Repeatable: each face goes to "
        "the model trained at its size.",
    ),
    detector: str = typer.Option(
        "yunet",
        "--detector",
        rich_help_panel="Detection",
        help="yunet (shipped, finds faces down to --min-face), haar (OpenCV's cascade, faces from about 24 px), none.",
    ),
    detector_model: Optional[Path] = typer.Option(
        None,
        "--detector-model",
        rich_help_panel="Detection",
        help="Another YuNet ONNX file than the shipped one (OpenCV Zoo's 2023mar format).",
    ),
    min_face: float = typer.Option(
        10,
        "--min-face",
        min=2,
        metavar="PX",
        rich_help_panel="Detection",
        help="yunet: the smallest face to look for, in px (smaller = slower: the image is upscaled to find it).",
    ),
    no_detect: bool = typer.Option(
        False,
        "--no-detect",
        metavar="",
        rich_help_panel="Detection",
        help="Each input is already a cropped face (same as --detector none).",
    ),
    boxes: Optional[Path] = typer.Option(
        None,
        "--boxes",
        rich_help_panel="Detection",
        help="CSV of face boxes: file,x,y,w,h (replaces detection).",
    ),
    min_score: Optional[float] = typer.Option(
        None,
        "--min-score",
        rich_help_panel="Detection",
        help="Drop detections scoring below this (default: yunet 0.6 confidence; haar 2.0 level weight).",
    ),
    margin: float = typer.Option(
        0.1,
        "--margin",
        min=0.0,
        max=1.0,
        metavar="FRACTION",
        rich_help_panel="Detection",
        help="Context added around each detected box, as a fraction of its size.",
    ),
    every: int = typer.Option(
        10,
        "--every",
        min=1,
        metavar="N",
        rich_help_panel="Video",
        help="Videos, webcams, streams: classify every N-th frame.",
    ),
    smooth: int = typer.Option(
        5,
        "--smooth",
        min=1,
        metavar="N",
        rich_help_panel="Video",
        help="Videos: each tracked face's smoothed label averages its last N classified frames.",
    ),
    batch_size: int = typer.Option(
        64,
        "--batch-size",
        "-b",
        min=1,
        metavar="N",
        rich_help_panel="Schedule",
        help="Faces per classification batch.",
    ),
    tta: bool = typer.Option(
        True,
        "--tta/--no-tta",
        metavar="",
        rich_help_panel="Model",
        help="Average each face's logits with its mirror image's (about half the speed, a little more accurate).",
    ),
    min_confidence: float = typer.Option(
        0.0,
        "--min-confidence",
        min=0.0,
        max=1.0,
        metavar="P",
        rich_help_panel="Output",
        help="Label faces whose confidence is below P 'uncertain' (their probabilities and best guess stay).",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        metavar="",
        rich_help_panel="Output",
        help="JSON lines on stdout: one object per face (jq -r .label: one label per face).",
    ),
    per_input: bool = typer.Option(
        False,
        "--summary",
        metavar="",
        rich_help_panel="Output",
        help="With --json: also one record per input, after its faces: its summary (faces, label counts; tracks for"
        " a video), or why it has none (faces 0 and a note, or an error). The table always ends with the summaries.",
    ),
    as_csv: bool = typer.Option(
        False,
        "--csv",
        metavar="",
        rich_help_panel="Output",
        help="CSV on stdout: one row per face or faceless/unreadable input (last column: note).",
    ),
    save: Optional[Path] = typer.Option(
        None,
        "--save",
        rich_help_panel="Output",
        help="Write annotated copies into this folder (images as .jpg, each video as one .mp4).",
    ),
    device: Optional[str] = typer.Option(
        None,
        "--device",
        rich_help_panel="Run",
        help="For .pt checkpoints: auto (CUDA if present), cpu, cuda or cuda:N. The default models and .onnx files run"
        " on the CPU through onnxruntime; --device cuda runs them in PyTorch, rebuilt from the checkpoint each .onnx"
        " carries.",
    ),
):
    """Detect faces, classify their expression, print one result per face.

    Exit code 0 when every input gave at least one face, 1 when some inputs were unreadable or had no face
    (the rest are still processed), 2 for usage errors and inputs that do not exist (the rest are still
    processed), 130 on Ctrl-C (what was done is still printed).
    Data goes to stdout, messages to stderr. Videos: faces are tracked across frames (track id and a
    smoothed label). Example: ls photos/*.jpg | gmenet predict - --json | jq -r .label
    """
    from gmenet_cli.predict import expand_inputs, load_classifier, make_detector, read_box_csv, run
    from gmenet_cli.predict.inputs import is_stream
    from gmenet_cli.render import PredictOutput

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="--json")
    if per_input and not as_json:
        raise typer.BadParameter("--summary adds per-input records to --json (the table always ends with the "
                                 "summaries; --csv has a row for each faceless or unreadable input)",
                                 param_hint="--summary")
    files, skipped = expand_inputs(inputs)
    for f in skipped:
        err.print(f"skipped {f}: not an image or video file")
    if not files:
        from gmenet_cli.errors import UsageError

        raise UsageError("no input images found" + (" (stdin was empty)" if "-" in inputs else ""))
    # inputs that do not exist are reported with the others (an error record each) and make it a usage error
    missing = [f for f in files if not is_stream(f) and not Path(f).exists()]
    clf = load_classifier([str(w) for w in weights or []], device, tta)
    # a model the user listed that never gets a face; the shipped all-sizes default.onnx is left unused on
    # purpose once one-size models cover its sizes (it stays for train --init default / evaluate --weights default)
    for m in getattr(clf, "unused", []) if weights else []:
        err.print(
            f"warning: --weights {m.path} is not used: the models before it cover its face sizes "
            f"({', '.join(map(str, m.sizes))} px)"
        )
    det = (
        None
        if (no_detect or boxes)
        else make_detector(detector, str(detector_model) if detector_model else None, min_score, min_face)
    )
    box_map = read_box_csv(str(boxes)) if boxes else None
    saver = _saver(save)
    output = PredictOutput("json" if as_json else "csv" if as_csv else "table", clf.classes, per_input)
    try:
        for item, results in run(files, clf, det, margin, every, batch_size, box_map, smooth, min_confidence,
                                 all_frames=saver is not None):
            for r in results if not item.carried else []:  # carried frames only go into the annotated video
                output.add(r)
            if saver:
                saver.add(item, results)
    except KeyboardInterrupt:
        _finish_predict(output, saver)
        err.print("interrupted: the results above are complete up to here")
        raise typer.Exit(130) from None
    _finish_predict(output, saver)
    if missing:
        raise typer.Exit(2)
    if output.bad or output.faceless:
        raise typer.Exit(1)


def _saver(save: Optional[Path]):
    if save is None:
        return None
    from gmenet_cli.predict import Saver

    if save.exists() and not save.is_dir():
        raise typer.BadParameter(f"{save} exists and is not a folder", param_hint="--save")
    save.mkdir(parents=True, exist_ok=True)
    return Saver(save)


def _finish_predict(output, saver) -> None:
    output.finish()
    if saver:
        written = saver.close()
        err.print(f"annotated copies in {saver.dir} ({len(written)} file(s))")


@app.command("export")
@handle_errors
def export_cmd(
    weights: Optional[Path] = typer.Option(
        None, "--weights", "-w", rich_help_panel="Model",
        help="Checkpoint to export (default: the most recent train run's best.pt, else distill-teacher's; "
        "'default': the shipped student).",
    ),
    fmt: str = typer.Option(
        "onnx",
        "--format",
        "-f",
        rich_help_panel="Output",
        help="onnx or torchscript.",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        rich_help_panel="Output",
        help="Output file (default next to the weights: best.pt -> best.onnx or best.torchscript.pt).",
    ),
    input_size: Optional[int] = typer.Option(
        None,
        "--input-size",
        rich_help_panel="Output",
        help="Fix the face size in px the graph takes (default: any size, checked at every trained LR size; HR for a "
        "teacher).",
    ),
    half_weights: bool = typer.Option(
        False,
        "--half-weights",
        rich_help_panel="Output",
        help="ONNX only: store the weights as float16 (half the file); faces are still computed in float32.",
    ),
    int8_weights: bool = typer.Option(
        False,
        "--int8-weights",
        rich_help_panel="Output",
        help="ONNX only: convolution and linear weights as int8 with a scale per output channel, the rest float16 "
        "(about a quarter of the file); dequantized once at load, faces still computed in float32.",
    ),
    as_json: bool = JsonOpt,
):
    """Export a checkpoint to ONNX or TorchScript, checking parity with the eager model.

    The graph takes (N, C, s, s) float32 faces in [0, 1] (dynamic N and s) and returns logits. An ONNX file
    carries the classes and sizes in its metadata, so `gmenet predict --weights model.onnx` runs it without
    torch, and the checkpoint itself, so PyTorch rebuilds the model from it (`--device cuda`, `train --init`).
    Example: gmenet export --weights runs/train/exp/weights/best.pt --half-weights
    """
    from gmenet_cli.export import export

    weights = _model_path(weights, "exporting")
    info = export(str(weights), fmt, str(out) if out else None, input_size, half_weights=half_weights,
                  int8_weights=int8_weights)
    if as_json:
        data_out(json.dumps(info))
    sizes = ",".join(str(s) for s in info["checked_sizes"])
    err.print(
        f"wrote {info['path']} ({fmt}, {info['bytes'] / 1e6:.1f} MB, {info['weights_dtype']} weights, "
        f"input {info['input']}, checked at {sizes} px); "
        f"parity: max |exported - eager| = {info['max_abs_diff']:.2e}"
    )
    if info["replaced"]:
        err.print(f"replaced the earlier {info['path']} ({info['replaced']}); --out writes elsewhere")
    if fmt == "onnx":
        err.print(f"Next: gmenet predict photo.jpg --weights {info['path']}")


@app.command()
@handle_errors
def models(
    input_size: int = typer.Option(
        48,
        "--input-size",
        rich_help_panel="Output",
        help="Working (HR) size for the FLOP count.",
    ),
    lr_size: int = typer.Option(
        12,
        "--lr-size",
        rich_help_panel="Faces",
        help="LR face size fed to students for the FLOP count.",
    ),
    channels: int = typer.Option(1, "--channels", help="Input channels (1 gray, 3 colour).", rich_help_panel="Faces"),
    classes: int = typer.Option(8, "--classes", help="Number of classes.", rich_help_panel="Dataset"),
    as_json: bool = JsonOpt,
):
    """List registered models with parameter counts and FLOPs (2 x multiply-adds, one face).

    Example: gmenet models --lr-size 6 --json
    """
    from gmenet_cli import render
    from gmenet_cli.models import count_flops, count_params, create_model, get_spec, list_models
    from gmenet_cli.models.registry import working_size

    rows = []
    for name in list_models():
        spec = get_spec(name)
        m = create_model(name, in_chans=channels, num_classes=classes, input_size=working_size(name, input_size))
        size = input_size if spec.kind == "teacher" else lr_size
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "params": count_params(m),
                "gflops": count_flops(m, channels, size) / 1e9,
                "input_px": size,
                "working_px": working_size(name, input_size),
                "about": spec.about,
            }
        )
    if as_json:
        for r in rows:
            data_out(json.dumps(r))
        return
    render.models_table(rows, input_size, lr_size, channels, classes)


def resume_path_argv(argv: list[str]) -> list[str]:
    """`gmenet train --resume runs/train/NAME` (or .../weights/last.pt), as users of other trainers write it:
    the same as `--resume --name NAME` when the folder is this directory's runs/<command>/NAME. A path
    elsewhere is a one-line error saying what to run instead (`--resume` is a flag here)."""
    import sys

    if not argv or argv[0] not in ("train", "distill-teacher"):
        return argv
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg != "--resume" or out[i + 1].startswith("-"):
            continue
        from gmenet_cli.training.runs import RUNS  # only here: this import brings torch

        run = Path(out[i + 1])
        if run.suffix == ".pt" and run.parent.name == "weights":
            run = run.parent.parent
        base = RUNS / argv[0]
        if run.resolve().parent != base.resolve():
            err.print(f"[red]error:[/red] --resume takes no path here; to continue {out[i + 1]}, run `gmenet "
                      f"{argv[0]} --resume --name {run.name}` in the folder that holds {base}/", soft_wrap=True)
            sys.exit(2)
        out[i + 1 : i + 2] = ["--name", run.name]
        break  # the list just grew by one: later indices no longer match
    return out


def main() -> None:
    import sys

    app(args=resume_path_argv(sys.argv[1:]))


if __name__ == "__main__":
    main()
