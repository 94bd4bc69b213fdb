"""Shared helpers for the benchmark scripts: where the shared data lives, machine description."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GMENET_SHARED", REPO.parent / "shared"))
FERPLUS = SHARED / "data" / "ferplus"
ASTRONAUT = REPO / "examples" / "astronaut.png"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores {cpu}{gpu}, Python {sys.version.split()[0]}, torch {torch.__version__}"


def header(title: str) -> str:
    command = " ".join(sys.argv)
    return f"## {title}\n\nDate: {dt.date.today().isoformat()}. Machine: {machine()}.\nCommand: `python {command}`\n"


def require_ferplus() -> None:
    if not (FERPLUS / "FER2013Train" / "label.csv").is_file():
        sys.exit(f"skipped: FERPlus not found at {FERPLUS} (set GMENET_SHARED)")
