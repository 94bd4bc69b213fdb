"""The frozen teacher's forward pass through onnxruntime, for distillation on the CPU (distill.teacher_runtime).

During `gmenet train` the teacher only ever runs forward, on the HR faces, with fixed weights: exactly what
an inference engine is for. onnxruntime's CPU kernels (MLAS, blocked NCHWc convolutions) run the folded
teacher_s2 about 1.6x faster than PyTorch's eager CPU path on these cores (BENCHMARKS.md, issue 26), with the
same outputs up to float rounding (about 4e-6). The graph is exported in memory from the BN-folded copy, once
per input type (uint8 faces from the stored path, float ones from on-the-fly augmentation), and never written
to disk.

ORT's worker threads are told not to spin between calls: the student's forward and backward run on the same
cores in between, and a spinning pool would take them.

`onnxruntime-int8` (opt-in) quantises the teacher's convolutions to int8 (onnxruntime's static QDQ
quantisation: int8 weights per output channel, uint8 activations whose ranges are read off a sample of the
training set's HR faces, given when the teacher is made: not the first batch it sees, which is the all-zero
probe of DistillTask.check_pairing), which runs its forward about 1.8x faster on CPUs with VNNI. Not exact:
its logits and maps differ from the float teacher's by about 2% (BENCHMARKS.md), so it is opt-in.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from gmenet_cli.errors import UsageError

RUNTIMES = ("auto", "auto-int8", "torch", "onnxruntime", "onnxruntime-int8")


def available() -> bool:
    """onnxruntime (a gmenet dependency) and onnx (the `onnx` extra: torch's exporter writes through it)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def resolve(choice: str, device: torch.device) -> str:
    """auto -> onnxruntime on the CPU when onnx is installed too, torch otherwise (CUDA keeps the teacher on the
    GPU); auto-int8 -> the same, with the teacher's convolutions in int8 where it runs in onnxruntime (a preset
    that names it still trains on CUDA, with the float teacher there)."""
    if choice in ("auto", "auto-int8"):
        if device.type == "cpu" and available():
            return "onnxruntime-int8" if choice == "auto-int8" else "onnxruntime"
        return "torch"
    if choice.startswith("onnxruntime"):
        if device.type != "cpu":
            raise UsageError(
                f"distill.teacher_runtime {choice} runs the teacher on the CPU, but training runs on "
                f"{device.type}: use auto or torch there"
            )
        if not available():
            raise UsageError(f"distill.teacher_runtime {choice} needs the onnx package: pip install onnx")
    return choice


class _Flat(nn.Module):
    """teacher(x, return_maps=True) as one flat tuple of tensors, the shape ONNX outputs take."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher

    def forward(self, x):
        logits, maps = self.teacher(x, return_maps=True)
        return (logits, *[t for pair in maps for t in pair])


class OrtTeacher:
    """Callable like the teacher (`teacher(x, return_maps=True)` -> logits, [(channel, spatial), ...]) for a
    frozen, BN-folded teacher in eval mode. Not an nn.Module: it has no parameters to move or train."""

    def __init__(self, fused: nn.Module, threads: int | None = None, int8: bool = False,
                 calibration: torch.Tensor | None = None):
        """int8: quantise the convolutions, calibrated on `calibration`, HR faces as stored (uint8, N C H W)."""
        if int8 and (calibration is None or calibration.dtype != torch.uint8 or len(calibration) == 0):
            raise ValueError("an int8 teacher needs calibration faces (uint8, N C H W)")
        self.module = _Flat(fused).eval()
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.int8, self.calibration = int8, calibration
        self.sessions: dict = {}  # (dtype, channels, h, w) -> onnxruntime session

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self  # frozen: always eval

    def _session(self, x: torch.Tensor):
        key = (x.dtype, *x.shape[1:])
        if key not in self.sessions:
            from gmenet_cli.ortmodel import cpu_session

            buf = io.BytesIO()
            example = x[:1].detach().cpu().contiguous()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(
                        self.module, (example,), buf, dynamo=False, input_names=["hr"],
                        dynamic_axes={"hr": {0: "batch"}}, opset_version=17,
                    )
                except Exception as e:  # exporter errors are long graph dumps: keep the first line
                    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                    raise UsageError(f"could not export the teacher for onnxruntime ({first}); "
                                     "run with --set distill.teacher_runtime=torch") from None
            self.module.eval()  # export restores the wrapper's mode; the teacher stays in eval regardless
            graph = quantized(buf.getvalue(), self._calibration_like(x)) if self.int8 else buf.getvalue()
            self.sessions[key] = cpu_session(graph, self.threads, spin=False)
        return self.sessions[key]

    def _calibration_like(self, x: torch.Tensor):
        """The calibration faces as this input type arrives: uint8 as stored, or float in [0, 1]."""
        faces = self.calibration.cpu()
        return (faces if x.dtype == torch.uint8 else faces.to(x.dtype) / 255).contiguous().numpy()

    def __call__(self, x: torch.Tensor, return_maps: bool = False):
        session = self._session(x)
        outs = session.run(None, {"hr": x.detach().cpu().contiguous().numpy()})
        outs = [torch.from_numpy(o).to(x.device) for o in outs]
        logits, rest = outs[0], outs[1:]
        maps = [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
        return (logits, maps) if return_maps else logits


def calibration_faces(split, count: int = 512, seed: int = 0) -> torch.Tensor:
    """A fixed sample of a split's HR faces (uint8), for the int8 teacher's activation ranges."""
    import numpy as np

    rows = np.sort(np.random.default_rng(seed).choice(split.count, min(count, split.count), replace=False))
    return torch.from_numpy(np.ascontiguousarray(split.hr[rows]))


def saturates() -> bool:
    """Whether onnxruntime's uint8 x int8 convolutions may saturate here: x86 CPUs without VNNI multiply-add
    pairs of products into int16 (AVX2 / AVX-512 vpmaddubsw), which overflows for large weights; VNNI and ARM
    accumulate in int32. Where the flags cannot be read, an x86 CPU is taken to lack VNNI."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def quantized(graph: bytes, calibration, chunk: int = 64) -> bytes:
    """The float graph with its convolutions quantised to int8 (static QDQ: weights per output channel, uint8
    activations calibrated by min/max on `calibration`, a batch of the graph's input "hr"). On CPUs where the
    int8 products can saturate (`saturates`), the weights use 7 bits (onnxruntime's reduce_range), its
    documented remedy."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = [calibration[i:i + chunk] for i in range(0, len(calibration), chunk)]

        def get_next(self):
            return {"hr": self.batches.pop(0)} if self.batches else None

    with tempfile.TemporaryDirectory(prefix="gmenet-int8-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(onnx.load_from_string(graph), pre)
        quantize_static(pre, out, Batches(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=saturates())
        return out.read_bytes()
