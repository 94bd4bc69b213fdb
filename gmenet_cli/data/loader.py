"""Batches of uint8 HR/LR faces straight from a prepared store, with their augmentation parameters.

No per-image decoding and no worker processes: a batch is a fancy-index into memory-mapped arrays, made
in a background thread while the model computes. Augmentation is drawn here (seeded) and applied on the
training device (data/augment.py): one recipe for the teacher and the student, whatever the store's LR
degradation. Batches stay uint8 on the host: conversion, resizing and normalisation happen on the
device, inside the model. Only numpy and torch here (no OpenCV), so the losses and training import cheaply.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from gmenet_cli.data.store import Split


class PairedBatches:
    """Iterate dict batches: hr (B,C,H,W) uint8, target (B,), votes (B, K), index (the samples' row numbers in
    the split, a numpy array) and either

    - without `online` (evaluation): lowres {scale: (positions (b,), (b,C,h,w) uint8)}, the stored LR faces;
    - with `online` (training): augment, each sample's random parameters (augment.draw, with these
      settings), and with `stored_lowres` also stored {scale: (positions, stored LR faces)}, which
      augment.make_views warps like their HR face; without it the student's LR faces are made from the
      augmented HR faces on the device.

    Each sample of a batch draws one scale from `scales` (multi-scale training = one model for every face
    size). Shuffling and augmentation are seeded by (seed, epoch, rank); under DDP each rank takes a
    disjoint strided slice of the same permutation. Training needs equal counts on every rank (DDP's
    collectives run in step), so the remainder is left out; `even=False` (validation, which runs without
    DDP's wrapper) gives every sample to some rank instead."""

    def __init__(self, split: Split, batch_size: int, scales: list[int] | None = None, shuffle: bool = True,
                 flip: bool = True, seed: int = 0, rank: int = 0, world: int = 1, drop_last: bool = False,
                 with_hr: bool = True, prefetch: int = 3, pin: bool = False, even: bool = True,
                 online: dict | None = None, stored_lowres: bool = False):
        self.split, self.batch_size = split, batch_size
        self.even = even
        self.scales = list(scales or [])
        self.shuffle, self.flip = shuffle, flip
        self.seed, self.rank, self.world = seed, rank, world
        self.drop_last, self.with_hr, self.prefetch = drop_last, with_hr, prefetch
        self.pin = pin  # page-locked batches (CUDA): host-to-device copies can then run non_blocking
        self.online, self.stored_lowres = online, stored_lowres
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
        if self.online is None:
            choice = rng.integers(0, max(len(self.scales), 1), len(idx))
            positions = {s: np.nonzero(choice == k)[0] for k, s in enumerate(self.scales)}
            if self.with_hr:
                batch["hr"] = torch.from_numpy(np.asarray(self.split.hr[idx_sorted])[inv])
            batch["lowres"] = self._stored(positions, idx_sorted, inv)
            return batch
        from gmenet_cli.data.augment import draw

        batch["hr"] = torch.from_numpy(np.asarray(self.split.hr[idx_sorted])[inv])
        batch["augment"] = draw(rng, len(idx), batch["hr"].shape[-1], scales=self.scales, flip=self.flip, **self.online)
        if self.stored_lowres:
            positions = {s: p.numpy() for s, p in batch["augment"]["positions"].items()}
            batch["stored"] = self._stored(positions, idx_sorted, inv)
        return batch

    def _stored(self, positions: dict, idx_sorted: np.ndarray, inv: np.ndarray) -> dict:
        """{scale: (positions, the stored LR faces of those samples)} for the non-empty groups."""
        return {
            s: (
                torch.from_numpy(pos),
                torch.from_numpy(np.ascontiguousarray(self.split.lowres[s][idx_sorted[inv[pos]]])),
            )
            for s, pos in positions.items()
            if len(pos)
        }

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
