"""The one training loop behind `distill-teacher` and `train`.

`fit` runs epochs of `train_step` over seeded batches from the prepared store (autocast on CUDA, gradient
clipping, a per-step learning-rate schedule), validates with the evaluation loop `gmenet evaluate` uses,
and after every epoch writes an atomic `weights/last.pt` (+ `best.pt` on a new best), a `results.csv` row
and `results.png`. Rerunning the same --name (or --resume) continues from last.pt with optimiser,
scheduler, RNG and epoch restored.

Step-time habits for a big GPU: batches move once (runtime.to_device, non-blocking from pinned memory);
loss parts and accuracy are summed on the device; the host reads them (a sync) only every `SYNC_EVERY`
steps, for the progress line and the non-finite-loss check, which still names the first bad batch.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gmenet_cli import checkpoint
from gmenet_cli.config import Config
from gmenet_cli.data.augment import make_views
from gmenet_cli.data.loader import PairedBatches
from gmenet_cli.data.store import Store
from gmenet_cli.errors import GmenetError, UsageError
from gmenet_cli.evaluate import metrics_from_confusion, score_split
from gmenet_cli.runtime import Runtime, all_reduce_sum, epoch_seed, to_device
from gmenet_cli.tasks import ClassifierTask
from gmenet_cli.training.ema import WeightEMA
from gmenet_cli.training.history import read_rows, write_rows
from gmenet_cli.training.optim import build_optimizer, build_schedule
from gmenet_cli.training.runs import RunResult

SYNC_EVERY = 10  # steps between host reads of the running loss (progress, non-finite check)


class TrainingError(GmenetError):
    """Training cannot go on (non-finite loss, ...); last.pt is kept."""


class Callbacks:
    """Progress reporting hooks; the CLI renders them with Rich, tests use this silent default."""

    def start(self, info: dict) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch(self, i: int, scalars: dict) -> None: ...
    def epoch_end(self, row: dict) -> None: ...
    def message(self, text: str) -> None: ...


def check_fits_data(cfg: Config, n_train: int) -> None:
    """What only the data can tell (every value alone was checked when the config was built, config.validate)."""
    if cfg.train.batch_size > n_train:
        raise UsageError(f"--batch-size {cfg.train.batch_size} is larger than the {n_train} training faces; use "
                         f"{n_train} or less")


def train_step(task: ClassifierTask, batch: dict, opt: torch.optim.Optimizer, sched, runtime: Runtime,
               grad_clip: float, ema: WeightEMA | None = None, scaler: torch.amp.GradScaler | None = None) -> dict:
    """One optimisation step on a batch already on the device -> the task's outputs (detached scalars and
    logits), still on the device: nothing here waits for the GPU. Online batches (raw HR + augmentation
    parameters) get their augmented HR and LR views here, on the device. With a GradScaler (float16
    autocast), the loss is scaled for backward and the gradients unscaled before clipping; a step whose
    gradients overflowed is skipped by the scaler."""
    if "augment" in batch:
        batch = make_views(batch, student=task.view == "lowres")
    with runtime.autocast():
        res = task(batch)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        res["loss"].backward()
    else:
        scaler.scale(res["loss"]).backward()
        scaler.unscale_(opt)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(task.core.parameters(), grad_clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()
    sched.step()
    if ema is not None:
        ema.update(task.core)
    return res


@torch.no_grad()
def validate(model, split, runtime: Runtime, scales: list[int], batch_size: int, tta: bool = True) -> dict:
    """Accuracy, mean per-class accuracy and loss on a split: HR for teachers, each LR scale for students.

    `model` is the bare model or its weight average (never the DDP wrapper, whose forward is a collective
    that would need equal shards), so every rank scores its share of the whole split, none left out."""
    was_training = model.training
    model.eval()
    out: dict = {}
    k = model.num_classes
    accs, mcas = [], []
    try:
        for scale in scales or [None]:
            conf, loss_sum = score_split(
                model, split, scale, runtime.device, batch_size, runtime.rank, runtime.world, tta
            )
            flat = all_reduce_sum(runtime, conf.flatten().double().tolist() + [float(loss_sum)])
            m = metrics_from_confusion(np.asarray(flat[:-1]).reshape(k, k), list(range(k)))
            suffix = f"_x{scale}" if scale else ""
            out[f"val_acc{suffix}"] = m["accuracy"]
            out[f"val_mca{suffix}"] = m["mean_class_accuracy"]
            out[f"val_loss{suffix}"] = flat[-1] / max(m["count"], 1)
            accs.append(m["accuracy"])
            mcas.append(m["mean_class_accuracy"])
    finally:
        model.train(was_training)
    if scales:
        out["val_acc"] = float(np.mean(accs))
        out["val_mca"] = float(np.mean(mcas))
    return out


class _Run:
    """The state of one training run between epochs: optimiser, schedule, history, best metric."""

    def __init__(
        self,
        command: str,
        task,
        store: Store,
        train_split,
        val_split,
        cfg: Config,
        runtime: Runtime,
        run_dir: Path,
        meta: dict,
        scales: list[int],
        progress: Callbacks,
    ):
        self.command, self.task, self.store, self.cfg, self.runtime = command, task, store, cfg, runtime
        self.val_split = val_split
        self.run_dir, self.scales, self.progress = run_dir, scales, progress
        self.weights = run_dir / "weights"
        self.model = task.core
        self.opt = build_optimizer(self.model, cfg, runtime.world)
        stored = bool(scales) and _stored_lowres(cfg, store, progress)
        self.loader = PairedBatches(
            train_split,
            cfg.train.batch_size,
            scales,
            shuffle=True,
            flip=cfg.train.flip,
            seed=cfg.train.seed,
            rank=runtime.rank,
            world=runtime.world,
            drop_last=True,
            pin=runtime.device.type == "cuda",
            online=dataclasses.asdict(cfg.augment),
            stored_lowres=stored,
        )
        self.sched = build_schedule(self.opt, cfg, len(self.loader))
        self.scaler = runtime.grad_scaler()  # float16 autocast only (GPUs without native bf16)
        # the weight average that is validated and saved (train.ema > 0)
        self.ema = WeightEMA(self.model, cfg.train.ema) if cfg.train.ema > 0 else None
        self.start_epoch, self.best_metric, self.rows = 0, -1.0, []
        self.base_meta = {
            **meta,
            "config": cfg.to_dict(),
            "data": {
                "path": str(store.path.resolve()),
                "content_hash": store.content_hash,
                "source": store.manifest.get("source"),
            },
        }

    @property
    def evaluated(self):
        """The weights that are validated and saved as the model: the average if train.ema, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state.get("train_state_dict") or state["state_dict"])
        if self.ema is not None and state.get("ema_state"):
            self.ema.load_state_dict(state["ema_state"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.best_metric = int(state["epoch"]), float(state.get("best_metric", -1.0))
        self.rows = read_rows(self.run_dir / "results.csv")[: self.start_epoch]

    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch; -> the epoch's row of training scalars (summed over ranks)."""
        runtime, task = self.runtime, self.task
        self.loader.set_epoch(epoch)
        if hasattr(task.loss, "set_epoch"):  # train.drw: the class weights come on at their epoch (resume too)
            task.loss.set_epoch(epoch, self.cfg.train.epochs)
        torch.manual_seed(epoch_seed(self.cfg.train.seed, epoch, runtime.rank))  # dropout: CPU and every CUDA device
        self.progress.epoch_start(epoch, self.cfg.train.epochs, len(self.loader))
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
        first_bad = torch.full((), -1, dtype=torch.int64, device=runtime.device)  # first batch with a non-finite loss
        seen = 0
        for i, batch in enumerate(self.loader):
            batch = to_device(batch, runtime.device)
            res = train_step(
                task, batch, self.opt, self.sched, runtime, self.cfg.optim.grad_clip, self.ema, self.scaler
            )
            n = len(batch["target"])
            seen += n
            bad = ~torch.isfinite(res["loss"].detach())
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, i), first_bad)
            correct += (res["logits"].detach().argmax(1) == batch["target"]).sum()
            for k, v in res.items():
                if k != "logits" and torch.is_tensor(v) and v.ndim == 0:
                    sums[k] = sums.get(k, 0) + v.detach().double() * n
            if (i + 1) % SYNC_EVERY == 0 or i + 1 == len(self.loader):
                self._check_finite(first_bad, epoch)
                self.progress.batch(i, {"loss": float(sums["loss"]) / seen, "acc": int(correct) / seen})
        seconds = time.perf_counter() - t0
        keys = sorted(sums)
        totals = all_reduce_sum(runtime, [float(sums[k]) for k in keys] + [int(correct), seen])
        seen_all = max(totals[-1], 1)
        row = {"epoch": epoch + 1, "lr": self.opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": v / seen_all for k, v in zip(keys, totals)})
        row["train_acc"] = totals[-2] / seen_all
        return {**row, "train_images": int(seen_all), "epoch_time_s": seconds, "images_per_s": seen_all / seconds}

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad = int(first_bad)
        if bad >= 0:
            raise TrainingError(
                f"non-finite loss at epoch {epoch + 1}, batch {bad + 1}; stopped. "
                f"last.pt (epoch {epoch}) is kept. Try a lower --lr."
            )

    def end_epoch(self, epoch: int, row: dict) -> None:
        """Validate, keep the best, write last.pt / best.pt / results.csv / results.png (rank 0 only)."""
        if self.val_split is not None:
            t0 = time.perf_counter()
            val = validate(
                self.evaluated,
                self.val_split,
                self.runtime,
                self.scales,
                max(self.cfg.train.batch_size, 256),
                self.cfg.train.tta,
            )
            row = {
                **{k: v for k, v in row.items() if k not in ("train_images", "epoch_time_s", "images_per_s")},
                **val,
                **{k: row[k] for k in ("train_images", "epoch_time_s", "images_per_s")},
                "val_time_s": time.perf_counter() - t0,
            }
        metric = row.get("val_acc", row["train_acc"])
        improved = metric > self.best_metric
        if improved:
            self.best_metric = metric
        self.rows.append(row)
        if self.runtime.is_main:
            from gmenet_cli import plots

            snap = self.snapshot(epoch + 1, epoch + 1 == self.cfg.train.epochs, row)
            if improved:  # the model alone: no optimiser, schedule or second copy of the weights
                best = {k: v for k, v in snap.items() if k not in ("train_state_dict", "ema_state", "scaler")}
                checkpoint.save(self.weights / "best.pt", {**best, "optimizer": None, "scheduler": None})
            checkpoint.save(self.weights / "last.pt", snap)
            write_rows(self.run_dir / "results.csv", self.rows)
            plots.training_curves(self.run_dir / "results.png", self.rows)
        self.progress.epoch_end({**row, "best": improved})

    def snapshot(self, epoch: int, finished: bool, metrics: dict) -> dict:
        """`state_dict` holds the weights evaluate/predict/export use (the average under train.ema); the
        training state rides along for --resume (best.pt drops it)."""
        snap = {
            **self.base_meta,
            "state_dict": _cpu(self.evaluated.state_dict()),
            "epoch": epoch,
            "finished": finished,
            "best_metric": self.best_metric,
            "metrics": metrics,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
        }
        if self.scaler is not None:
            snap["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            snap["train_state_dict"] = _cpu(self.model.state_dict())
            snap["ema_state"] = {"module": _cpu(self.ema.module.state_dict()), "updates": self.ema.updates}
        return snap


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def _stored_lowres(cfg: Config, store: Store, progress: Callbacks) -> bool:
    """Where the student's LR faces come from: made on the device from each augmented HR face (area
    downsampling, train.lowres online), or the store's own LR bytes, augmented like their HR face
    (train.lowres prepared). A store prepared with another method, blur, noise or JPEG keeps its own LR
    bytes, so that train and test inputs come from one degradation. The augmentation is the same either
    way, and the teacher (HR faces only) never depends on it."""
    deg = store.manifest.get("degradation", {})
    plain = deg.get("method", "area") == "area" and not any(
        deg.get(k) for k in ("blur_sigma", "noise_std", "jpeg_quality")
    )
    if cfg.train.lowres == "prepared":
        return True
    if not plain:
        how = ", ".join(f"{k} {v}" for k, v in deg.items() if k != "seed" and v and not (k == "method" and v == "area"))
        progress.message(
            f"{store.path} was prepared with {how}: the student reads its stored LR faces, augmented "
            "like their HR face (train.lowres prepared), since on-the-fly synthesis is plain area "
            "downsampling"
        )
    return not plain


def _splits(store: Store, cfg: Config, progress: Callbacks):
    """(train split, validation split or None). A store without the validation split (RAF-DB's layout has
    only train and test) holds out a seeded part of train, so best.pt is never chosen on the split it is
    later scored on."""
    from gmenet_cli.data.store import hold_out

    train, wanted = store.split("train"), cfg.train.val_split
    if wanted in store.splits:
        return train, store.split(wanted)
    if not 0 < cfg.train.holdout < 1 or train.count < 2:
        progress.message(f"no '{wanted}' split in the store and no hold-out: best.pt = the last epoch")
        return train, None
    train, val = hold_out(train, cfg.train.holdout)
    progress.message(
        f"no '{wanted}' split in the store: holding out {val.count} of the {store.split('train').count} "
        f"training faces ({cfg.train.holdout:.0%}, always the same ones) to choose best.pt; "
        + (
            "the test split stays for gmenet evaluate"
            if "test" in store.splits
            else "set train.holdout=0 to train on all"
        )
    )
    return train, val


def _fit_batch(cfg: Config, n_train: int, world: int, progress: Callbacks) -> None:
    """A batch larger than the data shrinks to it, with a note (a 42-face dataset still trains)."""
    per_process = n_train // world
    if cfg.train.batch_size > per_process >= 1:
        progress.message(
            f"--batch-size {cfg.train.batch_size} is larger than the {per_process} training faces"
            f"{' per process' if world > 1 else ''}: using {per_process}"
        )
        cfg.train.batch_size = per_process


def _place(task, runtime: Runtime, cfg: Config) -> None:
    """channels_last on CUDA; DDP and torch.compile wrap the trained model last (after any restore)."""
    if runtime.channels_last:
        task.to(memory_format=torch.channels_last)
    if runtime.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        task.model = DDP(task.model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    if cfg.train.compile:
        # dynamic=None: shapes start static and become dynamic where they vary (the LR groups' sizes do)
        task.model = torch.compile(task.model, backend=cfg.train.compile_backend)


def fit(
    command: str,
    task,
    store: Store,
    cfg: Config,
    runtime: Runtime,
    run_dir: Path,
    meta: dict,
    scales: list[int],
    progress: Callbacks,
    state: dict | None,
) -> RunResult:
    train_split, val_split = _splits(store, cfg, progress)
    _fit_batch(cfg, train_split.count, runtime.world, progress)
    check_fits_data(cfg, train_split.count // runtime.world)
    task.to(runtime.device)
    run = _Run(command, task, store, train_split, val_split, cfg, runtime, run_dir, meta, scales, progress)
    if state is not None:
        run.restore(state)
    _place(task, runtime, cfg)
    if run.ema is not None and runtime.channels_last:
        run.ema.to(memory_format=torch.channels_last)
    if runtime.is_main:
        run.weights.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    progress.start(
        {
            "run_dir": run_dir,
            "store": store.path,
            "device": str(runtime.device),
            "train": train_split.count,
            "val": val_split.name if val_split else None,
            "epochs": cfg.train.epochs,
            "start_epoch": run.start_epoch,
            "model": meta["model"]["name"],
            "params": sum(p.numel() for p in run.model.parameters()),
            "world": runtime.world,
            "batch_size": cfg.train.batch_size,
        }
    )
    epoch = run.start_epoch
    try:
        task.train()
        for epoch in range(run.start_epoch, cfg.train.epochs):
            run.end_epoch(epoch, run.run_epoch(epoch))
    except KeyboardInterrupt:
        _interrupted(command, run, epoch, fresh=state is None)
    if runtime.is_main and val_split is not None and (run.weights / "best.pt").is_file():
        _calibrate(run, val_split, progress)
    return RunResult(
        run_dir,
        run.weights / "best.pt",
        run.weights / "last.pt",
        run.rows,
        run.best_metric,
        store.path,
        meta["model"]["name"],
        cfg.train.batch_size,
    )


def _calibrate(run: _Run, val_split, progress: Callbacks) -> None:
    """After the last epoch: temperatures per trained face size (and predicted class where that calibrates
    better), fitted on the validation split, go into best.pt (calibrate.py), so that predict's confidences are
    probabilities a user can act on."""
    from gmenet_cli.calibrate import describe
    from gmenet_cli.evaluate import calibrate_checkpoint

    cal = calibrate_checkpoint(
        run.weights / "best.pt", val_split, run.runtime.device, max(run.cfg.train.batch_size, 256), run.cfg.train.tta
    )
    progress.message(f"calibrated best.pt on {val_split.name}: "
                     + "; ".join(f"{px}px {describe(cal, px)}" for px in cal["temperature"]))


def _interrupted(command: str, run: _Run, epoch: int, fresh: bool):
    """Ctrl-C: last.pt stays at the last completed epoch (mid-epoch weights are not saved), so a resumed run
    replays exactly what an uninterrupted one would have done, as after kill -9. A new run stopped before
    its first epoch ended leaves nothing behind (not a folder holding only config.yaml, which would push
    the next run to expN+1 and give --resume nothing to find)."""
    last = run.weights / "last.pt"
    if last.is_file():
        done = f"{last} holds epoch {epoch}"
        hint = f"Resume with: gmenet {command} --name {run.run_dir.name} --resume"
    else:
        done, hint = "no epoch completed yet", "Rerun the command to start over"
        if fresh and run.runtime.is_main:
            import shutil

            shutil.rmtree(run.run_dir, ignore_errors=True)
    raise TrainingError(f"interrupted in epoch {epoch + 1}; {done}. {hint}", exit_code=130) from None
