"""predict speed, side by side for the two backends of the shipped model:

- onnxruntime: `gmenet predict photo.jpg` with no --weights (weights/default.onnx; no torch import);
- torch: the same weights as a .pt checkpoint (rebuilt from the checkpoint weights/default.onnx carries,
  written to a temporary default.pt and passed as `--weights`).

Measures process start-up to first result for one image (a fresh `gmenet predict` process; best of
--runs, rounds interleaved), end-to-end images/s on astronaut.png (decode + the default YuNet detection +
crop + classify), and batched classification faces/s on 12 px faces, with flip TTA (the default: each
face and its mirror) and without (--no-tta). Also the bare `python -c pass` and `python -c "import torch"`
times, which bound what any torch-based start-up can reach.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ASTRONAUT, REPO, header

WEIGHTS = REPO / "gmenet_cli" / "weights"
_PT: list[Path] = []


def default_pt() -> Path:
    """The shipped default as a .pt checkpoint (the torch backend's file), written once per run."""
    if not _PT:
        import tempfile

        from gmenet_cli import checkpoint

        path = Path(tempfile.mkdtemp()) / "default.pt"
        ckpt = checkpoint.load(WEIGHTS / "default.onnx")
        checkpoint.save(path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
        _PT.append(path)
    return _PT[0]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t


def predict_cmd(backend: str) -> list[str]:
    cmd = [sys.executable, "-m", "gmenet_cli", "predict", str(ASTRONAUT), "--json"]
    return cmd + (["--weights", str(default_pt())] if backend == "torch" else [])


def classifier(backend: str, threads: int):
    from gmenet_cli.predict import OnnxClassifier, TorchClassifier

    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        return TorchClassifier(str(default_pt()), torch.device("cpu"))
    return OnnxClassifier(str(WEIGHTS / "default.onnx"), threads)


def end_to_end(clf, n: int) -> float:
    from gmenet_cli.predict import make_detector, run

    files = [str(ASTRONAUT)] * n
    det = make_detector("yunet", None)
    list(run(files[:2], clf, det, 0.1, 1, 64))  # warm-up
    t = time.perf_counter()
    out = list(run(files, clf, det, 0.1, 1, 64))
    assert len(out) == n
    return n / (time.perf_counter() - t)


def classify_only(clf, batch: int, seconds: float) -> float:
    size = clf.input_size(12)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (clf.channels, size, size), dtype=np.uint8) for _ in range(batch)]
    clf.classify(crops)
    done, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        clf.classify(crops)
        done += batch
    return done / (time.perf_counter() - t)


def graphs(threads: int, seconds: float) -> None:
    """Why the shipped graph is fixed at the working size: the dynamic-size export (resize inside, ORT's cubic Resize)
    against the fixed graph fed by numpy's upsampling, side by side, plus the op-time profile of the first."""
    import collections
    import json
    import tempfile

    import onnxruntime as ort

    from gmenet_cli.export import export
    from gmenet_cli.predict import OnnxClassifier

    dyn = Path(tempfile.mkdtemp()) / "dynamic.onnx"
    export(str(default_pt()), "onnx", str(dyn), None)
    clfs = {
        "dynamic-size export (Resize in the graph)": OnnxClassifier(str(dyn), threads),
        "shipped default.onnx (graph at the working size + numpy upsampling)": OnnxClassifier(
            str(WEIGHTS / "default.onnx"), threads
        ),
    }
    fps = {k: [] for k in clfs}
    for _ in range(3):
        for k, clf in clfs.items():
            fps[k].append(classify_only(clf, 256, seconds))
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = threads, True
    so.profile_file_prefix = str(dyn.with_suffix(""))
    sess = ort.InferenceSession(str(dyn), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((256, 1, 12, 12)).astype(np.float32)
    for _ in range(10):
        sess.run(None, {"faces": x})
    ops = collections.Counter()
    for e in json.loads(Path(sess.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ops[e["args"]["op_name"]] += e["dur"]
    total = sum(ops.values())
    print("\n| graph (12 px faces, batch 256) | faces/s (median of 3) |\n|---|---|")
    for k in clfs:
        print(f"| {k} | {statistics.median(fps[k]):,.0f} |")
    print(
        "\nop-time share in the dynamic-size graph: "
        + ", ".join(f"{op} {t / total * 100:.1f}%" for op, t in ops.most_common(4))
        + "."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="start-up rounds (interleaved; best and median kept)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per classification measurement")
    ap.add_argument("--rounds", type=int, default=3, help="classification rounds per backend (interleaved; median)")
    ap.add_argument(
        "--graphs", action="store_true", help="also compare the dynamic-size ONNX export (needs the onnx extra)"
    )
    args = ap.parse_args()
    backends = ("onnxruntime", "torch")
    py = [sys.executable, "-c"]
    start = {b: [] for b in (*backends, "python", "import torch")}
    for _ in range(args.runs):
        start["python"].append(timed(py + ["pass"]))
        start["import torch"].append(timed(py + ["import torch"]))
        for b in backends:
            start[b].append(timed(predict_cmd(b)))
    clfs = {b: classifier(b, args.threads) for b in backends}
    e2e = {b: end_to_end(clfs[b], 30) for b in backends}
    fps = {(b, batch, tta): [] for b in backends for batch in (64, 256) for tta in (True, False)}
    for _ in range(args.rounds):
        for batch in (64, 256):
            for tta in (True, False):
                for b in backends:
                    clfs[b].tta = tta
                    fps[b, batch, tta].append(classify_only(clfs[b], batch, args.seconds))
    print(header(f"predict speed, shipped model ({args.threads} threads)"))
    print(
        f"Baselines (fresh process, best / median of {args.runs}): `python -c pass` "
        f"{min(start['python']):.2f} / {statistics.median(start['python']):.2f} s; `python -c 'import torch'` "
        f"{min(start['import torch']):.2f} / {statistics.median(start['import torch']):.2f} s.\n"
    )
    print(
        "| backend | start-up to first result, best / median (s) | end to end on astronaut.png (images/s) "
        "| classification with TTA, batch 64 / 256 (faces/s) | without TTA, batch 64 / 256 (faces/s) |"
    )
    print("|---|---|---|---|---|")
    for b in backends:
        name = "onnxruntime (default.onnx, the default)" if b == "onnxruntime" else "torch (default.pt)"
        med = {k: statistics.median(v) for k, v in fps.items()}
        print(
            f"| {name} | {min(start[b]):.2f} / {statistics.median(start[b]):.2f} | {e2e[b]:.1f} "
            f"| {med[b, 64, True]:,.0f} / {med[b, 256, True]:,.0f} | {med[b, 64, False]:,.0f} / "
            f"{med[b, 256, False]:,.0f} |"
        )
    o, t = "onnxruntime", "torch"
    print(
        f"\nRatios onnxruntime / torch: start-up {statistics.median(start[o]) / statistics.median(start[t]):.2f}x "
        "(median), classification "
        f"{statistics.median(fps[o, 256, True]) / statistics.median(fps[t, 256, True]):.2f}x "
        f"(batch 256, TTA), end to end {e2e[o] / e2e[t]:.2f}x."
    )
    if args.graphs:
        graphs(args.threads, args.seconds)


if __name__ == "__main__":
    main()
