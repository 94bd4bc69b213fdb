"""`gmenet export`: ONNX or TorchScript with a parity check against the eager model.

The exported graph includes the model's preprocessing (resize to the working size + normalisation), so it
takes (N, C, s, s) float faces in [0, 1] at the chosen LR size `s` and returns logits; the batch size is
dynamic. ONNX needs the `onnx` extra (onnx + onnxruntime) for the parity check.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from gmenet_cli import checkpoint
from gmenet_cli.errors import UsageError


@contextlib.contextmanager
def _quiet_fds():
    """Silence C++-level prints on stdout/stderr (the legacy exporter dumps whole graphs there)."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def default_input_size(ck: dict) -> int:
    spec = ck["input"]
    sizes = sorted(int(v) for v in spec.get("lr_sizes", {}).values())
    if spec.get("view") == "hr" or not sizes:
        return int(spec["hr_size"])
    return sizes[len(sizes) // 2]  # the middle scale (x4 for 2,4,8): the headline 12px face


def export(weights: str, fmt: str, out: str | None, input_size: int | None, atol: float = 1e-4) -> dict:
    if fmt not in ("onnx", "torchscript"):
        raise UsageError(f"--format must be onnx or torchscript, got '{fmt}'")
    ck = checkpoint.load(weights)
    model = checkpoint.build_model(ck, weights)
    size = input_size or default_input_size(ck)
    if not 1 <= size <= 1024:
        raise UsageError(f"--input-size must be 1..1024, got {size}")
    c = int(ck["input"]["channels"])
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    path = Path(out) if out else Path(weights).with_name(Path(weights).stem + f"_{size}px{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, c, size, size, generator=torch.Generator().manual_seed(0))
    sample = torch.rand(5, c, size, size, generator=torch.Generator().manual_seed(1))  # another batch size
    with torch.no_grad():
        reference = model(sample).numpy()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                raise UsageError("ONNX export needs the onnx extra: pip install 'gmenet-cli[onnx]'") from None
            with warnings.catch_warnings(), _quiet_fds():
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["faces"],
                                      output_names=["logits"], dynamic_axes={"faces": {0: "batch"}, "logits": {0: "batch"}},
                                      opset_version=17)
                except Exception as e:  # exporter errors are long graph dumps: keep the first line
                    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                    raise UsageError(f"ONNX export failed: {first}") from None
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = session.run(None, {"faces": sample.numpy()})[0]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(tmp))
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = torch.jit.load(str(tmp)).eval()(sample).numpy()
        diff = float(np.abs(got - reference).max())
        if not diff <= atol:
            raise UsageError(f"parity check failed: max |exported - eager| = {diff:.2e} > {atol:.0e}; nothing written")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "format": fmt, "input": [None, c, size, size], "classes": ck["classes"],
            "max_abs_diff": diff, "input_range": "float32 in [0, 1]", "output": "logits"}
