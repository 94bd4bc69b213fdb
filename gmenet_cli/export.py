"""`gmenet export`: ONNX or TorchScript with a parity check against the eager model.

The exported graph includes the model's preprocessing (resize to the working size + normalisation), so it
takes (N, C, s, s) float faces in [0, 1] and returns logits. The batch size is dynamic; so is the face size
`s` for a student (any size up to its working size; parity is checked at every trained LR size), unless
`--input-size` fixes one. An ONNX file also carries the checkpoint's description (classes, channels, sizes)
in its metadata, so `gmenet predict --weights model.onnx` runs it through onnxruntime without torch.
ONNX export needs the `onnx` extra.
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
from gmenet_cli.checkpoint import trained_sizes
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


def onnx_metadata(ckpt: dict, sizes: list[int], working_size: int, aliases: dict | None = None) -> dict[str, str]:
    """What predict needs to run an ONNX file alone (stored as ONNX metadata_props, all strings)."""
    import json

    from gmenet_cli import __version__

    spec = ckpt["input"]
    return {"gmenet_format": "gmenet-onnx", "gmenet_format_version": "1", "gmenet_version": __version__,
            "model": ckpt["model"]["name"], "classes": json.dumps(list(ckpt["classes"])),
            "channels": str(int(spec["channels"])), "hr_size": str(int(spec["hr_size"])),
            "working_size": str(int(working_size)),
            "view": str(spec.get("view", "lr")), "sizes": json.dumps(sizes),
            "trained_sizes": json.dumps(trained_sizes(ckpt)), "input_range": "float32 in [0, 1]",
            # temperatures per face size and predicted class (calibrate.py); predict divides the logits by them
            "calibration": json.dumps(ckpt.get("calibration") or {}),
            # the checkpoint itself less its tensors: the .onnx file alone rebuilds the PyTorch model
            # (checkpoint.from_onnx), so a model need not ship twice
            checkpoint.ONNX_KEY: checkpoint.onnx_entry(ckpt, aliases)}


def export(weights: str, fmt: str, out: str | None, input_size: int | None, atol: float = 1e-4,
           half_weights: bool = False, int8_weights: bool = False) -> dict:
    """half_weights: store the ONNX file's float weights as float16 (half the file), cast to float32 once when
    onnxruntime loads it, so faces are still computed in float32. The eager model the parity check compares
    with gets its weights rounded the same way (a float16 checkpoint, like the ones the shipped .onnx files
    carry, has them so already), so the parity check holds to the same tolerance.

    int8_weights: the convolution and linear weights as int8, one scale per output channel (symmetric, the
    largest weight of the channel at 127), the other tensors (BatchNorm, biases) as float16: about a quarter
    of the float32 file. Each is dequantized to float32 once when onnxruntime loads the file (a
    DequantizeLinear node on a constant, folded), so faces are still computed in float32; the eager model the
    parity check compares with gets the same rounded weights."""
    if fmt not in ("onnx", "torchscript"):
        raise UsageError(f"--format must be onnx or torchscript, got '{fmt}'")
    if half_weights and int8_weights:
        raise UsageError("--half-weights and --int8-weights are two sizes of the same file: pass one")
    for flag, on in (("--half-weights", half_weights), ("--int8-weights", int8_weights)):
        if on and fmt != "onnx":
            raise UsageError(f"{flag} is for --format onnx")
    ckpt = checkpoint.load(weights)
    model = checkpoint.build_model(ckpt, weights)
    quantized = {}
    if half_weights or int8_weights:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.copy_(t.half().float())
    if int8_weights:
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if quantizable(t):
                    q, scale = quantize_per_channel(t)
                    t.copy_(dequantize(q, scale))
                    quantized[name] = (q, scale)
    if input_size is not None and not 1 <= input_size <= 1024:
        raise UsageError(f"--input-size must be 1..1024, got {input_size}")
    # One graph for every trained size: the model's own preprocessing resizes any face up to its working size.
    sizes = [input_size] if input_size else trained_sizes(ckpt)
    dynamic_size = (
        input_size is None and max(sizes) <= max(int(ckpt["input"]["hr_size"]), model.input_size) and len(sizes) > 1
    )
    c = int(ckpt["input"]["channels"])
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    path = Path(out) if out else Path(weights).with_name(Path(weights).stem + suffix)  # best.pt -> best.onnx
    if path.resolve() == Path(weights).resolve():
        raise UsageError(f"exporting {weights} would write over it; pass --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, c, sizes[0], sizes[0], generator=torch.Generator().manual_seed(0))
    # Parity inputs: another batch size, every size the graph is meant to take.
    samples = [torch.rand(5, c, s, s, generator=torch.Generator().manual_seed(1 + s)) for s in sizes]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "onnx":
            run = _write_onnx(model, ckpt, tmp, example, sizes, dynamic_size, half_weights, quantized)
            if input_size == model.input_size:
                samples += _working_size_samples(ckpt, c, model.input_size)
        else:
            run = _write_torchscript(model, tmp, example)
        diff = _parity(model, run, samples, input_size == model.input_size)
        if not diff <= atol:
            raise UsageError(f"parity check failed: max |exported - eager| = {diff:.2e} > {atol:.0e}; nothing written")
        replaced = _describe(path) if path.exists() else None
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    side = "s" if dynamic_size else sizes[0]
    return {
        "path": str(path),
        "replaced": replaced,  # what the file held before, when export wrote over it
        "format": fmt,
        "input": [None, c, side, side],
        "sizes": sizes,
        "weights_dtype": "int8 per channel + float16" if int8_weights else "float16" if half_weights else "float32",
        "bytes": path.stat().st_size,
        "checked_sizes": sorted({x.shape[-1] for x in samples}),
        "classes": ckpt["classes"],
        "max_abs_diff": diff,
        "input_range": "float32 in [0, 1]",
        "output": "logits",
    }


def _describe(path: Path) -> str:
    """A few words on an existing export, for the line that says it was replaced."""
    size = f"{path.stat().st_size / 1e6:.1f} MB"
    if path.suffix.lower() != ".onnx":
        return size
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        types = {t.data_type for t in proto.graph.initializer}
        kind = ("int8" if onnx.TensorProto.INT8 in types else "float16" if onnx.TensorProto.FLOAT16 in types
                else "float32")
        return f"{size}, {kind} weights"
    except Exception:  # noqa: BLE001 - only a description; the export itself succeeded
        return size


def _write_onnx(model, ckpt: dict, tmp: Path, example, sizes: list[int], dynamic_size: bool, half_weights: bool,
                quantized: dict | None = None):
    """Export, add gmenet's metadata, open in onnxruntime; -> a function running the graph on a tensor."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise UsageError("ONNX export needs the onnx package: pip install onnx") from None
    axes = {0: "batch", 2: "size", 3: "size"} if dynamic_size else {0: "batch"}
    with warnings.catch_warnings(), _quiet_fds():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=["faces"],
                output_names=["logits"],
                dynamic_axes={"faces": axes, "logits": {0: "batch"}},
                opset_version=17,
                # PRESERVE: BatchNorm stays a node (onnxruntime fuses it when it loads the
                # graph) instead of being folded into the conv weights here, so the file's
                # weights are the checkpoint's own (what --half-weights stores exactly)
                training=torch.onnx.TrainingMode.PRESERVE,
            )
        except Exception as e:  # exporter errors are long graph dumps: keep the first line
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UsageError(f"ONNX export failed: {first}") from None
    proto = onnx.load(str(tmp))
    aliases = _aliases(proto, model)
    for key, value in onnx_metadata(ckpt, sizes, model.input_size, aliases).items():
        proto.metadata_props.add(key=key, value=value)
    if quantized:
        _int8_initializers(proto, quantized, aliases)
    if half_weights or quantized:
        _half_initializers(proto)
    onnx.save(proto, str(tmp))
    back = checkpoint.from_onnx(tmp)["state_dict"]  # the file rebuilds the model it was made from
    for key, value in model.state_dict().items():
        if not torch.equal(back[key].to(value.dtype), value):
            raise UsageError(f"ONNX export: the file does not hold {key} exactly; nothing written")
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"faces": x.numpy()})[0]


