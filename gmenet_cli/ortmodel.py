"""Run a gmenet ONNX export through onnxruntime: no torch import, so `predict` starts in about a second.

An ONNX file written by `gmenet export` (or the shipped `weights/default.onnx`) carries the checkpoint's
description in its metadata (classes, channels, working size, trained face sizes). Two graph shapes:

- dynamic face size (the `gmenet export` default): the graph holds the model's own preprocessing and takes
  (N, C, s, s) faces in [0, 1] at any trained size s;
- fixed working size (`--input-size` = the HR size, how the shipped default is exported): the graph starts
  after the resize, and `upsample` below does it in numpy with PyTorch's bicubic formula. ONNX Runtime's
  cubic Resize kernel took about a fifth of the whole forward pass; two small matrix products take almost
  nothing (see BENCHMARKS.md, predict speed).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from gmenet_cli.errors import CheckpointError, UsageError

FORMAT = "gmenet-onnx"


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 taps around each sample (a = -0.75, as torch and OpenCV)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@lru_cache(maxsize=32)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix M with M @ v == torch's 1-D bicubic resize of v (align_corners=False).

    Source coordinate (i + 0.5) * n_in / n_out - 0.5, taps floor - 1 .. floor + 2 clamped to the border
    (edge replication), as in ATen's upsample_bicubic2d."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    base = np.floor(src)
    w = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), w[:, k])
    return m.astype(np.float32)


def upsample(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, s, s) float32 in [0, 1] -> (N, C, size, size): bicubic, clamped to [0, 1] like the torch model."""
    s = x.shape[-1]
    if s == size:
        return x
    m = bicubic_matrix(s, size)
    out = np.matmul(np.matmul(m, x), m.T)  # rows, then columns
    return np.clip(out, 0.0, 1.0, out=out)


def cpu_session(path: str | Path | bytes, threads: int = 0, spin: bool = True, float_weights: bool = False):
    """An onnxruntime CPU session for an ONNX file or serialised graph (the classifiers, the YuNet detector, the
    frozen teacher in training); ORT's own exception when it does not load, a UsageError when onnxruntime is
    not installed. spin=False: idle worker threads sleep instead of spinning (other work shares the cores).
    float_weights: a graph that computes in float32 throughout (gmenet's exports): the DequantizeLinear of
    int8-stored weights (export --int8-weights) is folded into float32 constants when the session is made,
    instead of being kept for ORT's int8 kernels and run at every call (about twice the time per face)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("running .onnx models needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    if float_weights:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if not spin:
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def read_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props (ModelProto field 14) without building a session or importing onnx: the
    protobuf's top-level fields are walked and the graph skipped. Start-up reads a shipped model's classes and
    face sizes this way and creates its session (about 0.3 s) only when a face of its size comes. Raises
    ValueError on a file that is not a well-formed ONNX protobuf."""
    buf = memoryview(Path(path).read_bytes())
    meta, i = {}, 0
    try:
        while i < len(buf):
            tag, i = _varint(buf, i)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, i = _varint(buf, i)
            elif wire in (1, 5):
                i += 8 if wire == 1 else 4
            elif wire == 2:
                n, i = _varint(buf, i)
                if field == 14:  # StringStringEntryProto: key = 1, value = 2
                    entry, j, kv = buf[i : i + n], 0, {}
                    while j < n:
                        t, j = _varint(entry, j)
                        m, j = _varint(entry, j)
                        kv[t >> 3] = bytes(entry[j : j + m]).decode("utf-8")
                        j += m
                    meta[kv.get(1, "")] = kv.get(2, "")
                i += n
            else:
                raise ValueError(f"protobuf wire type {wire}")
    except IndexError:
        raise ValueError("truncated protobuf") from None
    if i != len(buf):
        raise ValueError("truncated protobuf")
    return meta


class OnnxModel:
    """A gmenet ONNX file loaded into an onnxruntime CPU session, with its metadata checked."""

    def __init__(self, path: str | Path, threads: int = 0):
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"model not found: {path}" if not path.exists() else f"{path} is not a file", exit_code=2
            )
        try:
            self.session = cpu_session(path, threads, float_weights=True)
        except UsageError:
            raise
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidProtobuf, ...)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path} is not a loadable ONNX model: {first}", exit_code=2) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("gmenet_format") != FORMAT:
            raise CheckpointError(
                f"{path} is an ONNX model without gmenet metadata; write it with gmenet export --format onnx",
                exit_code=2,
            )
        try:
            self.classes = list(json.loads(meta["classes"]))
            self.channels = int(meta["channels"])
            self.hr_size = int(meta["hr_size"])
            # the size the model computes at: the HR size, or half of it for the "2" family's students
            self.working_size = int(meta.get("working_size", meta["hr_size"]))
            self.trained_sizes = [int(v) for v in json.loads(meta.get("trained_sizes", meta["sizes"]))]
            self.calibration = json.loads(meta.get("calibration", "{}"))  # exports before calibration: none
            self.model_name = meta.get("model", path.stem)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: damaged gmenet metadata ({type(e).__name__}: {e})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = inp.shape
        if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != self.channels):
            raise CheckpointError(f"{path}: graph input {dims} does not match its metadata ({self.channels} channels)")
        # A fixed spatial size means the graph expects faces of exactly that size. At the working size (how
        # the default ships) any trained LR face is upsampled to it here; a graph fixed at one LR size (gmenet
        # export --input-size 12) takes only that size, so crops are made at it.
        self.fixed_size = dims[3] if isinstance(dims[3], int) else None
        if self.fixed_size is not None and self.fixed_size != self.working_size:
            self.trained_sizes = [self.fixed_size]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, C, s, s) uint8 faces -> (N, K) float32 logits."""
        x = x.astype(np.float32) / np.float32(255.0)  # as the torch model: float, then divide
        if self.fixed_size is not None and x.shape[-1] != self.fixed_size:
            if x.shape[-1] > self.fixed_size:
                raise UsageError(f"face of {x.shape[-1]} px is larger than this graph's {self.fixed_size} px input")
            x = upsample(x, self.fixed_size)
        return self.session.run(None, {self.input_name: x})[0]
