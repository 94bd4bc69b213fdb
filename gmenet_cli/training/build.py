"""The two training commands, assembled: which run, which store, which model and task, what goes into the
checkpoint's description. Both end in the one loop (loop.fit).

`gmenet distill-teacher` trains the HR teacher on HR faces; `gmenet train` trains the GME-Net student on
low-resolution faces with A-SKD (and optional logit KD) from the frozen teacher, or with cross-entropy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gmenet_cli import checkpoint
from gmenet_cli.config import Config, config_from_dict
from gmenet_cli.data.store import Store
from gmenet_cli.errors import CheckpointError, UsageError
from gmenet_cli.losses import ASKDLoss, ClassificationLoss
from gmenet_cli.models import create_model, get_spec
from gmenet_cli.models.registry import working_size
from gmenet_cli.runtime import Runtime, seed_everything
from gmenet_cli.tasks import ClassifierTask, DistillTask
from gmenet_cli.training.loop import Callbacks, fit
from gmenet_cli.training.runs import RunResult, find_latest_teacher, resolve_run_dir, resolve_store


@dataclass
class Start:
    """Where a training command starts from: a new run, or the saved state of an unfinished one."""

    cfg: Config
    run_dir: Path
    store: Store
    state: dict | None  # last.pt of the run being resumed
    teacher: str | None


def _start(command: str, cfg: Config, data: str | None, teacher: str | None, name: str | None, resume: bool,
           progress: Callbacks) -> Start:
    run_dir, resuming = resolve_run_dir(command, name, resume)
    state = None
    if resuming:
        state = checkpoint.load(run_dir / "weights" / "last.pt")
        cfg = config_from_dict(state["config"])
        data = state["data"]["path"]
        teacher = (state.get("teacher") or {}).get("path")
        progress.message(f"resuming {run_dir} from epoch {state['epoch']} (its saved config is used)")
    return Start(cfg, run_dir, resolve_store(data, progress.message), state, teacher)


def _build(name: str, kind: str, cfg: Config, store: Store):
    if get_spec(name).kind != kind:
        sizes = ", ".join(f"{'teacher' if kind == 'teacher' else 'gmenet'}_{s}" for s in ("t", "s", "m", "s2", "m2"))
        raise UsageError(f"'{name}' is not a {kind} model; use one of {sizes}")
    kwargs = {"in_chans": store.channels, "num_classes": len(store.classes),
              "input_size": working_size(name, store.hr_size), **cfg.model.kwargs}
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # before building: the weight init is seeded too
    return create_model(name, **kwargs), {"name": name, "kwargs": kwargs}


def _input_spec(model, store: Store, scales: list[int], view: str) -> dict:
    """How evaluate, predict and export feed this model (stored in the checkpoint). `view` is "hr" or "lr"
    (the on-disk spelling of low resolution in checkpoints, kept so that older checkpoints stay readable)."""
    return {
        "channels": store.channels,
        "hr_size": store.hr_size,
        "view": view,
        "scales": scales,
        "lr_sizes": {str(s): store.hr_size // s for s in scales},
        "mean": float(model.mean.flatten()[0]),
        "std": float(model.std.flatten()[0]),
        "upsample": model.upsample,
    }


def train_teacher(cfg: Config, runtime: Runtime, data: str | None = None, name: str | None = None,
                  resume: bool = False, progress: Callbacks | None = None) -> RunResult:
    """`gmenet distill-teacher`: the HR teacher on HR faces."""
    progress = progress or Callbacks()
    start = _start("distill-teacher", cfg, data, None, name, resume, progress)
    cfg, store = start.cfg, start.store
    if cfg.train.teacher_epochs:
        cfg.train.epochs = cfg.train.teacher_epochs
    model, model_meta = _build(cfg.model.teacher, "teacher", cfg, store)
    task = ClassifierTask(model, ClassificationLoss(cfg.train.label_smoothing, cfg.train.soft_labels), "hr")
    meta = {"kind": "teacher", "model": model_meta, "classes": store.classes,
            "input": _input_spec(model, store, [], "hr")}
    return fit("distill-teacher", task, store, cfg, runtime, start.run_dir, meta, [], progress, start.state)


def train_student(cfg: Config, runtime: Runtime, data: str | None = None, teacher: str | None = None,
                  name: str | None = None, resume: bool = False, progress: Callbacks | None = None) -> RunResult:
    """`gmenet train`: the GME-Net student on LR faces, with A-SKD from the frozen teacher unless disabled."""
    progress = progress or Callbacks()
    start = _start("train", cfg, data, teacher, name, resume, progress)
    cfg, store = start.cfg, start.store
    scales = sorted(set(cfg.train.scales or store.scales))
    missing = [s for s in scales if s not in store.scales]
    if missing:
        raise UsageError(f"scale x{missing[0]} is not in {store.path} (it has {', '.join(f'x{s}' for s in store.scales)}); "
                         f"run gmenet prepare with --scale {','.join(str(s) for s in scales)}")
    model, model_meta = _build(cfg.model.name, "student", cfg, store)
    loss = ClassificationLoss(cfg.train.label_smoothing, cfg.train.soft_labels)
    meta = {"kind": "student", "model": model_meta, "classes": store.classes,
            "input": _input_spec(model, store, scales, "lr"), "distill": cfg.distill.enabled}
    if not cfg.distill.enabled:
        task = ClassifierTask(model, loss, "lowres")
        return fit("train", task, store, cfg, runtime, start.run_dir, meta, scales, progress, start.state)
    teacher_path = start.teacher or _latest_teacher(cfg.model.name, progress)
    teacher_ckpt = checkpoint.load(teacher_path)
    _check_teacher(teacher_ckpt, store, teacher_path)
    task = DistillTask(model, checkpoint.build_model(teacher_ckpt, teacher_path), loss,
                       ASKDLoss(cfg.distill.weight, cfg.distill.maps), cfg.distill.kd_weight, cfg.distill.kd_temperature)
    task.check_pairing(store.channels, store.hr_size)
    meta["teacher"] = {"path": str(Path(teacher_path).resolve()), "model": teacher_ckpt["model"]["name"],
                       "val_metric": teacher_ckpt.get("best_metric")}
    return fit("train", task, store, cfg, runtime, start.run_dir, meta, scales, progress, start.state)


def _latest_teacher(student: str, progress: Callbacks) -> str:
    found = find_latest_teacher(student)
    if found is None:
        raise UsageError("no teacher: run gmenet distill-teacher first, pass --teacher CKPT, or --no-distill")
    progress.message(f"using the most recent teacher: {found}")
    return str(found)


def _check_teacher(ckpt: dict, store: Store, path) -> None:
    if ckpt.get("kind") != "teacher":
        raise CheckpointError(f"{path} is a {ckpt.get('kind', 'unknown')} checkpoint, not a teacher (from gmenet distill-teacher)")
    if list(ckpt["classes"]) != store.classes:
        raise CheckpointError(f"teacher {path} knows classes {ckpt['classes']}, the data has {store.classes}")
    if ckpt["input"]["channels"] != store.channels or ckpt["input"]["hr_size"] != store.hr_size:
        raise CheckpointError(f"teacher {path} expects {ckpt['input']['channels']}-channel {ckpt['input']['hr_size']}px faces, "
                              f"the data has {store.channels}-channel {store.hr_size}px")