def _aliases(proto, model) -> dict[str, str]:
    """State-dict tensors the exporter stored under another tensor's name (it keeps one initializer for
    tensors of equal value, such as two one-channel BatchNorm weights) -> that name."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    aliases = {}
    for key, value in model.state_dict().items():
        if key in inits or not value.is_floating_point():
            continue
        arr = value.detach().cpu().numpy()
        for name, init in inits.items():
            if tuple(init.dims) == arr.shape and np.array_equal(numpy_helper.to_array(init), arr):
                aliases[key] = name
                break
    return aliases


def quantizable(t: torch.Tensor) -> bool:
    """A convolution or linear weight whose every output sums at least 64 weights: int8 with a scale per output
    channel, where the rounding errors average out. Depthwise kernels (49 or 9 weights per output), BatchNorm
    and bias vectors stay float16: about 2% of a gmenet_s2's weights, and on FERPlus Valid at 6 px they are
    where int8 changed the most labels (18 of 3,555 against 11 without them)."""
    return t.is_floating_point() and t.dim() >= 2 and t[0].numel() >= 64


def quantize_per_channel(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 along dim 0: -> (int8 values, float32 scale per output channel)."""
    w = t.detach().float().cpu()
    scale = w.abs().amax(dim=tuple(range(1, w.dim()))) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel stays zero
    q = torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp(-127, 127)
    return q.to(torch.int8).numpy(), scale.numpy().astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """int8 values x scale per output channel -> float32, the product DequantizeLinear computes."""
    return torch.from_numpy(checkpoint.dequantize_int8(q, scale))


