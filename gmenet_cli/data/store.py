"""The prepared store: what `prepare` writes and everything else reads.

Layout (all arrays uint8, NCHW, raw little-endian bytes so they can be streamed in and memory-mapped out):

    STORE/manifest.json          human-readable: source, classes, sizes, scales, degradation, counts, hashes
    STORE/skipped.tsv            images that could not be used (id, path, reason)
    STORE/<split>/hr.u8          (N, C, HR, HR)
    STORE/<split>/lr_x<s>.u8     (N, C, HR/s, HR/s) for every scale s
    STORE/<split>/labels.npy     (N,) int64 canonical class index
    STORE/<split>/votes.npy      (N, K) float32 vote distribution (only with label_mode=votes)
    STORE/<split>/ids.txt        N lines, the source's stable image ids

A store is complete iff STORE/manifest.json exists: `prepare` builds in a hidden sibling folder and
renames it into place at the very end, so an interrupted run never leaves a store that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from gmenet_cli import __version__
from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.degrade import METHODS, Degradation, degrade, resize_face
from gmenet_cli.data.imageio import ImageError, to_channels
from gmenet_cli.data.sources import SOURCES
from gmenet_cli.data.sources.base import SPLITS, Record
from gmenet_cli.errors import DataError, UsageError

FORMAT = "gmenet-store"
FORMAT_VERSION = 1
DEFAULT_BASE = Path("prepared")

Progress = Callable[[int, int], None]


def _check_options(cfg: PrepareConfig) -> None:
    if not cfg.scales:
        raise UsageError("give at least one --scale (e.g. --scale 4 or --scale 2,4,8)")
    bad = [s for s in cfg.scales if s < 2 or s > 32]
    if bad:
        raise UsageError(f"--scale must be between 2 and 32, got {bad[0]}")
    if cfg.method not in METHODS:
        raise UsageError(f"unknown downsampling method '{cfg.method}'. Valid: {', '.join(METHODS)}")
    if cfg.hr_size and not 8 <= cfg.hr_size <= 512:
        raise UsageError(f"--hr-size must be between 8 and 512, got {cfg.hr_size}")
    if cfg.channels not in (0, 1, 3):
        raise UsageError(f"channels must be 1 or 3 (0 = the source's), got {cfg.channels}")
    if not 0 <= cfg.jpeg_quality <= 100:
        raise UsageError(f"jpeg_quality must be 0 (off) to 100, got {cfg.jpeg_quality}")
    if cfg.blur_sigma < 0 or cfg.noise_std < 0 or cfg.margin < 0:
        raise UsageError("blur_sigma, noise_std and margin must be >= 0")
    if not (0 <= cfg.val_ratio < 1 and 0 <= cfg.test_ratio < 1 and cfg.val_ratio + cfg.test_ratio < 1):
        raise UsageError("val_ratio and test_ratio must be in [0, 1) and sum to less than 1")


def default_out(src: str, scales: list[int]) -> Path:
    return DEFAULT_BASE / f"{src}-x{'-'.join(str(s) for s in sorted(scales))}"


class _Writer:
    """Streams one array file and hashes it on the way (no second pass over the data)."""

    def __init__(self, path: Path, chunk: int = 512):
        self.path = path
        self.file = open(path, "wb")
        self.sha = hashlib.sha256()
        self.pending: list[np.ndarray] = []
        self.chunk = chunk

    def write(self, arr: np.ndarray) -> None:
        self.pending.append(arr)
        if len(self.pending) >= self.chunk:  # one big write + hash update instead of thousands of small ones
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            data = np.ascontiguousarray(np.stack(self.pending)).tobytes()
            self.file.write(data)
            self.sha.update(data)
            self.pending = []

    def close(self) -> str:
        self._flush()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.sha.hexdigest()


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(
    src: str,
    root: str | Path,
    out: str | Path | None,
    cfg: PrepareConfig,
    strict: bool = False,
    workers: int = 0,
    progress: Progress | None = None,
) -> tuple[Path, dict]:
    """Read `src` at `root`, write a complete store at `out`; returns (store path, manifest)."""
    if src not in SOURCES:
        raise UsageError(f"unknown source '{src}'. Valid sources: {', '.join(SOURCES)}")
    _check_options(cfg)
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset root not found: {root}")
    out = Path(out) if out else default_out(src, cfg.scales)
    _check_out(out)
    data = SOURCES[src].load(root, cfg)
    if not data.records:
        raise DataError(f"no usable images found for source '{src}' under {root}")
    hr_size = cfg.hr_size or data.native_size
    bad = [s for s in cfg.scales if hr_size % s]
    if bad:
        raise UsageError(f"HR size {hr_size} is not divisible by scale {bad[0]}; choose --hr-size as a multiple of every scale")
    channels = cfg.channels or data.channels
    scales = sorted(set(cfg.scales))
    spec = Degradation(cfg.method, cfg.blur_sigma, cfg.noise_std, cfg.jpeg_quality, cfg.seed)

    def process(rec: Record):
        try:
            face = to_channels(rec.load(), channels)
            hr = resize_face(face, hr_size)
            lrs = {s: degrade(hr, s, spec, rec.id) for s in scales}
            return hr, lrs, None
        except ImageError as e:
            return None, None, str(e)

    global _JOB
    _JOB = (process, data.records)

    def chw(img: np.ndarray) -> np.ndarray:
        return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        by_split = {s: [i for i, r in enumerate(data.records) if r.split == s] for s in SPLITS}
        total, done = len(data.records), 0
        skipped: list[tuple[str, str, str]] = []
        splits_info: dict[str, dict] = {}
        n_workers = workers or min(4, os.cpu_count() or 1)
        with _pool(n_workers) as pool:
            for split, indices in by_split.items():
                if not indices:
                    continue
                (tmp / split).mkdir()
                writers = {"hr": _Writer(tmp / split / "hr.u8")}
                writers.update({f"lr_x{s}": _Writer(tmp / split / f"lr_x{s}.u8") for s in scales})
                labels, votes, ids = [], [], []
                # map() keeps input order whatever the worker count, so the bytes never depend on it.
                for i, (hr, lrs, err) in zip(indices, _ordered_results(pool, indices)):
                    rec = data.records[i]
                    done += 1
                    if progress and (done % 256 == 0 or done == total):
                        progress(done, total)
                    if err is not None:
                        if strict:
                            raise DataError(f"cannot use {rec.path or rec.id}: {err} (drop --strict to skip such images)")
                        skipped.append((rec.id, rec.path, err))
                        continue
                    writers["hr"].write(chw(hr))
                    for s in scales:
                        writers[f"lr_x{s}"].write(chw(lrs[s]))
                    labels.append(rec.label)
                    ids.append(rec.id)
                    if rec.votes is not None:
                        votes.append(rec.votes)
                hashes = {k: w.close() for k, w in writers.items()}
                if not labels:
                    shutil.rmtree(tmp / split)
                    continue
                np.save(tmp / split / "labels.npy", np.asarray(labels, dtype=np.int64))
                files = {k: f"{split}/{k}.u8" for k in writers}
                files["labels"] = f"{split}/labels.npy"
                if votes:
                    np.save(tmp / split / "votes.npy", np.stack(votes).astype(np.float32))
                    files["votes"] = f"{split}/votes.npy"
                (tmp / split / "ids.txt").write_text("\n".join(i.replace("\n", " ") for i in ids) + "\n", encoding="utf-8")
                files["ids"] = f"{split}/ids.txt"
                for k in ("labels", "votes", "ids"):
                    if k in files:
                        hashes[k] = _sha_file(tmp / files[k])
                counts = np.bincount(np.asarray(labels), minlength=len(data.classes))
                splits_info[split] = {
                    "count": len(labels),
                    "class_counts": {c: int(n) for c, n in zip(data.classes, counts)},
                    "files": files,
                    "sha256": hashes,
                }
        if not splits_info:
            raise DataError(f"none of the {total} images under {root} could be read (see the reasons with --strict)")
        with open(tmp / "skipped.tsv", "w", encoding="utf-8") as f:
            f.write("id\tpath\treason\n")
            for row in skipped:
                f.write("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n")
        content = hashlib.sha256()
        for split in splits_info:
            for k in sorted(splits_info[split]["sha256"]):
                content.update(f"{split}/{k}:{splits_info[split]['sha256'][k]}\n".encode())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": src,
            "root": str(root.resolve()),
            "classes": data.classes,
            "class_mapping": data.mapping,
            "channels": channels,
            "hr_size": hr_size,
            "scales": scales,
            "lr_sizes": {str(s): hr_size // s for s in scales},
            "degradation": asdict(spec),
            "seed": cfg.seed,
            "label_mode": cfg.label_mode if src == "ferplus" else "majority",
            "has_votes": all("votes" in i["files"] for i in splits_info.values()),
            "splits": splits_info,
            "skipped": {"count": len(skipped), "report": "skipped.tsv"},
            "dropped": data.dropped,
            "notes": data.notes,
            "options": asdict(cfg),
            "content_hash": content.hexdigest(),
        }
        # manifest.json is written last: its presence is what marks the store complete.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest


_JOB: tuple | None = None  # (process, records), inherited by forked workers instead of pickled
_CHUNK = 256


def _run_chunk(indices: list[int]):
    process, records = _JOB
    return [process(records[i]) for i in indices]


class _pool:
    """Forked worker processes (decoding is GIL-bound Python glue, threads do not scale); falls back to
    in-process work for 1 worker or where fork is unavailable."""

    def __init__(self, n: int):
        self.n, self.pool = n, None

    def __enter__(self):
        import multiprocessing as mp

        if self.n > 1 and "fork" in mp.get_all_start_methods():
            self.pool = mp.get_context("fork").Pool(self.n)
        return self.pool

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _ordered_results(pool, indices: list[int]):
    """Yield process(records[i]) for indices in order; imap keeps input order whatever the worker count."""
    chunks = [indices[i : i + _CHUNK] for i in range(0, len(indices), _CHUNK)]
    if pool is None:
        for chunk in chunks:
            yield from _run_chunk(chunk)
        return
    for results in pool.imap(_run_chunk, chunks):
        yield from results


def _check_out(out: Path) -> None:
    """Refuse to replace anything that is not a previous store (or an empty folder)."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise UsageError(f"--out {out} exists and is not a gmenet store; choose another folder")


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class Split:
    """One split of an opened store: memory-mapped uint8 arrays + labels (+ votes)."""

    def __init__(self, base: Path, name: str, info: dict, manifest: dict):
        c, size = manifest["channels"], manifest["hr_size"]
        self.name = name
        self.count = int(info["count"])
        self.hr = _memmap(base / info["files"]["hr"], (self.count, c, size, size))
        self.lr = {
            int(s): _memmap(base / info["files"][f"lr_x{s}"], (self.count, c, size // int(s), size // int(s)))
            for s in manifest["scales"]
        }
        self.labels = _load_npy(base / info["files"]["labels"], (self.count,))
        self.votes = _load_npy(base / info["files"]["votes"], None) if "votes" in info["files"] else None


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
    """An opened prepared store. `store.splits["train"].lr[4]` is the (N, C, h, w) uint8 x4 array."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not self.path.exists():
            raise DataError(f"prepared store not found: {self.path} (run gmenet prepare first)")
        if not mf.is_file():
            raise DataError(f"{self.path} is not a complete prepared store (no manifest.json); run gmenet prepare again")
        try:
            self.manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{mf} is not valid JSON; run gmenet prepare again") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise DataError(f"{self.path} is not a gmenet prepared store")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"{self.path} has store format {version}, this gmenet reads format {FORMAT_VERSION}; run gmenet prepare again")
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
