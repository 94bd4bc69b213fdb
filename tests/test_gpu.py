"""CUDA end to end (marked gpu: deselected by default; `python -m pytest -m gpu` where a GPU is present, as
benchmarks/gpu_check.sh does), and torch.compile on the CPU with a backend that needs no compiler."""

from __future__ import annotations

import json

import pytest
import torch

from gmenet_cli import checkpoint

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.slow  # ~20 s on 2 cores: inductor compiles the models
def test_training_through_torch_compile(tiny_store, cli, workdir):
    """The compiled path trains, validates and saves plain weights (no `_orig_mod.` prefixes)."""
    res = cli("train", "--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "1", "-q",
              "--set", "train.compile=true", "--set", "train.compile_backend=aot_eager", "--name", "c")
    assert res.exit_code == 0, res.output
    ckpt = checkpoint.load(workdir / "runs/train/c/weights/best.pt")
    assert not any(k.startswith("_orig_mod") for k in ckpt["state_dict"])
    assert checkpoint.build_model(ckpt)(torch.rand(2, 1, 12, 12)).shape == (2, 8)


@pytest.mark.gpu
@needs_cuda
def test_cuda_training_and_evaluation_match_the_cpu(tiny_store, cli, workdir):
    for cmd, name in (("distill-teacher", "t"), ("train", "s")):
        extra = ["--teacher", workdir / "runs/distill-teacher/t/weights/best.pt"] if cmd == "train" else []
        res = cli(cmd, "--data", tiny_store, "--preset", "tiny", "--epochs", "2", "--device", "cuda", "--name", name,
                  "-q", *extra)
        assert res.exit_code == 0, res.output
    best = workdir / "runs/train/s/weights/best.pt"
    reports = {}
    for dev in ("cuda", "cpu"):
        res = cli("evaluate", "--weights", best, "--device", dev, "--json", "--out", workdir / dev)
        assert res.exit_code == 0, res.output
        reports[dev] = json.loads(res.stdout)["models"][0]["results"]
    for a, b in zip(reports["cuda"], reports["cpu"]):
        assert abs(a["accuracy"] - b["accuracy"]) <= 0.001 + 1 / a["count"]


@pytest.mark.gpu
@needs_cuda
def test_shipped_models_on_cuda_match_onnxruntime(cli, workdir):
    """--device cuda runs every shipped model in PyTorch, rebuilt from the .onnx files (no .pt ships): the
    same labels and probabilities as onnxruntime on the CPU, for a face of each routed size."""
    import cv2
    from conftest import ASTRONAUT

    face = cv2.imread(str(ASTRONAUT))[40:200, 150:310]
    files = []
    for px in (8, 14, 30, 110):
        files.append(workdir / f"f{px}.png")
        cv2.imwrite(str(files[-1]), cv2.resize(face, (px, px), interpolation=cv2.INTER_AREA))
    rows = {}
    for dev in ("cuda", "cpu"):
        res = cli("predict", *files, "--no-detect", "--json", "--device", dev)
        assert res.exit_code == 0, res.output
        rows[dev] = [json.loads(line) for line in res.stdout.splitlines() if '"label"' in line]
    assert len(rows["cuda"]) == len(files)
    for a, b in zip(rows["cuda"], rows["cpu"]):
        assert a["input_px"] == b["input_px"] and a["label"] == b["label"]
        assert max(abs(a["probs"][c] - b["probs"][c]) for c in b["probs"]) <= 1e-3


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_compiled_training_with_a_large_batch(tiny_store, cli, workdir):
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--device", "cuda",
              "--batch-size", "1024", "--set", "train.compile=true", "-q")
    assert res.exit_code == 0, res.output  # the batch shrinks to the data; bf16 autocast and inductor on the GPU


@pytest.mark.skipif(not __import__("gmenet_cli.runtime", fromlist=["cpu_has_bf16"]).cpu_has_bf16(),
                    reason="this CPU has no native bf16 (AMX / AVX512-BF16)")
def test_cpu_bf16_autocast_trains(tiny_store, cli, workdir):
    from gmenet_cli.runtime import setup

    assert setup("cpu", cpu_bf16=True).amp and not setup("cpu").amp
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "-q", "--set",
              "train.cpu_bf16=true", "--name", "bf16")
    assert res.exit_code == 0, res.output
    ckpt = checkpoint.load(workdir / "runs/distill-teacher/bf16/weights/best.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
