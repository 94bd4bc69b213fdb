"""Batches of uint8 HR/LR pairs straight from a prepared store, with paired augmentation.

No per-image decoding and no worker processes: a batch is a fancy-index into memory-mapped arrays, made
in a background thread while the model computes. Augmentation here is geometric and *paired*: a flip and a
shift of k LR pixels = k x scale HR pixels, so the teacher's HR view and the student's low-resolution view
stay pixel-aligned (A-SKD makes each pair from the same augmented image) and the stored LR degradations
are used as prepared. Batches stay uint8 on the host: conversion, resizing and normalisation happen on the
device, inside the model. Only numpy and torch here (no OpenCV), so the losses and training import cheaply.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from gmenet_cli.data.store import Split


def _shift_batch(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, pad: int) -> np.ndarray:
    """Translate each image of (B, C, H, W) by (dy[i], dx[i]) pixels, edge-replicating the border."""
    if pad == 0:
        return x
    B, _, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    out = np.empty_like(x)
    for i in range(B):
        y0, x0 = pad - dy[i], pad - dx[i]
        out[i] = padded[i, :, y0 : y0 + H, x0 : x0 + W]
    return out


class PairedBatches:
    """Iterate dict batches: hr (B,C,H,W) uint8, lowres {scale: (positions (b,), (b,C,h,w) uint8)}, target (B,),
    votes (B, K) and index (the samples' row numbers in the split, a numpy array).

    Each sample of a batch draws one scale from `scales` (multi-scale training = one model for every face
    size). Shuffling and augmentation are seeded by (seed, epoch); under DDP each rank takes a disjoint
    strided slice of the same permutation. Training needs equal counts on every rank (DDP's collectives run
    in step), so the remainder is left out; `even=False` (validation, which runs without DDP's wrapper)
    gives every sample to some rank instead."""

    def __init__(self, split: Split, batch_size: int, scales: list[int] | None = None, shuffle: bool = True,
                 augment: bool = True, flip: bool = True, shift: int = 0, seed: int = 0, rank: int = 0,
                 world: int = 1, drop_last: bool = False, with_hr: bool = True, prefetch: int = 3, pin: bool = False,
                 even: bool = True, online: dict | None = None):
        self.split, self.batch_size = split, batch_size
        self.even = even
        self.scales = list(scales or [])
        self.shuffle, self.augment, self.flip, self.shift = shuffle, augment, flip, shift
        self.seed, self.rank, self.world = seed, rank, world
        self.drop_last, self.with_hr, self.prefetch = drop_last, with_hr, prefetch
        self.pin = pin  # page-locked batches (CUDA): host-to-device copies can then run non_blocking
        # online: augmentation settings (data/augment.py). The batch then carries the raw HR faces and each
        # sample's random parameters; warping and LR synthesis happen on the device (augment.make_views).
        self.online = online
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        n = self.split.count
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.world > 1:
            per_rank = n // self.world  # equal counts on every rank keep DDP's collectives in step
            order = order[self.rank : per_rank * self.world if self.even else n : self.world]
        return order

    def __len__(self) -> int:
        n, w = self.split.count, self.world
        if w > 1:  # as indices() shards
            n = n // w if self.even else len(range(self.rank, n, w))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _make(self, idx: np.ndarray, rng: np.random.Generator) -> dict:
        sort = np.argsort(idx, kind="stable")  # memmap reads in file order, then restore the batch order
        idx_sorted = idx[sort]
        inv = np.empty_like(sort)
        inv[sort] = np.arange(len(sort))
        batch = {"target": torch.from_numpy(self.split.labels[idx_sorted][inv].astype(np.int64)), "index": idx}
        if self.split.votes is not None:
            batch["votes"] = torch.from_numpy(self.split.votes[idx_sorted][inv].astype(np.float32))
        if self.online is not None:
            from gmenet_cli.data.augment import draw

            batch["hr"] = torch.from_numpy(np.asarray(self.split.hr[idx_sorted])[inv])
            batch["augment"] = draw(rng, len(idx), batch["hr"].shape[-1], scales=self.scales,
                                    flip=self.augment and self.flip, **self.online)
            return batch
        return self._make_paired(batch, idx_sorted, inv, rng)

    def _make_paired(self, batch: dict, idx_sorted: np.ndarray, inv: np.ndarray, rng: np.random.Generator) -> dict:
        """Stored LR faces with a flip and a shift shared by the sample's HR and LR views."""
        B = len(inv)
        flip = rng.random(B) < 0.5 if (self.augment and self.flip) else np.zeros(B, bool)
        s = self.shift if self.augment else 0
        dy = rng.integers(-s, s + 1, B) if s else np.zeros(B, int)
        dx = rng.integers(-s, s + 1, B) if s else np.zeros(B, int)
        if self.with_hr:
            batch["hr"] = np.asarray(self.split.hr[idx_sorted])[inv]  # augmented below with the LR view
        lowres: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if self.scales:
            choice = rng.integers(0, len(self.scales), B)
            for k, scale in enumerate(self.scales):
                pos = np.nonzero(choice == k)[0]
                if len(pos):
                    lowres[scale] = (pos, np.asarray(self.split.lowres[scale][idx_sorted[inv[pos]]]))
        # Geometric augmentation, identical for the two views of each sample.
        if self.with_hr:
            hr = batch["hr"]
            if flip.any():
                hr[flip] = hr[flip][..., ::-1]
            if s:
                # HR shift = LR shift x the sample's scale (teacher-only batches: scale 1).
                per_sample = np.ones(B, int)
                for scale, (pos, _) in lowres.items():
                    per_sample[pos] = scale
                hr = _shift_batch(hr, dy * per_sample, dx * per_sample, s * max([1] + self.scales))
            batch["hr"] = torch.from_numpy(np.ascontiguousarray(hr))
        out_lowres = {}
        for scale, (pos, arr) in lowres.items():
            f = flip[pos]
            if f.any():
                arr[f] = arr[f][..., ::-1]
            if s:
                arr = _shift_batch(arr, dy[pos], dx[pos], s)
            out_lowres[scale] = (torch.from_numpy(pos), torch.from_numpy(np.ascontiguousarray(arr)))
        batch["lowres"] = out_lowres
        return batch

    def _batches(self):
        order = self.indices()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx):
                batch = self._make(idx, rng)
                yield _pin(batch) if self.pin else batch

    def __iter__(self):
        """Batches are produced by a background thread (numpy fancy-indexing releases the GIL)."""
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        sentinel = object()

        def produce():
            try:
                for b in self._batches():
                    while not stop.is_set():
                        try:
                            q.put(b, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # surface loader errors in the consuming thread
                q.put(e)
                return
            q.put(sentinel)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is sentinel:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # a consumer that stops early (break, close, an error) also stops the producer:
            thread.join(timeout=5)  # it sees `stop` within 0.1 s; no thread is left running torch at exit


def _pin(batch):
    """Page-locked copies of every tensor (positions and augmentation parameters included), so the
    host-to-device copies can overlap with compute."""
    if torch.is_tensor(batch):
        return batch.pin_memory()
    if isinstance(batch, dict):
        return {k: _pin(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_pin(v) for v in batch)
    return batch
