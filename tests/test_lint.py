"""The code passes the project's linter (ruff, configured in pyproject.toml: line length 120, pycodestyle,
pyflakes, import order). Part of the default suite, so CI and the README's test command both run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    assert Path(ruff).exists(), "ruff is not installed: pip install -e '.[dev]'"
    res = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
