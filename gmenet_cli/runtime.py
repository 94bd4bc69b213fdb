"""Device, precision, seeding and distributed state: decided here once, passed down everywhere else.

This is the only module that touches torch.backends or torch.distributed's process group.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from gmenet_cli.errors import UsageError


@dataclass
class Runtime:
    device: torch.device
    amp: bool  # mixed precision: autocast to amp_dtype (CUDA; the CPU with train.cpu_bf16 where it has native bf16)
    channels_last: bool
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype = torch.bfloat16  # bf16 where the device computes it natively, else float16 + GradScaler

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        if self.amp and self.device.type in ("cuda", "cpu"):
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def grad_scaler(self):
        """float16 autocast needs its losses scaled (its range underflows small gradients); bf16 does not."""
        if self.amp and self.amp_dtype == torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None


def cuda_amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that compute it natively (compute capability 8.0 and up: A100, H100, RTX 30xx and later);
    float16 with a GradScaler on older ones (T4, V100), where torch would emulate bf16 slowly. As timm and
    nanoGPT choose."""
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one rank's epoch (dropout): distinct per rank, set afresh at every epoch on the CPU
    and every CUDA device, so a resumed run (any rank, any device) replays the interrupted one without
    saving generator states."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def select_device(spec: str | None) -> torch.device:
    from gmenet_cli.config import parse_device

    spec = parse_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
    dev = torch.device(spec)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX tiles or AVX512-BF16, Intel since Cooper Lake):
    only then does bf16 autocast on the CPU pay; elsewhere it is emulated and slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(p() for p in probes if p is not None)


def setup(device: str | None = "auto", amp: bool = True, channels_last: bool = True, threads: int = 0,
          distributed: bool = False, cpu_bf16: bool = False) -> Runtime:
    """Pick the device, initialise torch.distributed under torchrun, set CPU threads."""
    if threads > 0:
        torch.set_num_threads(threads)
    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed else 1
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    dev = select_device(device)
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    # channels_last helps on the CPU too (BENCHMARKS.md, training speed).
    use_amp = amp and (dev.type == "cuda" or (dev.type == "cpu" and cpu_bf16 and cpu_has_bf16()))
    dtype = cuda_amp_dtype(dev) if dev.type == "cuda" else torch.bfloat16
    return Runtime(dev, use_amp, channels_last, rank, world, local_rank, dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def to_device(batch, device: torch.device):
    """Every tensor of a batch (nested dicts, tuples and lists included) on `device`: the one place a batch
    moves. Copies are non-blocking, which overlaps them with compute when the loader pinned the batch."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch  # numpy row indices and other host-side bookkeeping stay where they are


def all_reduce_sum(runtime: Runtime, values: list[float]) -> list[float]:
    """Sum a few scalars across ranks (metrics); a no-op on one process."""
    if not runtime.distributed:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return t.tolist()


def shutdown(runtime: Runtime) -> None:
    """End a torchrun job: every rank waits for the others, then the process group goes.

    The barrier matters on the CPU (gloo): a rank with nothing left to do after its last all-reduce used to
    reach interpreter exit while a gloo worker thread was still releasing that all-reduce's tensors; the
    thread then took the GIL of a finalizing interpreter and the rank died with "terminate called without
    an active exception" (SIGABRT; about 1 run in 10 on 2 cores). The barrier holds it until rank 0 is done
    writing, long after that release."""
    if runtime.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()
