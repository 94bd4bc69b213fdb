"""Shared fixtures: a CLI runner, a private working directory, tiny prepared stores and tiny trained runs.

Everything is synthetic (tests/synth.py) except the files under ../shared, which the tests that need them
skip without.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Tiny test models gain nothing from threads, and oversubscribed OpenMP threads (next to a training run or
# forked prepare workers) make them 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import synth  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ASTRONAUT = REPO / "examples" / "astronaut.png"
YUNET = REPO / "gmenet_cli" / "weights" / "yunet.onnx"  # shipped in the package (a copy of ../shared/models/yunet.onnx)
FERPLUS = SHARED / "data" / "ferplus"


class Cli:
    """Runs `gmenet ...` in-process; returns the Click Result (stdout, stderr, exit_code)."""

    def __init__(self):
        from gmenet_cli.cli import app

        self.app = app
        self.runner = CliRunner()

    def __call__(self, *args, input=None):
        return self.runner.invoke(self.app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def cli():
    return Cli()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh folder: commands write prepared/ and runs/ relative to the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _prepare(cli, root_maker, out: Path, *extra) -> Path:
    root = root_maker()
    res = cli("prepare", "--src", "ferplus", "--root", root, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """FERPlus layout, 8 classes x 8 faces per split, prepared at x2 and x4."""
    base = tmp_path_factory.mktemp("tiny_store")
    root = synth.make_ferplus(base / "ferplus", per_class=8)
    res = Cli()(
        "prepare",
        "--src",
        "ferplus",
        "--root",
        root,
        "--scale",
        "2,4",
        "--out",
        base / "store",
        "--label-mode",
        "votes",
    )
    assert res.exit_code == 0, res.output
    return base / "store"


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_store) -> dict:
    """A teacher and a distilled student trained for 2 epochs on the tiny store (shared by many tests)."""
    base = tmp_path_factory.mktemp("tiny_runs")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        cli = Cli()
        res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "2", "--name", "t", "-q")
        assert res.exit_code == 0, res.output
        teacher = base / "runs" / "distill-teacher" / "t" / "weights" / "best.pt"
        res = cli(
            "train",
            "--data",
            tiny_store,
            "--teacher",
            teacher,
            "--preset",
            "tiny",
            "--epochs",
            "2",
            "--name",
            "s",
            "-q",
        )
        assert res.exit_code == 0, res.output
        student = base / "runs" / "train" / "s" / "weights" / "best.pt"
        student_log = res.stderr
    finally:
        os.chdir(cwd)
    return {"teacher": teacher, "student": student, "base": base, "student_log": student_log}


def json_lines(text: str, summaries: bool = False) -> list[dict]:
    """predict --json's records: faces and faceless/unreadable inputs; its per-input summary records only
    with summaries=True."""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if summaries or "summary" not in r]


def interrupt_then_resume(cli, monkeypatch, args: list, name: str) -> None:
    """Run `gmenet train *args --name name`, Ctrl-C it during the second validation (so last.pt holds
    epoch 1), then `--resume` it to the end. Both commands must succeed as such (exit 130, then 0)."""
    from gmenet_cli.training import loop

    real, calls = loop.validate, {"n": 0}

    def interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "validate", interrupt)
    assert cli("train", *args, "--name", name).exit_code == 130
    monkeypatch.setattr(loop, "validate", real)
    assert cli("train", "--name", name, "--resume", "-q").exit_code == 0