def _int8_initializers(proto, quantized: dict, aliases: dict) -> None:
    """The quantized weights' initializers -> int8 ones plus a DequantizeLinear (per output channel) under the
    old name, where the initializer holds exactly the dequantized values (a constant the exporter folded
    from weights stays float)."""
    from onnx import TensorProto, helper, numpy_helper

    by_init = {aliases.get(k, k): v for k, v in quantized.items()}
    nodes = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name not in by_init:
            continue
        q, scale = by_init[init.name]
        if not np.array_equal(numpy_helper.to_array(init), dequantize(q, scale).numpy()):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(q, name=f"{name}__int8"))
        proto.graph.initializer.append(numpy_helper.from_array(scale, name=f"{name}__scale"))
        proto.graph.initializer.append(numpy_helper.from_array(np.zeros_like(q, shape=scale.shape),
                                                               name=f"{name}__zero"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}__int8", f"{name}__scale", f"{name}__zero"],
                                      [name], axis=0))
    _prepend(proto, nodes)


def _half_initializers(proto) -> None:
    """float32 initializers -> float16 ones, each followed by a Cast back to float32 under its old name, so
    every node still sees float32 (onnxruntime folds the casts once, when it loads the file). Only values
    float16 holds exactly are converted (the rounded weights; a constant the exporter folded from them stays
    float32), so the graph computes exactly what the rounded eager model does."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:
            continue
        original = numpy_helper.to_array(init)
        array = original.astype(np.float16)
        if not np.array_equal(array.astype(np.float32), original):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(array, name=f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT))
    _prepend(proto, casts)


def _prepend(proto, nodes: list) -> None:
    """Put nodes (the weights' Casts and DequantizeLinears) before the graph's own, which read their outputs."""
    rest = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes + rest)


def _write_torchscript(model, tmp: Path, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(tmp))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(tmp)).eval()

    def run(x):
        with torch.no_grad():
            return loaded(x).numpy()

    return run


def _working_size_samples(ckpt: dict, c: int, working: int) -> list:
    """A graph fixed at the working size (how the default model ships): predict resizes smaller faces in
    numpy first, so that path is checked too, at every trained size below the working size."""
    return [
        torch.rand(5, c, s, s, generator=torch.Generator().manual_seed(100 + s))
        for s in trained_sizes(ckpt)
        if s < working
    ]


def _parity(model, run, samples: list, fixed_at_working_size: bool) -> float:
    """Max |exported - eager| over the samples; at a fixed working size smaller faces take predict's
    numpy upsampling before the graph, as they will in use."""
    from gmenet_cli.ortmodel import upsample

    diff = 0.0
    for x in samples:
        with torch.no_grad():
            reference = model(x).numpy()
        size = int(model.input_size)
        if fixed_at_working_size and x.shape[-1] < size:
            got = run(torch.from_numpy(upsample(x.numpy(), size)))
        else:
            got = run(x)
        diff = max(diff, float(np.abs(got - reference).max()))
    return diff
