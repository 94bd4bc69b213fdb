"""Training speed, side by side in one run: what each step costs, and how fast the data path is.

Step speed: for each configuration, optimisation steps (forward, backward, SGD) on real FERPlus batches
from the real loader, timed in interleaved rounds (config A, B, C, ..., A, B, C, ...) so that machine noise
hits all alike; medians over rounds, images per second, and each configuration's ratio to the first.
Configurations (--set default): the first-generation teacher and distilling student (teacher_s, gmenet_s at
48 px, paired stored LR faces), the new ones (teacher_s2, gmenet_s2 at 24 px, on-the-fly augmentation and
LR synthesis), each with channels_last off and on, and the parts of gmenet_s2 (without the global branch,
with CBAM's spatial attention instead of the depthwise one, the plain CNN of ablation row 0).

Loader alone (--loader-only, or the last table): faces per second the host side delivers (memory-mapped
store, augmentation parameters, background thread), with no model; and with the on-the-fly warp and LR
synthesis done on this machine's CPU too, the part a GPU takes over.

    python benchmarks/train_speed.py [--store PREPARED] [--rounds 3] [--steps 6] [--loader-only]
    python benchmarks/train_speed.py --match 'channels_last|bf16' --no-loader   # a subset, side by side
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import tempfile
import time

import torch
from _common import FERPLUS, header, require_ferplus

AUG = {"shift": 4.0, "scale": 0.1, "rotate": 10.0, "erase": 0.0}


def configs(size: str) -> list[dict]:
    """name, teacher, student (None = teacher training), online, channels_last, student kwargs."""
    base = [
        dict(name="teacher_s (first generation), NCHW", teacher="teacher_s", online=False, cl=False),
        dict(name="teacher_s2, NCHW", teacher="teacher_s2", online=True, cl=False),
        dict(name="teacher_s2, channels_last", teacher="teacher_s2", online=True, cl=True),
        dict(name="teacher_s2, channels_last, oneDNN's weight gradients", teacher="teacher_s2", online=True, cl=True,
             hand_grad=False),
        dict(name="gmenet_s @48 + teacher_s (first generation), NCHW", teacher="teacher_s", student="gmenet_s",
             online=False, cl=False),
        dict(name="gmenet_s2 @24 + teacher_s2, NCHW", teacher="teacher_s2", student="gmenet_s2", online=True, cl=False),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last", teacher="teacher_s2", student="gmenet_s2", online=True,
             cl=True),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, teacher in onnxruntime (the CPU default)",
             teacher="teacher_s2", student="gmenet_s2", online=True, cl=True, ort="onnxruntime"),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, teacher in onnxruntime int8 (the ferplus preset)",
             teacher="teacher_s2", student="gmenet_s2", online=True, cl=True, ort="onnxruntime-int8"),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, teacher BN not folded", teacher="teacher_s2",
             student="gmenet_s2", online=True, cl=True, fuse=False),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, kernels not cut to small maps", teacher="teacher_s2",
             student="gmenet_s2", online=True, cl=True, full_kernels=True),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, torch.compile (inductor) on the student",
             teacher="teacher_s2", student="gmenet_s2", online=True, cl=True, compile=True),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, teacher in onnxruntime int8, oneDNN's weight gradients",
             teacher="teacher_s2", student="gmenet_s2", online=True, cl=True, ort="onnxruntime-int8",
             hand_grad=False),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, teacher in onnxruntime int8, hand-summed weight "
                  "gradients on any CPU", teacher="teacher_s2", student="gmenet_s2", online=True, cl=True,
             ort="onnxruntime-int8", hand_grad=True),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, as before issue 26 (BN not folded, kernels not cut)",
             teacher="teacher_s2", student="gmenet_s2", online=True, cl=True, fuse=False, full_kernels=True,
             hand_grad=False),
        dict(name="gmenet_s2 without global branch", teacher="teacher_s2", student="gmenet_s2", online=True, cl=True,
             kwargs={"global_branch": False}),
        dict(name="gmenet_s2 with CBAM spatial attention", teacher="teacher_s2", student="gmenet_s2", online=True,
             cl=True, kwargs={"spatial": "standard"}),
        dict(name="gmenet_s2 alone (CE, no teacher)", student="gmenet_s2", online=True, cl=True),
        dict(name="teacher_s2, channels_last, bf16 autocast on the CPU (train.cpu_bf16)", teacher="teacher_s2",
             online=True, cl=True, bf16=True),
        dict(name="gmenet_s2 @24 + teacher_s2, channels_last, bf16 on the CPU", teacher="teacher_s2",
             student="gmenet_s2", online=True, cl=True, bf16=True),
        dict(name="plain_s2 alone (row 0)", student="plain_s2", online=True, cl=True),
    ]
    return base


def build(cfg: dict, store, batch_size: int, device):
    from gmenet_cli.data.loader import PairedBatches
    from gmenet_cli.losses import ASKDLoss, ClassificationLoss
    from gmenet_cli.models import create_model
    from gmenet_cli.models.registry import working_size
    from gmenet_cli.tasks import ClassifierTask, DistillTask

    torch.manual_seed(0)
    kw = {"in_chans": 1, "num_classes": len(store.classes)}
    loss = ClassificationLoss(0.0, soft=True)
    teacher = (create_model(cfg["teacher"], **kw, input_size=store.hr_size).to(device)
               if cfg.get("teacher") else None)
    if cfg.get("student"):
        model = create_model(cfg["student"], **kw, input_size=working_size(cfg["student"], store.hr_size),
                             **cfg.get("kwargs", {})).to(device)
        runtime = cfg.get("ort", "torch")  # where the frozen teacher runs (distill.teacher_runtime)
        calibration = None
        if runtime == "onnxruntime-int8":
            from gmenet_cli.training.ort_teacher import calibration_faces

            calibration = calibration_faces(store.split("train"))
        task = DistillTask(model, teacher, loss, ASKDLoss(1.0), 1.0, fuse_teacher=cfg.get("fuse", True),
                           teacher_runtime=runtime, teacher_calibration=calibration) \
            if teacher is not None else ClassifierTask(model, loss, "lowres")
        scales = store.scales
    else:
        model, task, scales = teacher, ClassifierTask(teacher, loss, "hr"), []
    if cfg["cl"]:
        task.to(memory_format=torch.channels_last)
    task.train()
    if cfg.get("compile"):  # as train.compile does: the trained model, after everything else
        task.model = torch.compile(task.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loader = PairedBatches(store.split("train"), batch_size, scales, seed=0, drop_last=True, with_hr=True,
                           online=AUG, stored_lowres=not cfg["online"], pin=device.type == "cuda")
    return task, opt, loader, model


def timed(task, opt, batches, runtime, cfg: dict) -> float:
    import gmenet_cli.models.blocks as blocks

    cut, hand = blocks.same_conv, blocks.HAND_WEIGHT_GRAD
    if cfg.get("full_kernels"):  # every convolution with its whole kernel, as before blocks.same_conv
        blocks.same_conv = lambda conv, x: torch.nn.Conv2d.forward(conv, x)
    blocks.HAND_WEIGHT_GRAD = cfg.get("hand_grad")  # None: as training chooses; False: oneDNN's; True: by hand
    try:
        return _timed(task, opt, batches, runtime, cfg.get("bf16", False))
    finally:
        blocks.same_conv, blocks.HAND_WEIGHT_GRAD = cut, hand


def _timed(task, opt, batches, runtime, bf16: bool) -> float:
    import dataclasses

    from gmenet_cli.runtime import to_device
    from gmenet_cli.training.loop import train_step

    if bf16:  # the CPU's native bf16 (AMX / AVX512-BF16), as train.cpu_bf16 turns on
        runtime = dataclasses.replace(runtime, amp=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    t = time.perf_counter()
    for batch in batches:
        train_step(task, to_device(batch, runtime.device), opt, sched, runtime, grad_clip=5.0)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def endless(loader):
    while True:
        yield from loader


def step_table(store, args, runtime) -> list:
    chosen = [c for c in configs(args.size) if re.search(args.match, c["name"])]
    if not chosen:
        raise SystemExit(f"--match {args.match!r} selects no configuration; names: "
                         + "; ".join(c["name"] for c in configs(args.size)))
    built = [(c, *build(c, store, args.batch_size, runtime.device)) for c in chosen]
    iters = [endless(loader) for _, _, _, loader, _ in built]
    for (c, task, opt, _, _), it in zip(built, iters):
        warm = 8 if c.get("compile") else 2  # compiling: one graph per LR face size and mix of sizes
        timed(task, opt, itertools.islice(it, warm), runtime, c)
    times = {c["name"]: [] for c, *_ in built}
    for _ in range(args.rounds):
        for (c, task, opt, _, _), it in zip(built, iters):
            batches = list(itertools.islice(it, args.steps))  # fetched first: the loader is timed on its own below
            times[c["name"]].append(
                timed(task, opt, batches, runtime, c)
                / (args.steps * args.batch_size)
            )
    for it in iters:  # stop the loaders' producer threads before the interpreter exits
        it.close()
    rows = []
    for c, *_, model in built:
        per_image = statistics.median(times[c["name"]])
        rows.append((c["name"], 1.0 / per_image, sum(p.numel() for p in model.parameters())))
    return rows


def loader_table(store, args, device) -> list:
    from gmenet_cli.data.augment import make_views
    from gmenet_cli.data.loader import PairedBatches
    from gmenet_cli.runtime import to_device

    split = store.split("train")
    for _ in PairedBatches(
        split, 1024, store.scales, with_hr=True
    ):  # page the whole store in once: no disk in the timings
        pass
    rows = []
    for name, online, scales, views in (
        ("teacher, online (HR + augmentation parameters)", True, [], False),
        ("student, online (HR + parameters + LR scale per face)", True, store.scales, False),
        ("student, online, warp and LR synthesis also on this CPU", True, store.scales, True),
        ("student, stored LR faces (+ parameters)", False, store.scales, False),
    ):
        loader = PairedBatches(
            split,
            args.batch_size,
            scales,
            seed=0,
            drop_last=True,
            with_hr=True,
            online=AUG,
            stored_lowres=not online,
            pin=device.type == "cuda",
        )
        n, t = 0, time.perf_counter()
        for batch in itertools.islice(loader, args.loader_batches):
            if views:
                make_views(to_device(batch, device), student=True)
            n += len(batch["target"])
        rows.append((name, n / (time.perf_counter() - t)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="prepared FERPlus store at x2,4,8 (default: prepare one in a temp folder)")
    ap.add_argument("--steps", type=int, default=6, help="steps per configuration per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--size", default="s")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--loader-only", action="store_true")
    ap.add_argument("--loader-batches", type=int, default=150)
    ap.add_argument("--match", default="", help="only the configurations whose name matches this regex")
    ap.add_argument("--no-loader", action="store_true", help="skip the loader table")
    args = ap.parse_args()
    from gmenet_cli.config import PrepareConfig
    from gmenet_cli.data.prepare import prepare
    from gmenet_cli.data.store import Store
    from gmenet_cli.runtime import setup

    runtime = setup(args.device, amp=True, channels_last=True, threads=args.threads)
    store_path = args.store
    if not store_path:
        require_ferplus()
        store_path = tempfile.mkdtemp() + "/ferplus"
        prepare("ferplus", FERPLUS, store_path, PrepareConfig(scales=[2, 4, 8]))
    store = Store(store_path)
    amp = "bf16 autocast" if runtime.amp else "fp32"
    print(header(f"training speed on {runtime.device} ({amp}), batch {args.batch_size}"))
    if not args.loader_only:
        rows = step_table(store, args, runtime)
        print(f"Steps: {args.rounds} interleaved rounds of {args.steps} steps per configuration, medians.\n")
        print("| configuration | images/s | ratio to the first row | parameters (trained model) |")
        print("|---|---|---|---|")
        for name, ips, params in rows:
            print(f"| {name} | {ips:,.0f} | {ips / rows[0][1]:.2f}x | {params:,} |")
        print()
    if args.no_loader:
        return
    print("| data path, no model | faces/s |")
    print("|---|---|")
    for name, fps in loader_table(store, args, runtime.device):
        print(f"| {name} | {fps:,.0f} |")


if __name__ == "__main__":
    main()
