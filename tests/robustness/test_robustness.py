"""Robustness and security: hostile files, hostile images, faults (kill -9, full disk), fuzzing.

The fuzz tests run a few hundred cases by default and several thousand with `-m slow`
(GMENET_FUZZ_EXAMPLES overrides the count).
"""

from __future__ import annotations

import errno
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import synth
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmenet_cli import checkpoint
from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.imageio import ImageError, decode_image, read_image
from gmenet_cli.data.prepare import prepare
from gmenet_cli.errors import CheckpointError, GmenetError

FUZZ = int(os.environ.get("GMENET_FUZZ_EXAMPLES", "200"))


# ---------------------------------------------------------------------------------------------- hostile files

class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_checkpoint_is_refused(tmp_path, cli):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "gmenet-checkpoint", "payload": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        checkpoint.load(path)
    for cmd in (
        ["evaluate", "--weights", path],
        ["predict", "x.jpg", "--weights", path],
        ["export", "--weights", path],
    ):
        res = cli(*cmd)
        assert res.exit_code != 0 and "Traceback" not in res.output
    assert not marker.exists()  # the payload never ran


def test_foreign_old_and_corrupt_checkpoints(tmp_path, tiny_runs):
    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a gmenet checkpoint"):
        checkpoint.load(plain)
    ck = checkpoint.load(tiny_runs["student"])
    old = tmp_path / "old.pt"
    checkpoint.save(old, {**ck, "format_version": 0})
    raw = torch.load(old, weights_only=True)
    raw["format_version"] = 0
    torch.save(raw, old)
    with pytest.raises(CheckpointError, match="format 0"):
        checkpoint.load(old)
    other = dict(ck)
    other["model"] = {"name": "gmenet_s", "kwargs": ck["model"]["kwargs"]}
    with pytest.raises(CheckpointError, match="do not fit model 'gmenet_s'"):
        checkpoint.build_model(other, "x.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(tiny_runs["student"].read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(truncated)
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.load(tmp_path)


# ---------------------------------------------------------------------------------------------- hostile images


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but carries almost no data (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _pil_bytes(mode: str, fmt: str, **kw) -> bytes:
    from PIL import Image

    img = Image.new(mode, (40, 30), color=(10, 200, 30, 255)[: len(mode)] if mode != "I;16" else 40000)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_image_variants_decode_or_fail_clearly():
    pytest.importorskip("PIL")
    ok_16 = np.full((30, 40), 60000, np.uint16)
    ok, png16 = cv2.imencode(".png", ok_16)
    assert decode_image(png16.tobytes(), 1).dtype == np.uint8  # 16-bit -> 8-bit
    assert decode_image(_pil_bytes("RGBA", "PNG"), 3).shape == (30, 40, 3)  # alpha dropped
    assert decode_image(_pil_bytes("CMYK", "JPEG"), 3).shape == (30, 40, 3)
    from PIL import Image

    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    try:
        assert decode_image(buf.getvalue(), 3).shape[:2] == (20, 20)  # first frame
    except ImageError:
        pass  # OpenCV builds without GIF support refuse it clearly: also fine
    with pytest.raises(ImageError, match="too large"):
        decode_image(_png_header_only(20000, 20000), 3)
    for bad in (b"", b"\x00" * 10, b"GIF89a", png16.tobytes()[:30]):
        with pytest.raises(ImageError):
            decode_image(bad, 3)


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "face.jpg").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path / "face.jpg")


# ---------------------------------------------------------------------------------------------- faults


def _fer2013_rows(path: Path, n: int) -> Path:
    path.mkdir(parents=True)
    pixels = " ".join(str(v) for v in synth.face(3, 48).flatten())
    with open(path / "fer2013.csv", "w") as f:
        f.write("emotion,pixels,Usage\n")
        for i in range(n):
            f.write(f"{i % 7},{pixels},{'Training' if i % 5 else 'PublicTest'}\n")
    return path


def test_kill_9_during_prepare_leaves_no_complete_looking_store(tmp_path):
    root = _fer2013_rows(tmp_path / "fer", 20000)
    out = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "gmenet_cli",
        "prepare",
        "--src",
        "fer2013",
        "--root",
        str(root),
        "--scale",
        "2,4,8",
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".store.tmp-*/train")):
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "prepare finished before it could be killed; make the dataset bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "manifest.json").is_file()
    assert not list(tmp_path.glob(".store.tmp-*"))  # the killed run's leftovers were cleaned up


