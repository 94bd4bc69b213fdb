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
from gmenet_cli.losses import ASKDLoss, ClassificationLoss, class_prior
from gmenet_cli.models import create_model, get_spec
from gmenet_cli.models.registry import working_size
from gmenet_cli.runtime import Runtime, seed_everything
from gmenet_cli.tasks import ClassifierTask, DistillTask
from gmenet_cli.training import ort_teacher
from gmenet_cli.training.loop import Callbacks, fit
from gmenet_cli.training.runs import RunResult, find_latest_teacher, resolve_run_dir, resolve_store, unfinished


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
    init = _init_weights(model, model_meta, "teacher", cfg, store, start, progress)
    loss, prior = _classification_loss(cfg, store)
    task = ClassifierTask(model, loss, "hr")
    meta = {"kind": "teacher", "model": model_meta, "classes": store.classes, "class_prior": prior,
            "input": _input_spec(model, store, [], "hr"), **init}
    return fit("distill-teacher", task, store, cfg, runtime, start.run_dir, meta, [], progress, start.state)


def train_student(cfg: Config, runtime: Runtime, data: str | None = None, teacher: str | None = None,
                  name: str | None = None, resume: bool = False, progress: Callbacks | None = None) -> RunResult:
    """`gmenet train`: the GME-Net student on LR faces, with A-SKD from the frozen teacher unless disabled."""
    progress = progress or Callbacks()
    start = _start("train", cfg, data, teacher, name, resume, progress)
    cfg, store = start.cfg, start.store
    model, model_meta = _build(cfg.model.name, "student", cfg, store)
    init = _init_weights(model, model_meta, "student", cfg, store, start, progress)
    if cfg.train.init and start.state is None:
        _fine_tuning_defaults(cfg, teacher is not None, progress)
    scales = sorted(set(cfg.train.scales or store.scales))
    missing = [s for s in scales if s not in store.scales]
    if missing:
        where = "the most recent prepared store " if data is None and start.state is None else ""
        raise UsageError(f"scale x{missing[0]} is not in {where}{store.path} (it has "
                         f"{', '.join(f'x{s}' for s in store.scales)}); pass --data with a store made by "
                         f"gmenet prepare --scale {','.join(str(s) for s in scales)}")
    loss, prior = _classification_loss(cfg, store)
    meta = {"kind": "student", "model": model_meta, "classes": store.classes, "class_prior": prior,
            "input": _input_spec(model, store, scales, "lr"), "distill": cfg.distill.enabled, **init}
    if not cfg.distill.enabled:
        task = ClassifierTask(model, loss, "lowres")
        return fit("train", task, store, cfg, runtime, start.run_dir, meta, scales, progress, start.state)
    teacher_path = start.teacher or _latest_teacher(cfg.model.name, progress)
    teacher_ckpt = checkpoint.load(teacher_path)
    teacher_scale = cfg.distill.teacher_scale
    _check_teacher(teacher_ckpt, store, teacher_path, teacher_scale, scales)
    teacher_runtime = ort_teacher.resolve(cfg.distill.teacher_runtime, runtime.device)
    if teacher_runtime == "onnxruntime-int8":  # not exact, so say so (a preset may have chosen it)
        progress.message(f"the frozen teacher runs in int8 (distill.teacher_runtime {cfg.distill.teacher_runtime}; "
                         "--set distill.teacher_runtime=auto for the float teacher)")
    task = DistillTask(
        model,
        checkpoint.build_model(teacher_ckpt, teacher_path),
        loss,
        ASKDLoss(cfg.distill.weight, cfg.distill.maps),
        cfg.distill.kd_weight,
        cfg.distill.kd_temperature,
        teacher_runtime=teacher_runtime,
        teacher_calibration=ort_teacher.calibration_faces(store.split("train"))
        if teacher_runtime == "onnxruntime-int8" else None,
        teacher_scale=teacher_scale,
    )
    task.check_pairing(store.channels, store.hr_size)
    meta["teacher"] = {
        "path": str(Path(teacher_path).resolve()),
        "model": teacher_ckpt["model"]["name"],
        "val_metric": teacher_ckpt.get("best_metric"),
        "runtime": teacher_runtime,
        "scale": teacher_scale,
    }
    return fit("train", task, store, cfg, runtime, start.run_dir, meta, scales, progress, start.state)


def _fine_tuning_defaults(cfg: Config, teacher_given: bool, progress: Callbacks) -> None:
    """`train --init CKPT` keeps the geometry of the model it starts from: its face scales, unless --scales
    says otherwise (its face size and classes are checked against the store by _init_weights). No teacher is
    picked for it: a teacher is named (--teacher) or the run fine-tunes without one."""
    init = checkpoint.load(cfg.train.init, mmap=True)
    scales = [int(s) for s in init["input"].get("scales", [])]
    if not cfg.train.scales and scales:
        cfg.train.scales = scales
    if cfg.distill.enabled and not teacher_given:
        cfg.distill.enabled = False
        progress.message(f"fine-tuning {cfg.train.init} without a teacher (none is picked for --init; pass --teacher "
                         "CKPT to distil from one that fits)")


