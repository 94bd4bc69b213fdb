"""The one training loop behind `distill-teacher` and `train`.

`train_teacher` / `train_student` assemble a task (see distill.py), then `fit` runs epochs: seeded batches
from the prepared store, autocast on CUDA, gradient clipping, a per-step LR schedule, validation, and after
every epoch an atomic `weights/last.pt` (+ `best.pt` on a new best), a `results.csv` row and `results.png`.
Run directory: runs/<command>/<name>/ with config.yaml. Rerunning the same --name (or --resume) continues
from last.pt with optimiser, scheduler, RNG and epoch restored.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from gmenet_cli import checkpoint
from gmenet_cli.config import Config, config_from_dict
from gmenet_cli.data.loader import PairedBatches
from gmenet_cli.data.store import Store, find_latest_store
from gmenet_cli.errors import CheckpointError, DataError, GmenetError, UsageError
from gmenet_cli.evaluate import metrics_from_confusion
from gmenet_cli.runtime import Runtime, all_reduce_sum, seed_everything

RUNS = Path("runs")


class TrainingError(GmenetError):
    """Training cannot go on (non-finite loss, ...); last.pt is kept."""


class Callbacks:
    """Progress reporting hooks; the CLI renders them with Rich, tests use this silent default."""

    def start(self, info: dict) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch(self, i: int, scalars: dict) -> None: ...
    def epoch_end(self, row: dict) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    best: Path
    last: Path
    rows: list
    best_metric: float
    resumed_from: int


# ---------------------------------------------------------------------------------------------- run dirs

def resolve_run_dir(command: str, name: str | None, resume: bool) -> tuple[Path, bool]:
    """-> (run dir, resuming). Auto-numbered exp, exp2, ... unless --name; an unfinished named run resumes."""
    base = RUNS / command
    if name:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise UsageError(f"--name must be a plain folder name, got '{name}'")
        run = base / name
        last = run / "weights" / "last.pt"
        if last.is_file():
            ck = checkpoint.load(last, mmap=True)  # only the flag is needed
            if ck.get("finished"):
                if resume:
                    raise UsageError(f"run {run} already finished ({ck.get('epoch')} epochs); nothing to resume")
                raise UsageError(f"run {run} already finished; choose another --name or delete it")
            return run, True
        if resume:
            raise UsageError(f"--resume: no {last} to resume from")
        return run, False
    if resume:
        candidates = sorted(base.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for last in candidates:
            if not checkpoint.load(last, mmap=True).get("finished"):
                return last.parent.parent, True
        raise UsageError(f"--resume: no unfinished run under {base}")
    n = 1
    while (base / ("exp" if n == 1 else f"exp{n}")).exists():
        n += 1
    return base / ("exp" if n == 1 else f"exp{n}"), False


def resolve_store(data: str | None, cb: Callbacks) -> Store:
    if data:
        return Store(data)
    latest = find_latest_store()
    if latest is None:
        raise DataError("no prepared store found under prepared/; run gmenet prepare first or pass --data")
    cb.message(f"using the most recent prepared store: {latest}")
    return Store(latest)


def find_latest_teacher() -> Path | None:
    found = sorted((RUNS / "distill-teacher").glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def find_latest_weights() -> Path | None:
    """For bare `gmenet evaluate`: the newest student, else the newest teacher."""
    for command in ("train", "distill-teacher"):
        found = sorted((RUNS / command).glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


# ---------------------------------------------------------------------------------------------- entry points

def _check_train_options(cfg: Config, n_train: int) -> None:
    t = cfg.train
    if t.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {t.epochs}")
    if t.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {t.batch_size}")
    if t.batch_size > n_train:
        raise UsageError(f"--batch-size {t.batch_size} is larger than the {n_train} training faces; use {n_train} or less")
    if cfg.optim.lr <= 0 or not math.isfinite(cfg.optim.lr):
        raise UsageError(f"--lr must be a positive number, got {cfg.optim.lr}")
    if cfg.optim.name not in ("adamw", "sgd"):
        raise UsageError(f"optim.name must be adamw or sgd, got '{cfg.optim.name}'")
    if cfg.optim.schedule not in ("cosine", "step", "constant"):
        raise UsageError(f"optim.schedule must be cosine, step or constant, got '{cfg.optim.schedule}'")
    if not 0 <= t.label_smoothing < 1:
        raise UsageError("train.label_smoothing must be in [0, 1)")
    if t.shift < 0:
        raise UsageError("train.shift must be >= 0")


def _input_spec(model, store: Store, scales: list[int], view: str) -> dict:
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


def train_teacher(cfg: Config, rt: Runtime, data: str | None = None, name: str | None = None,
                  resume: bool = False, cb: Callbacks | None = None) -> RunResult:
    """`gmenet distill-teacher`: the HR teacher on HR faces."""
    from gmenet_cli.distill import ClassificationLoss, ClassifierTask
    from gmenet_cli.models import create_model, get_spec

    cb = cb or Callbacks()
    run_dir, resuming = resolve_run_dir("distill-teacher", name, resume)
    state = None
    if resuming:
        state = checkpoint.load(run_dir / "weights" / "last.pt")
        cfg = config_from_dict(state["config"])
        data = state["data"]["path"]
        cb.message(f"resuming {run_dir} from epoch {state['epoch']} (its saved config is used)")
    store = resolve_store(data, cb)
    if get_spec(cfg.model.teacher).kind != "teacher":
        raise UsageError(f"'{cfg.model.teacher}' is not a teacher model; use one of teacher_t, teacher_s, teacher_m")
    kwargs = {"in_chans": store.channels, "num_classes": len(store.classes), "input_size": store.hr_size, **cfg.model.kwargs}
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # before building: the weight init is seeded too
    model = create_model(cfg.model.teacher, **kwargs)
    task = ClassifierTask(model, ClassificationLoss(cfg.train.label_smoothing, cfg.train.soft_labels), "hr", rt.channels_last)
    meta = {
        "kind": "teacher",
        "model": {"name": cfg.model.teacher, "kwargs": kwargs},
        "classes": store.classes,
        "input": _input_spec(model, store, [], "hr"),
    }
    return fit("distill-teacher", task, model, store, cfg, rt, run_dir, meta, [], cb, state)


def train_student(cfg: Config, rt: Runtime, data: str | None = None, teacher: str | None = None,
                  name: str | None = None, resume: bool = False, cb: Callbacks | None = None) -> RunResult:
    """`gmenet train`: the GME-Net student on LR faces, with A-SKD from the frozen teacher unless disabled."""
    from gmenet_cli.distill import ASKDLoss, ClassificationLoss, ClassifierTask, DistillTask
    from gmenet_cli.models import create_model, get_spec

    cb = cb or Callbacks()
    run_dir, resuming = resolve_run_dir("train", name, resume)
    state = None
    if resuming:
        state = checkpoint.load(run_dir / "weights" / "last.pt")
        cfg = config_from_dict(state["config"])
        data = state["data"]["path"]
        teacher = (state.get("teacher") or {}).get("path")
        cb.message(f"resuming {run_dir} from epoch {state['epoch']} (its saved config is used)")
    store = resolve_store(data, cb)
    scales = sorted(set(cfg.train.scales or store.scales))
    missing = [s for s in scales if s not in store.scales]
    if missing:
        raise UsageError(f"scale x{missing[0]} is not in {store.path} (it has {', '.join(f'x{s}' for s in store.scales)}); "
                         f"run gmenet prepare with --scale {','.join(str(s) for s in scales)}")
    if get_spec(cfg.model.name).kind != "student":
        raise UsageError(f"'{cfg.model.name}' is not a student model; use one of gmenet_t, gmenet_s, gmenet_m")
    kwargs = {"in_chans": store.channels, "num_classes": len(store.classes), "input_size": store.hr_size, **cfg.model.kwargs}
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # before building: the weight init is seeded too
    model = create_model(cfg.model.name, **kwargs)
    loss = ClassificationLoss(cfg.train.label_smoothing, cfg.train.soft_labels)
    meta = {
        "kind": "student",
        "model": {"name": cfg.model.name, "kwargs": kwargs},
        "classes": store.classes,
        "input": _input_spec(model, store, scales, "lr"),
        "distill": cfg.distill.enabled,
    }
    if cfg.distill.enabled:
        if teacher is None:
            found = find_latest_teacher()
            if found is None:
                raise UsageError("no teacher: run gmenet distill-teacher first, pass --teacher CKPT, or --no-distill")
            teacher = str(found)
            cb.message(f"using the most recent teacher: {teacher}")
        t_ck = checkpoint.load(teacher)
        _check_teacher(t_ck, store, teacher)
        t_model = checkpoint.build_model(t_ck, teacher)
        task = DistillTask(model, t_model, loss, ASKDLoss(cfg.distill.weight, cfg.distill.maps),
                           cfg.distill.kd_weight, cfg.distill.kd_temperature, rt.channels_last)
        # Fail now, not after an epoch, if the teacher's maps do not pair with the student's.
        with torch.no_grad():
            probe = torch.zeros(2, store.channels, store.hr_size, store.hr_size)
            task.askd(model.eval()(probe, return_maps=True)[1], t_model(probe, return_maps=True)[1])
        model.train()
        meta["teacher"] = {"path": str(Path(teacher).resolve()), "model": t_ck["model"]["name"],
                           "val_metric": t_ck.get("best_metric")}
    else:
        task = ClassifierTask(model, loss, "lr", rt.channels_last)
    return fit("train", task, model, store, cfg, rt, run_dir, meta, scales, cb, state)


def _check_teacher(ck: dict, store: Store, path) -> None:
    if ck.get("kind") != "teacher":
        raise CheckpointError(f"{path} is a {ck.get('kind', 'unknown')} checkpoint, not a teacher (from gmenet distill-teacher)")
    if list(ck["classes"]) != store.classes:
        raise CheckpointError(f"teacher {path} knows classes {ck['classes']}, the data has {store.classes}")
    if ck["input"]["channels"] != store.channels or ck["input"]["hr_size"] != store.hr_size:
        raise CheckpointError(f"teacher {path} expects {ck['input']['channels']}-channel {ck['input']['hr_size']}px faces, "
                              f"the data has {store.channels}-channel {store.hr_size}px")


# ---------------------------------------------------------------------------------------------- the loop

def _optimizer(model, cfg: Config):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]  # BN and biases
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def _schedule(opt, cfg: Config, steps_per_epoch: int):
    total = cfg.train.epochs * steps_per_epoch
    warm = int(cfg.optim.warmup_epochs * steps_per_epoch)
    milestones = [m * steps_per_epoch for m in cfg.optim.step_epochs]

    def factor(step: int) -> float:
        if step < warm:
            return 0.01 + 0.99 * step / max(1, warm)
        if cfg.optim.schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.optim.schedule == "step":
            return 0.1 ** sum(step >= m for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def validate(task, split, rt: Runtime, scales: list[int], batch_size: int) -> dict:
    """Accuracy and mean per-class accuracy on a split: HR for teachers, each LR scale for students."""
    task.eval()
    # DDP's forward is a collective (it broadcasts buffers), which would need equal shards; validation runs
    # the bare model instead, so every rank can take its share of the whole split and no sample is left out.
    wrapped = task.model
    if rt.distributed:
        task.model = task.core
    try:
        return _validate(task, split, rt, scales, batch_size)
    finally:
        task.model = wrapped
        task.train()


def _validate(task, split, rt: Runtime, scales: list[int], batch_size: int) -> dict:
    out: dict = {}
    k = task.core.num_classes
    views = [None] if not scales else scales
    accs, mcas = [], []
    for scale in views:
        loader = PairedBatches(split, batch_size, [scale] if scale else [], shuffle=False, augment=False,
                               rank=rt.rank, world=rt.world, with_hr=scale is None, even=False)
        conf = torch.zeros(k, k, dtype=torch.float64)
        loss_sum = 0.0
        for batch in loader:
            with rt.autocast():
                res = task(batch, rt.device)
            pred = res["logits"].argmax(1).cpu()
            target = batch["target"]
            conf += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k).double()
            loss_sum += float(res["ce"]) * len(target)
        flat = all_reduce_sum(rt, conf.flatten().tolist() + [loss_sum])
        m = metrics_from_confusion(np.asarray(flat[:-1]).reshape(k, k), list(range(k)))
        acc, mca, n = m["accuracy"], m["mean_class_accuracy"], m["count"]
        suffix = f"_x{scale}" if scale else ""
        out[f"val_acc{suffix}"] = acc
        out[f"val_mca{suffix}"] = mca
        out[f"val_loss{suffix}"] = flat[-1] / max(n, 1)
        accs.append(acc)
        mcas.append(mca)
    if scales:
        out["val_acc"] = float(np.mean(accs))
        out["val_mca"] = float(np.mean(mcas))
    return out


def fit(command: str, task, model, store: Store, cfg: Config, rt: Runtime, run_dir: Path, meta: dict,
        scales: list[int], cb: Callbacks, state: dict | None) -> RunResult:
    train_split = store.split("train")
    _check_train_options(cfg, train_split.count // rt.world)
    val_name = cfg.train.val_split if cfg.train.val_split in store.splits else ("test" if "test" in store.splits else None)
    if val_name != cfg.train.val_split:
        cb.message(f"no '{cfg.train.val_split}' split in the store; "
                   + (f"selecting best.pt on '{val_name}'" if val_name else "best.pt = last epoch (no validation split)"))
    torch.manual_seed(cfg.train.seed + rt.rank)  # per-rank dropout streams; the init was seeded identically
    model.to(rt.device)
    if getattr(task, "teacher", None) is not None:
        task.teacher.to(rt.device)
    if rt.channels_last:
        task.to(memory_format=torch.channels_last)
    opt = _optimizer(model, cfg)
    loader = PairedBatches(train_split, cfg.train.batch_size, scales, shuffle=True, augment=True, flip=cfg.train.flip,
                           shift=cfg.train.shift, seed=cfg.train.seed, rank=rt.rank, world=rt.world, drop_last=True,
                           with_hr=(command == "distill-teacher" or getattr(task, "teacher", None) is not None),
                           pin=rt.device.type == "cuda")
    steps = len(loader)
    sched = _schedule(opt, cfg, steps)
    start_epoch, best_metric, rows = 0, -1.0, []
    if state is not None:
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, best_metric = int(state["epoch"]), float(state.get("best_metric", -1.0))
        rows = _read_rows(run_dir / "results.csv")[:start_epoch]
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        task.model = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if cfg.train.compile:
        task.model = torch.compile(task.model)
    weights = run_dir / "weights"
    base_meta = {**meta, "config": cfg.to_dict(),
                 "data": {"path": str(store.path.resolve()), "content_hash": store.content_hash,
                          "source": store.manifest.get("source")}}
    if rt.is_main:
        weights.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    cb.start({"run_dir": run_dir, "store": store.path, "device": str(rt.device), "train": train_split.count,
              "val": val_name, "epochs": cfg.train.epochs, "start_epoch": start_epoch, "model": meta["model"]["name"],
              "params": sum(p.numel() for p in model.parameters()), "world": rt.world})

    def snapshot(epoch: int, finished: bool, metrics: dict) -> dict:
        return {**base_meta, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "epoch": epoch, "finished": finished, "best_metric": best_metric, "metrics": metrics,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": {"torch": torch.get_rng_state()}}

    epoch = start_epoch
    try:
        task.train()
        for epoch in range(start_epoch, cfg.train.epochs):
            loader.set_epoch(epoch)
            cb.epoch_start(epoch, cfg.train.epochs, steps)
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            correct = seen = 0
            for i, batch in enumerate(loader):
                with rt.autocast():
                    res = task(batch, rt.device)
                loss = res["loss"]
                if not torch.isfinite(loss):
                    raise TrainingError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch {i + 1}; "
                                        f"stopped. last.pt (epoch {epoch}) is kept. Try a lower --lr.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                opt.step()
                sched.step()
                n = len(batch["target"])
                seen += n
                correct += int((res["logits"].argmax(1).cpu() == batch["target"]).sum())
                scalars = {k: float(v.detach()) for k, v in res.items() if k != "logits" and torch.is_tensor(v) and v.ndim == 0}
                for k, v in scalars.items():
                    sums[k] = sums.get(k, 0.0) + v * n
                cb.batch(i, {"loss": scalars["loss"], "acc": correct / seen})
            seconds = time.perf_counter() - t0
            totals = all_reduce_sum(rt, [sums[k] for k in sorted(sums)] + [correct, seen])
            seen_all = max(totals[-1], 1)
            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
            row.update({f"train_{k}": v / seen_all for k, v in zip(sorted(sums), totals)})
            row["train_acc"] = totals[-2] / seen_all
            if val_name:
                row.update(validate(task, store.split(val_name), rt, scales, max(cfg.train.batch_size, 256)))
            row["train_images"] = int(seen_all)  # summed over ranks: each sample once per epoch
            row["epoch_time_s"] = seconds
            row["images_per_s"] = seen_all / seconds
            metric = row.get("val_acc", row["train_acc"])
            improved = metric > best_metric
            if improved:
                best_metric = metric
            rows.append(row)
            finished = epoch + 1 == cfg.train.epochs
            if rt.is_main:
                snap = snapshot(epoch + 1, finished, row)
                if improved:
                    checkpoint.save(weights / "best.pt", {**snap, "optimizer": None, "scheduler": None})
                checkpoint.save(weights / "last.pt", snap)
                _write_rows(run_dir / "results.csv", rows)
                _plot(run_dir / "results.png", rows)
            cb.epoch_end({**row, "best": improved})
    except KeyboardInterrupt:
        # last.pt stays at the last completed epoch (mid-epoch weights are not saved): a resumed run then
        # replays exactly what an uninterrupted one would have done, as after kill -9.
        if (weights / "last.pt").is_file():
            done, hint = f"{weights / 'last.pt'} holds epoch {epoch}", f"Resume with: gmenet {command} --name {run_dir.name} --resume"
        else:
            done, hint = "no epoch completed yet", "Rerun the command to start over"
        raise TrainingError(f"interrupted in epoch {epoch + 1}; {done}. {hint}", exit_code=130) from None
    # An epoch with no improvement never wrote best.pt only if no epoch ever ran (resume of a finished run is refused).
    return RunResult(run_dir, weights / "best.pt", weights / "last.pt", rows, best_metric, start_epoch)


def _write_rows(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else v) for k, v in r.items()} for r in csv.DictReader(f)]


def _plot(path: Path, rows: list[dict]) -> None:
    """Loss and accuracy curves; skipped silently if matplotlib is unavailable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key in [k for k in rows[-1] if k.startswith("train_") and k not in ("train_acc", "train_images")]:
        a.plot(epochs, [r.get(key, float("nan")) for r in rows], label=key[6:])  # loss parts only
    a.set_xlabel("epoch")
    a.set_title("training losses")
    a.legend()
    for key in [k for k in rows[-1] if k in ("train_acc", "val_acc") or k.startswith("val_acc_x")]:
        b.plot(epochs, [r.get(key, float("nan")) for r in rows], label=key)
    b.set_xlabel("epoch")
    b.set_title("accuracy")
    b.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
