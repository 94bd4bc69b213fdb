"""Self-describing checkpoints: plain data that loads with `torch.load(..., weights_only=True)`.

A checkpoint holds everything `evaluate`, `predict` and `export` need to rebuild the model with no other
file: model name + kwargs, class names, input spec (channels, HR size, LR scales/sizes, normalisation),
the resolved config, versions and the prepared store's content hash. Training state (optimiser,
scheduler, RNG, epoch) rides along in `last.pt` for `--resume`. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from gmenet_cli import __version__
from gmenet_cli.errors import CheckpointError

FORMAT = "gmenet-checkpoint"
FORMAT_VERSION = 1


def plain(obj):
    """Recursively turn numpy scalars, Paths and version objects into the plain types weights_only accepts."""
    import numpy as np

    if isinstance(obj, dict):
        # keys keep their type: the optimizer's state is keyed by int parameter ids
        return {(k if type(k) in (int, str) else str(k)): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float)):  # subclasses such as TorchVersion
        return type(obj).__mro__[-2](obj)
    return str(obj)


def save(path: str | Path, payload: dict) -> None:
    """Atomically write `payload` (plus format tags) to `path`; a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = plain({"format": FORMAT, "format_version": FORMAT_VERSION, "gmenet_version": __version__,
                  "torch_version": str(torch.__version__), **payload})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load and validate a checkpoint; every failure is a one-line CheckpointError.

    A gmenet ONNX export is read as the checkpoint it was made from (its weights are the graph's
    initializers, the rest is in its metadata; see from_onnx), so the shipped models need no .pt twin.

    mmap=True maps the tensors instead of reading them: for looking at metadata (a run's `finished` flag)
    without reading a large model and its optimiser state."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}", exit_code=2)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (try {path}/weights/best.pt)", exit_code=2)
    if path.suffix.lower() == ".onnx":
        return from_onnx(path)
    _check_kind(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(f"{path} was refused by the safe loader (weights_only=True): {first[:160]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {first[:160]}") from None
    return _validated(path, data)


def _validated(path: Path, data) -> dict:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gmenet checkpoint (a plain state_dict or another tool's file?)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}; this gmenet ({__version__}) reads format "
                              f"{FORMAT_VERSION}")
    for key in ("model", "state_dict", "classes", "input"):
        if key not in data:
            raise CheckpointError(f"{path} is missing '{key}'; it was not written by gmenet distill-teacher/train")
    return data


class NoCheckpointError(CheckpointError):
    """An ONNX file without the checkpoint entry (another tool's model, or an export from an older gmenet)."""


ONNX_KEY = "gmenet_checkpoint"  # the ONNX metadata entry holding the checkpoint without its tensors
_TRAINING_STATE = ("state_dict", "train_state_dict", "optimizer", "scheduler", "scaler", "ema_state")


def onnx_entry(ckpt: dict, aliases: dict | None = None) -> str:
    """The checkpoint as one JSON string for an ONNX export's metadata: everything but the tensors (the
    graph holds the weights under their state_dict names, or under `aliases[name]` where the exporter kept
    one initializer for equal tensors) and the training state; the integer BatchNorm counters, which the
    graph has no use for, ride along by name."""
    import json

    data = {}
    for key, value in ckpt.items():
        if key in _TRAINING_STATE:
            continue
        try:
            data[key] = json.loads(json.dumps(plain(value)))
        except (TypeError, ValueError):  # tensors, bytes: not part of what rebuilds the model
            continue
    data["state_keys"] = list(ckpt["state_dict"])  # the graph's other initializers are ONNX constants
    data["aliases"] = dict(aliases or {})
    data["int_buffers"] = {k: int(v) for k, v in ckpt["state_dict"].items() if not v.is_floating_point()}
    return json.dumps(data)


def dequantize_int8(q, scale):
    """int8 values (numpy) x a float32 scale per output channel (dim 0) -> float32 numpy: the product
    DequantizeLinear computes, and what `export --int8-weights` checks the file against."""
    import numpy as np

    return q.astype(np.float32) * scale.reshape(-1, *[1] * (q.ndim - 1))


def from_onnx(path: str | Path) -> dict:
    """The checkpoint a gmenet ONNX export was made from: its metadata entry plus a state_dict taken from the
    graph's initializers (the export keeps BatchNorm as a node, so they are the checkpoint's own tensors, in
    float16 when it was exported with --half-weights; build_model checks that every one is there)."""
    import json

    path = Path(path)
    hint = "pass a best.pt from gmenet train or distill-teacher (gmenet predict also reads its .onnx export)"
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CheckpointError(f"{path}: reading an ONNX model as a checkpoint needs the onnx package "
                              "(pip install onnx)", exit_code=2) from None
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a loadable ONNX model: {first}", exit_code=2) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if ONNX_KEY not in meta:
        raise NoCheckpointError(f"{path} is not a gmenet checkpoint but an ONNX model without the checkpoint in "
                                "its metadata (from another tool, or an older gmenet: re-export it with gmenet "
                                f"export); {hint}", exit_code=2)
    try:
        data = json.loads(meta[ONNX_KEY])
        assert isinstance(data, dict)
    except (ValueError, AssertionError):
        raise CheckpointError(f"{path}: its checkpoint metadata is damaged (not a JSON object)") from None
    state, arrays = {}, {init.name: init for init in proto.graph.initializer}
    for init in proto.graph.initializer:
        if init.name.endswith(("__scale", "__zero")):
            continue  # read with their int8 tensor
        name = init.name.removesuffix("__fp16")  # export --half-weights renames what it stores as float16
        array = numpy_helper.to_array(init)
        if init.name.endswith("__int8"):  # export --int8-weights: values x scale per output channel
            name = init.name.removesuffix("__int8")
            if f"{name}__scale" not in arrays:
                raise CheckpointError(f"{path}: int8 tensor {name} without its scale")
            array = dequantize_int8(array, numpy_helper.to_array(arrays[f"{name}__scale"]))
        state[name] = torch.from_numpy(array.copy())
    state.update({k: torch.tensor(v) for k, v in data.pop("int_buffers", {}).items()})
    state.update({k: state[v] for k, v in data.pop("aliases", {}).items() if v in state})
    keys = data.pop("state_keys", None)
    data["state_dict"] = {k: state[k] for k in keys if k in state} if keys else state
    if keys and len(data["state_dict"]) != len(keys):
        missing = [k for k in keys if k not in state]
        raise CheckpointError(f"{path}: the graph lacks {len(missing)} of the model's tensors ({missing[0]}, ...)")
    return _validated(path, data)


def _check_kind(path: Path) -> None:
    """Refuse files that are not PyTorch checkpoints at all (a CSV, an image, an ONNX export) with one line
    that says what to pass instead, before the safe loader's own message, which names pickle internals."""
    with open(path, "rb") as f:
        head = f.read(4)
    hint = "pass a best.pt from gmenet train or distill-teacher (gmenet predict also reads its .onnx export)"
    if head == b"PK\x03\x04":  # torch.save's zip format, which TorchScript archives share
        try:
            with zipfile.ZipFile(path) as z:
                scripted = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return  # the loader names the damage
        if scripted:
            raise CheckpointError(f"{path} is a TorchScript export, which gmenet does not read back; {hint}",
                                  exit_code=2)
        return
    if head[:1] == b"\x80":  # a legacy pickle
        return
    if path.suffix.lower() == ".onnx":
        what = "an ONNX model"
    elif path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        what = None
    else:
        what = f"a {path.suffix or 'plain'} file"
    what = f"but {what}" if what else "(neither a PyTorch zip archive nor a pickle)"
    raise CheckpointError(f"{path} is not a gmenet checkpoint {what}; {hint}", exit_code=2)


def trained_sizes(ckpt: dict) -> list[int]:
    """The face sizes a checkpoint was trained on: its LR sizes (student) or its HR size (teacher)."""
    spec = ckpt["input"]
    sizes = sorted({int(v) for v in spec.get("lr_sizes", {}).values()})
    return [int(spec["hr_size"])] if spec.get("view") == "hr" or not sizes else sizes


def build_model(ckpt: dict, path: str | Path = "checkpoint"):
    """Rebuild the model a checkpoint describes and load its weights (eval mode, CPU)."""
    from gmenet_cli.errors import UsageError
    from gmenet_cli.models import create_model

    spec = ckpt["model"]
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except UsageError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit model '{spec['name']}': {str(e).splitlines()[0][:160]}"
        ) from None
    return model.eval()
