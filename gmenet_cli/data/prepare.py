"""`gmenet prepare`: a dataset in its native layout -> a prepared store of HR/LR face pairs (data/store.py).

Pipeline: the source adapter lists records -> worker processes decode, crop to the HR size and degrade to
every LR scale -> the main process streams the arrays to disk in input order, hashing on the way -> the
manifest is written last. The store is built in a hidden sibling folder and renamed into place at the end,
so an interrupted run never leaves a store that looks complete, and a rerun replaces an old store safely.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gmenet_cli import __version__
from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.degrade import Degradation, degrade, resize_face
from gmenet_cli.data.imageio import ImageError, to_channels
from gmenet_cli.data.sources import SOURCES
from gmenet_cli.data.sources.base import SPLITS, Record
from gmenet_cli.data.store import FORMAT, FORMAT_VERSION, default_out
from gmenet_cli.errors import DataError, UsageError

Progress = Callable[[int, int], None]
_CHUNK = 256  # records per worker task: large enough to amortise the inter-process hop


@dataclass(frozen=True)
class FaceJob:
    """What a worker needs to turn one record into its HR face and LR faces (inherited by forked workers)."""

    records: list
    channels: int
    hr_size: int
    scales: list[int]
    spec: Degradation

    def __call__(self, rec: Record):
        """-> (hr (C, H, W), {scale: (C, h, w)}, None) or (None, None, reason)."""
        try:
            hr = resize_face(to_channels(rec.load(), self.channels), self.hr_size)
            lowres = {s: _chw(degrade(hr, s, self.spec, rec.id)) for s in self.scales}
            return _chw(hr), lowres, None
        except ImageError as e:
            return None, None, str(e)


def _chw(img: np.ndarray) -> np.ndarray:
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)


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


def prepare(src: str, root: str | Path, out: str | Path | None, cfg: PrepareConfig, strict: bool = False,
            workers: int = 0, progress: Progress | None = None) -> tuple[Path, dict]:
    """Read `src` at `root`, write a complete store at `out`; returns (store path, manifest)."""
    if src not in SOURCES:
        raise UsageError(f"unknown source '{src}'. Valid sources: {', '.join(SOURCES)}")
    root = Path(root)
    if not root.exists():
        raise UsageError(f"dataset root not found: {root}")
    out = Path(out) if out else default_out(src, cfg.scales)
    _check_out(out)
    data = SOURCES[src].load(root, cfg)
    if not data.records:
        raise DataError(f"no usable images found for source '{src}' under {root}")
    hr_size = cfg.hr_size or data.native_size
    bad = [s for s in cfg.scales if hr_size % s]
    if bad:
        raise UsageError(f"HR size {hr_size} is not divisible by scale {bad[0]}; choose --hr-size as a multiple of "
                         "every scale")
    job = FaceJob(data.records, cfg.channels or data.channels, hr_size, sorted(set(cfg.scales)),
                  Degradation(cfg.method, cfg.blur_sigma, cfg.noise_std, cfg.jpeg_quality, cfg.seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        splits_info, skipped = _write_splits(tmp, job, strict, workers or min(4, os.cpu_count() or 1), progress,
                                             data.classes)
        if not splits_info:
            raise DataError(f"none of the {len(data.records)} images under {root} could be read (see the reasons with "
                            "--strict)")
        _write_skipped(tmp / "skipped.tsv", skipped)
        manifest = _manifest(src, root, cfg, data, job, splits_info, len(skipped))
        # manifest.json is written last: its presence is what marks the store complete.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest


def _write_splits(tmp: Path, job: FaceJob, strict: bool, n_workers: int, progress: Progress | None,
                  classes: list[str]) -> tuple[dict, list]:
    """Process every record (in input order, whatever the worker count) and write one folder per split."""
    by_split = {s: [i for i, r in enumerate(job.records) if r.split == s] for s in SPLITS}
    counter = {"done": 0, "total": len(job.records)}
    skipped: list[tuple[str, str, str]] = []
    splits_info: dict[str, dict] = {}
    with _Workers(job, n_workers) as pool:
        for split, indices in by_split.items():
            if indices:
                info = _write_split(tmp / split, split, indices, pool.map(indices), job, strict, skipped,
                                    counter, progress, classes)
                if info is not None:
                    splits_info[split] = info
    return splits_info, skipped


def _write_split(folder: Path, split: str, indices: list[int], results, job: FaceJob, strict: bool,
                 skipped: list, counter: dict, progress: Progress | None, classes: list[str]) -> dict | None:
    folder.mkdir()
    writers = {"hr": _Writer(folder / "hr.u8")}
    writers.update({f"lr_x{s}": _Writer(folder / f"lr_x{s}.u8") for s in job.scales})
    labels, votes, ids = [], [], []
    for i, (hr, lowres, err) in zip(indices, results):
        rec = job.records[i]
        counter["done"] += 1
        if progress and (counter["done"] % 256 == 0 or counter["done"] == counter["total"]):
            progress(counter["done"], counter["total"])
        if err is not None:
            if strict:
                raise DataError(f"cannot use {rec.path or rec.id}: {err} (drop --strict to skip such images)")
            skipped.append((rec.id, rec.path, err))
            continue
        writers["hr"].write(hr)
        for s in job.scales:
            writers[f"lr_x{s}"].write(lowres[s])
        labels.append(rec.label)
        ids.append(rec.id)
        if rec.votes is not None:
            votes.append(rec.votes)
    hashes = {k: w.close() for k, w in writers.items()}
    if not labels:
        shutil.rmtree(folder)
        return None
    files = {k: f"{split}/{k}.u8" for k in writers}
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    files["labels"] = f"{split}/labels.npy"
    if votes:
        np.save(folder / "votes.npy", np.stack(votes).astype(np.float32))
        files["votes"] = f"{split}/votes.npy"
    (folder / "ids.txt").write_text("\n".join(i.replace("\n", " ") for i in ids) + "\n", encoding="utf-8")
    files["ids"] = f"{split}/ids.txt"
    for k in ("labels", "votes", "ids"):
        if k in files:
            hashes[k] = _sha_file(folder.parent / files[k])
    counts = np.bincount(np.asarray(labels), minlength=len(classes))
    return {"count": len(labels), "class_counts": {c: int(n) for c, n in zip(classes, counts)},
            "files": files, "sha256": hashes}


def _manifest(src: str, root: Path, cfg: PrepareConfig, data, job: FaceJob, splits_info: dict, n_skipped: int) -> dict:
    content = hashlib.sha256()
    for split in splits_info:
        for k in sorted(splits_info[split]["sha256"]):
            content.update(f"{split}/{k}:{splits_info[split]['sha256'][k]}\n".encode())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": src,
        "root": str(root.resolve()),
        "classes": data.classes,
        "class_mapping": data.mapping,
        "channels": job.channels,
        "hr_size": job.hr_size,
        "scales": job.scales,
        "lr_sizes": {str(s): job.hr_size // s for s in job.scales},
        "degradation": asdict(job.spec),
        "seed": cfg.seed,
        "label_mode": cfg.label_mode if src == "ferplus" else "majority",
        "has_votes": all("votes" in i["files"] for i in splits_info.values()),
        "splits": splits_info,
        "skipped": {"count": n_skipped, "report": "skipped.tsv"},
        "dropped": data.dropped,
        "notes": data.notes,
        "options": asdict(cfg),
        "content_hash": content.hexdigest(),
    }


def _write_skipped(path: Path, skipped: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("id\tpath\treason\n")
        for row in skipped:
            f.write("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n")


# ---------------------------------------------------------------------------------------------- workers

_WORKER_JOB: FaceJob | None = None  # set once in each worker process by _init_worker


def _init_worker(job: FaceJob) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _run_chunk(indices: list[int]) -> list:
    job = _WORKER_JOB
    return [job(job.records[i]) for i in indices]


class _Workers:
    """Forked worker processes (decoding is GIL-bound Python glue: threads do not scale), or in-process
    work for 1 worker or where fork is unavailable. The job reaches forked workers through the fork itself
    (the initializer's arguments are not pickled under fork), so record loaders may be closures.

    A worker that dies (a signal, the out-of-memory killer) breaks the pool: that becomes a DataError at
    once instead of a main process waiting forever."""

    def __init__(self, job: FaceJob, n: int):
        self.job, self.n, self.pool = job, n, None

    def __enter__(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if self.n > 1 and "fork" in mp.get_all_start_methods():
            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context("fork"), initializer=_init_worker,
                                            initargs=(self.job,))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, indices: list[int]):
        """Yield job(records[i]) for `indices` in order, with at most 2 chunks per worker in flight (bounded
        memory whatever the speed of the writer)."""
        chunks = [indices[i : i + _CHUNK] for i in range(0, len(indices), _CHUNK)]
        if self.pool is None:
            for chunk in chunks:
                yield from (self.job(self.job.records[i]) for i in chunk)
            return
        from concurrent.futures.process import BrokenProcessPool

        pending: deque = deque()
        todo = iter(chunks)
        try:
            for chunk in todo:
                pending.append(self.pool.submit(_run_chunk, chunk))
                if len(pending) >= 2 * self.n:
                    break
            while pending:
                results = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(self.pool.submit(_run_chunk, nxt))
                yield from results
        except BrokenProcessPool:
            raise DataError("a prepare worker process died (killed, or out of memory); nothing was written. "
                            "Rerun, with --workers 1 to use less memory") from None


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