def _classification_loss(cfg: Config, store: Store) -> tuple[ClassificationLoss, list[float]]:
    """The classification loss of both commands, and the training split's class prior it may adjust by
    (kept in the checkpoint: predict-time corrections and model cards read it from there)."""
    t = cfg.train
    split = store.split("train")
    prior = class_prior(split, len(store.classes), t.soft_labels, majority_mix=t.majority_mix)
    loss = ClassificationLoss(t.label_smoothing, t.soft_labels, prior, t.logit_adjust, t.drw, len(split.labels),
                              majority_mix=t.majority_mix)
    return loss, prior


def _init_weights(
    model, model_meta: dict, kind: str, cfg: Config, store: Store, start: Start, progress: Callbacks
) -> dict:
    """`--init CKPT` (train.init): load a checkpoint's weights into the new model before the first epoch
    (fine-tuning; the optimiser, schedule and weight average start afresh). Returns the checkpoint's
    description entry. A resumed run takes its weights from last.pt instead."""
    path = cfg.train.init
    if not path:
        return {}
    if start.state is not None:
        return {"init": start.state.get("init")} if start.state.get("init") else {}
    ckpt = checkpoint.load(path)
    command = "distill-teacher" if kind == "teacher" else "train"
    if ckpt.get("kind") != kind:
        raise CheckpointError(
            f"--init {path} is a {ckpt.get('kind', 'unknown')} checkpoint; gmenet {command} "
            f"starts from a {kind} (a best.pt or last.pt of an earlier gmenet {command} run)",
            exit_code=2,
        )
    name = ckpt["model"]["name"]
    if name != model_meta["name"]:
        raise CheckpointError(
            f"--init {path} holds a {name}, this run trains a {model_meta['name']}: pass --model {name} "
            "or a checkpoint of the same architecture"
        )
    _check_fits_data(ckpt, store, f"--init {path}")
    own, theirs = model.state_dict(), ckpt["state_dict"]
    if set(own) != set(theirs) or any(own[k].shape != theirs[k].shape for k in own):
        kw = ckpt["model"].get("kwargs", {})
        differ = sorted(k for k in set(kw) | set(model_meta["kwargs"]) if kw.get(k) != model_meta["kwargs"].get(k))
        here = model_meta["kwargs"]
        why = ", ".join(
            f"{k}: {kw[k] if k in kw else 'default'} there, {here[k] if k in here else 'default'} here" for k in differ
        )
        raise CheckpointError(
            f"--init {path}: its weights do not fit this {name} ({why or 'different layers'}); "
            "train with the checkpoint's settings or start without --init"
        )
    model.load_state_dict(theirs)
    progress.message(f"starting from the weights of {path} (fine-tuning with a fresh schedule)")
    return {
        "init": {"path": str(Path(path).resolve()), "epoch": ckpt.get("epoch"), "val_metric": ckpt.get("best_metric")}
    }


def _latest_teacher(student: str, progress: Callbacks) -> str:
    found = find_latest_teacher(student)
    if found is None:
        raise UsageError("no teacher: run gmenet distill-teacher first, pass --teacher CKPT, or --no-distill")
    note = ""
    if (progress_of := unfinished(found)) is not None:
        note = (f" (warning: its run is unfinished, {progress_of[0]} of {progress_of[1]} epochs; pass --teacher to "
                "choose another)")
    progress.message(f"using the most recent teacher: {found}{note}")
    return str(found)


def _check_teacher(ckpt: dict, store: Store, path, scale: int = 1, student_scales: list[int] = ()) -> None:
    """An HR teacher (from distill-teacher); with distill.teacher_scale > 1 also a student (a teacher assistant),
    reading the faces at that factor, which must be below the student's factors: it has to see larger faces."""
    if scale > 1:
        if store.hr_size % scale:
            raise UsageError(f"distill.teacher_scale {scale} does not divide the data's {store.hr_size}px faces")
        if student_scales and scale >= min(student_scales):
            raise UsageError(f"distill.teacher_scale {scale} must be below the student's scales "
                             f"({', '.join(f'x{s}' for s in student_scales)}): "
                             "a teacher must see more than its student")
    elif ckpt.get("kind") != "teacher":
        raise CheckpointError(
            f"{path} is a {ckpt.get('kind', 'unknown')} checkpoint, not a teacher (from gmenet distill-teacher); "
            "a student can teach with --set distill.teacher_scale=N, reading faces N times smaller",
            exit_code=2,
        )
    _check_fits_data(ckpt, store, f"teacher {path}")


def _check_fits_data(ckpt: dict, store: Store, what: str) -> None:
    """A checkpoint used with this store (a teacher, or --init weights) must know its classes and faces."""
    if list(ckpt["classes"]) != store.classes:
        raise CheckpointError(f"{what} knows classes {ckpt['classes']}, the data has {store.classes}")
    spec = ckpt["input"]
    if spec["channels"] != store.channels or spec["hr_size"] != store.hr_size:
        raise CheckpointError(
            f"{what} expects {spec['channels']}-channel {spec['hr_size']}px faces, "
            f"the data has {store.channels}-channel {store.hr_size}px"
        )
