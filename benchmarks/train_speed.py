"""Training speed and data-pipeline overhead.

For the teacher (HR) and the distilling student (LR x2/x4/x8 + frozen teacher), time optimisation steps
fed by the real loader (memory-mapped store, paired augmentation, background thread) and steps fed by a
batch already in memory, interleaved in rounds (loader, memory, loader, ...) so that machine noise hits
both alike; medians over rounds. Loader overhead = 1 - in-memory time / loader time. Also reported: the
loader alone (batches assembled per second with no model), i.e. how much headroom the pipeline has.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import torch

from _common import FERPLUS, header, require_ferplus


def timed(task, opt, batches, device, autocast) -> float:
    from gmenet_cli.runtime import to_device

    t = time.perf_counter()
    for batch in batches:
        batch = to_device(batch, device)
        with autocast():
            loss = task(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", help="prepared FERPlus store (default: prepare one in a temp folder)")
    ap.add_argument("--steps", type=int, default=40, help="steps per feeding mode, split into --rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--size", default="s", help="model size letter: t, s or m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    from gmenet_cli.config import PrepareConfig
    from gmenet_cli.data.loader import PairedBatches
    from gmenet_cli.data.prepare import prepare
    from gmenet_cli.data.store import Store
    from gmenet_cli.losses import ASKDLoss, ClassificationLoss
    from gmenet_cli.tasks import ClassifierTask, DistillTask
    from gmenet_cli.models import create_model
    from gmenet_cli.runtime import setup

    runtime = setup(args.device, amp=True, channels_last=True, threads=args.threads)
    store_path = args.store
    if not store_path:
        require_ferplus()
        store_path = tempfile.mkdtemp() + "/ferplus"
        prepare("ferplus", FERPLUS, store_path, PrepareConfig(scales=[2, 4, 8]))
    store = Store(store_path)
    split = store.split("train")
    kw = {"in_chans": 1, "num_classes": len(store.classes), "input_size": store.hr_size}
    rows = []
    for kind in ("teacher", "student"):
        torch.manual_seed(0)
        teacher = create_model(f"teacher_{args.size}", **kw).to(runtime.device)
        if kind == "teacher":
            model, task = teacher, ClassifierTask(teacher, ClassificationLoss(), "hr")
            scales = []
        else:
            model = create_model(f"gmenet_{args.size}", **kw).to(runtime.device)
            task = DistillTask(model, teacher, ClassificationLoss(), ASKDLoss())
            scales = store.scales
        if runtime.channels_last:
            task.to(memory_format=torch.channels_last)
        task.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = PairedBatches(split, args.batch_size, scales, shift=1, seed=0, drop_last=True,
                               with_hr=True)
        it = iter(loader)
        warm = [next(it) for _ in range(2)]
        timed(task, opt, warm, runtime.device, runtime.autocast)
        fixed = warm[0]
        per = max(1, args.steps // args.rounds)
        loader_t, memory_t = [], []
        for _ in range(args.rounds):
            loader_t.append(timed(task, opt, itertools.islice(it, per), runtime.device, runtime.autocast))
            memory_t.append(timed(task, opt, (fixed for _ in range(per)), runtime.device, runtime.autocast))
        t_loader, t_memory = statistics.median(loader_t), statistics.median(memory_t)
        n = per * args.batch_size
        t = time.perf_counter()
        produced = sum(1 for _ in itertools.islice(iter(loader), 40))
        load_only = produced * args.batch_size / (time.perf_counter() - t)
        rows.append((f"{kind} ({model.__class__.__name__}, {args.size})", n / t_loader, n / t_memory,
                     1 - t_memory / t_loader, load_only))
    amp = "bf16 autocast, channels_last" if runtime.amp else "fp32"
    print(header(f"training speed on {runtime.device} ({amp}), batch {args.batch_size}, {args.steps} steps x 2 modes"))
    print("| model | images/s with the real loader | images/s from memory | loader overhead | loader alone (images/s) |")
    print("|---|---|---|---|---|")
    for name, a, b, o, lo in rows:
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {o * 100:.1f}% | {lo:,.0f} |")


if __name__ == "__main__":
    main()
