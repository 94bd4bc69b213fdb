"""The prepared store, read side: what `prepare` writes and training, evaluation and benchmarks read.

Layout (all arrays uint8, NCHW, raw little-endian bytes so they can be streamed in and memory-mapped out):

    STORE/manifest.json          human-readable: source, classes, sizes, scales, degradation, counts, hashes
    STORE/skipped.tsv            images that could not be used (id, path, reason)
    STORE/<split>/hr.u8          (N, C, HR, HR)
    STORE/<split>/lr_x<s>.u8     (N, C, HR/s, HR/s) low-resolution faces, for every scale s
    STORE/<split>/labels.npy     (N,) int64 canonical class index
    STORE/<split>/votes.npy      (N, K) float32 vote distribution (sources with crowd votes: FERPlus)
    STORE/<split>/ids.txt        N lines, the source's stable image ids

A store is complete iff STORE/manifest.json exists (see data/prepare.py for how that is guaranteed).
File names keep their `lr_x<s>` spelling: it is the on-disk format, read by every earlier version.
Only numpy here: training code imports this without OpenCV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gmenet_cli.errors import DataError

FORMAT = "gmenet-store"
FORMAT_VERSION = 1
DEFAULT_BASE = Path("prepared")


def default_out(src: str, scales: list[int]) -> Path:
    return DEFAULT_BASE / f"{src}-x{'-'.join(str(s) for s in sorted(scales))}"


class Split:
    """One split of an opened store: memory-mapped uint8 arrays + labels (+ votes)."""

    def __init__(self, base: Path, name: str, info: dict, manifest: dict):
        c, size = manifest["channels"], manifest["hr_size"]
        self.name = name
        self.count = int(info["count"])
        self.hr = _memmap(base / info["files"]["hr"], (self.count, c, size, size))
        self.lowres = {  # scale -> (N, C, HR/scale, HR/scale)
            int(s): _memmap(base / info["files"][f"lr_x{s}"], (self.count, c, size // int(s), size // int(s)))
            for s in manifest["scales"]
        }
        self.labels = _load_npy(base / info["files"]["labels"], (self.count,))
        self.votes = _load_npy(base / info["files"]["votes"], None) if "votes" in info["files"] else None


class _Rows:
    """Rows `rows` (sorted, so memory-mapped reads stay in file order) of an (N, ...) array, indexed like it."""

    def __init__(self, base: np.ndarray, rows: np.ndarray):
        self.base, self.rows = base, rows
        self.shape = (len(rows), *base.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):
        return self.base[self.rows[idx]]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.base[self.rows])
        return out.astype(dtype) if dtype is not None else out


class Subset:
    """Some rows of a split, with the same interface as Split (count, hr, lowres, labels, votes)."""

    def __init__(self, split: "Split", rows: np.ndarray, name: str):
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.name, self.count = name, len(rows)
        self.hr = _Rows(split.hr, rows)
        self.lowres = {s: _Rows(a, rows) for s, a in split.lowres.items()}
        self.labels = split.labels[rows]
        self.votes = split.votes[rows] if split.votes is not None else None


def hold_out(split: "Split", fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """(the rest, a held-out part) of a split: a seeded `fraction` of its rows, the same on every run (the
    seed does not follow the training seed), for stores without a validation split."""
    order = np.random.default_rng([seed, split.count]).permutation(split.count)
    n = max(1, int(round(split.count * fraction)))
    return Subset(split, order[n:], split.name), Subset(split, order[:n], f"{split.name} (held-out {fraction:.0%})")


def _memmap(path: Path, shape: tuple) -> np.ndarray:
    expected = int(np.prod(shape))
    if not path.is_file():
        raise DataError(f"prepared store is incomplete: {path} is missing (run gmenet prepare again)")
    if path.stat().st_size != expected:
        raise DataError(f"prepared store is damaged: {path} has {path.stat().st_size} bytes, expected {expected}")
    if expected == 0:
        return np.zeros(shape, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def _load_npy(path: Path, shape) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"prepared store is damaged: cannot read {path} ({e})") from None
    if shape is not None and arr.shape != shape:
        raise DataError(f"prepared store is damaged: {path} has shape {arr.shape}, expected {shape}")
    return arr


class Store:
    """An opened prepared store. `store.splits["train"].lowres[4]` is the (N, C, h, w) uint8 x4 array."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not self.path.exists():
            raise DataError(f"prepared store not found: {self.path} (run gmenet prepare first)", exit_code=2)
        if not mf.is_file():
            raise DataError(f"{self.path} is not a complete prepared store (no manifest.json); run gmenet prepare "
                            "again")
        try:
            self.manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{mf} is not valid JSON; run gmenet prepare again") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise DataError(f"{self.path} is not a gmenet prepared store")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"{self.path} has store format {version}, this gmenet reads format {FORMAT_VERSION}; run "
                            "gmenet prepare again")
        try:
            self.classes: list[str] = list(self.manifest["classes"])
            self.channels = int(self.manifest["channels"])
            self.hr_size = int(self.manifest["hr_size"])
            self.scales = [int(s) for s in self.manifest["scales"]]
            self.splits = {n: Split(self.path, n, i, self.manifest) for n, i in self.manifest["splits"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{mf} is malformed (missing {e}); run gmenet prepare again") from None

    @property
    def content_hash(self) -> str:
        return self.manifest.get("content_hash", "")

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DataError(f"{self.path} has no '{name}' split; it has: {', '.join(self.splits)}")
        return self.splits[name]


def find_latest_store(base: Path = DEFAULT_BASE) -> Path | None:
    """The most recently prepared complete store under `base` (for bare `gmenet train`)."""
    if not base.is_dir():
        return None
    found = [p.parent for p in base.glob("*/manifest.json")]
    return max(found, key=lambda p: (p / "manifest.json").stat().st_mtime) if found else None