@pytest.mark.slow  # ~15 s: two training processes
def test_kill_9_during_training_then_resume_finishes(tiny_store, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "gmenet_cli",
        "distill-teacher",
        "--data",
        str(tiny_store),
        "--preset",
        "tiny",
        "--epochs",
        "12",
        "--name",
        "k",
        "-q",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "runs/distill-teacher/k/weights/last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.is_file():
            try:
                if checkpoint.load(last)["epoch"] >= 2:
                    break
            except CheckpointError:
                pass
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = checkpoint.load(last)  # always loadable: written atomically
    assert 2 <= state["epoch"] < 12
    res = subprocess.run(
        cmd[:-3] + ["--name", "k", "--resume", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    assert checkpoint.load(last)["epoch"] == 12 and checkpoint.load(last)["finished"]


def test_full_disk_keeps_previous_checkpoint(tiny_store, cli, workdir, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 wrote best.pt and last.pt; epoch 2 hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "3", "--name", "full", "-q")
    assert res.exit_code == 1
    assert "No space left on device" in res.stderr and "Traceback" not in res.output
    monkeypatch.setattr(torch, "save", real_save)
    weights = workdir / "runs/distill-teacher/full/weights"
    assert checkpoint.load(weights / "last.pt")["epoch"] == 1
    assert not [p for p in weights.iterdir() if p.name.startswith(".")]  # no temp files left


def test_output_only_under_the_chosen_folder(tiny_runs, cli, workdir):
    from conftest import ASTRONAUT

    link_target = workdir / "outside"
    link_target.mkdir()
    evil = workdir / "in" / "..%2F..%2Fescape.png"
    evil.parent.mkdir()
    evil.write_bytes(ASTRONAUT.read_bytes())
    res = cli("predict", evil, "--weights", tiny_runs["student"], "--save", workdir / "ann", "--json")
    assert res.exit_code == 0, res.output
    written = [p for p in (workdir / "ann").iterdir()]
    assert len(written) == 1 and written[0].parent == workdir / "ann"
    assert not list(link_target.iterdir())


# ---------------------------------------------------------------------------------------------- fuzzing


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_decode_or_image_error(data):
    try:
        img = decode_image(data, 3)
        assert img.dtype == np.uint8 and img.ndim == 3
    except ImageError:
        pass


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=1, max_size=600))
def test_fuzz_mutated_png_decode_or_image_error(noise):
    ok, enc = cv2.imencode(".png", synth.face(2, 24))
    data = bytearray(enc.tobytes())
    for i, b in enumerate(noise[:64]):  # overwrite bytes at positions chosen by the fuzzer
        data[(i * 7919 + b) % len(data)] = b
    try:
        decode_image(bytes(data[: max(8, len(data) - noise[0])]), 1)
    except ImageError:
        pass


_cell = st.one_of(st.text(max_size=12), st.integers(-5, 20).map(str), st.just(""), st.just('"(0, 0, 48, 48)"'))


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(_cell, min_size=0, max_size=14), min_size=1, max_size=6))
def test_fuzz_ferplus_label_rows(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("fz")
    d = root / "FER2013Train"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), synth.face(1, 48))
    text = 'a.png,"(0, 0, 48, 48)",1,9,0,0,0,0,0,0,0,0\n' + "\n".join(",".join(r) for r in rows) + "\n"
    (d / "label.csv").write_text(text, encoding="utf-8", errors="surrogatepass") if False else (
        d / "label.csv"
    ).write_bytes(text.encode("utf-8", "replace"))
    try:
        _, m = prepare("ferplus", root, root / "out", PrepareConfig(scales=[4]), workers=1)
        assert m["splits"]["train"]["count"] >= 1
    except GmenetError:
        pass  # DataError / UsageError: the documented clear errors


@pytest.mark.slow
def test_fuzz_many_cases_slow():
    """The long fuzz run: rerun the fuzzers with several thousand examples each."""
    env = {**os.environ, "GMENET_FUZZ_EXAMPLES": "3000"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
            "-k",
            "fuzz and not slow",
            "-o",
            "addopts=",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert res.returncode == 0, res.stdout[-3000:]
