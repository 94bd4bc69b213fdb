"""Losses: classification (hard or soft labels), A-SKD and logit KD. Torch only: no data or OpenCV imports.

A-SKD (Shin et al., ECCV 2022): for every paired block, the student's pre-sigmoid channel map (B, C, 1, 1)
and spatial map (B, 1, H, W) are pulled towards the frozen teacher's with `1 - cos(flatten(s), flatten(t))`
averaged over the batch; each map's term is weighted by lambda (5 in that work) and the terms summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmenet_cli.errors import UsageError


def map_similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cosine(flatten(student_i), flatten(teacher_i)); 0 iff maps align."""
    s = student.flatten(1).float()
    t = teacher.flatten(1).float()
    return (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


PAIRING_HINT = "use a teacher of the same size letter (gmenet_s pairs with teacher_s, gmenet_s2 with teacher_s2)"


def check_pairing(student_maps, teacher_maps) -> None:
    """Channel maps must have equal shapes; a teacher's spatial map may be larger than the student's (a
    student working at half the teacher's size): it is then average-pooled to the student's size."""
    if len(student_maps) != len(teacher_maps):
        raise UsageError(f"student has {len(student_maps)} attention blocks, teacher has {len(teacher_maps)}: "
                         + PAIRING_HINT)
    for i, ((sc, ss), (tc, ts)) in enumerate(zip(student_maps, teacher_maps)):
        if (
            sc.shape != tc.shape
            or ss.shape[:2] != ts.shape[:2]
            or any(a > b for a, b in zip(ss.shape[2:], ts.shape[2:]))
        ):
            raise UsageError(
                f"attention maps of block {i} differ: student {tuple(sc.shape)}/{tuple(ss.shape)} vs "
                f"teacher {tuple(tc.shape)}/{tuple(ts.shape)}; " + PAIRING_HINT
            )


def pool_to(teacher_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A teacher's spatial map (B, 1, H, W) averaged down to the student's (B, 1, h, w), h <= H: exactly a
    k x k mean when H = k h, overlapping windows otherwise (adaptive pooling)."""
    if teacher_map.shape[-2:] == like.shape[-2:]:
        return teacher_map
    return F.adaptive_avg_pool2d(teacher_map, like.shape[-2:])


class ASKDLoss(nn.Module):
    """Sum over blocks and map kinds of weight * (1 - cos). Returns (total, {"askd_channel", "askd_spatial"})."""

    def __init__(self, weight: float = 5.0, maps: str = "both"):
        super().__init__()
        self.weight, self.maps = weight, maps  # maps: both | channel | spatial (config.validate checks it)

    def forward(self, student_maps, teacher_maps):
        check_pairing(student_maps, teacher_maps)
        zero = student_maps[0][0].new_zeros(())
        channel, spatial = zero, zero
        for (sc, ss), (tc, ts) in zip(student_maps, teacher_maps):
            if self.maps in ("both", "channel"):
                channel = channel + map_similarity_loss(sc, tc.detach())
            if self.maps in ("both", "spatial"):
                spatial = spatial + map_similarity_loss(ss, pool_to(ts.detach(), ss))
        total = self.weight * (channel + spatial)
        return total, {"askd_channel": channel.detach(), "askd_spatial": spatial.detach()}


class ClassificationLoss(nn.Module):
    """Cross-entropy on hard labels or on probability (vote distribution) targets, optional label smoothing,
    optional logit adjustment.

    Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021, eq. 10): the loss
    is taken on `logits + tau * log(prior)`, so the raw logits the model outputs (what evaluate and predict
    read) estimate the class-balanced posterior. A frequent class ("neutral", 36% of FERPlus) then no
    longer wins every ambiguous face, and rare ones (disgust, contempt: under 1%) get a margin that grows
    with their rarity. tau = 0 is plain cross-entropy; tau = 1 is the balanced softmax."""

    def __init__(self, label_smoothing: float = 0.0, soft: bool = False, prior=None, tau: float = 0.0,
                 drw: float = 0.0, train_size: int = 0, majority_mix: float = 0.0):
        super().__init__()
        self.label_smoothing, self.soft, self.tau, self.drw = label_smoothing, soft, tau, drw
        self.majority_mix = majority_mix  # soft targets only: the majority label's share of each target
        if (tau or drw) and prior is None:
            raise UsageError("train.logit_adjust and train.drw need the class prior of the training split")
        shift = torch.zeros(0) if not tau else tau * torch.log(torch.as_tensor(prior, dtype=torch.float32))
        self.register_buffer("shift", shift, persistent=False)  # (K,) tau * log(prior); empty when off
        weight = torch.zeros(0) if not drw else class_balanced_weights(prior, train_size)
        self.register_buffer("class_weight", weight, persistent=False)  # (K,); used once set_epoch turns it on
        self.reweight = False

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Deferred re-weighting (train.drw): the class-balanced weights apply from epoch int(drw * epochs) on
        (0-based), so the features are learnt on the natural distribution first (Cao et al., NeurIPS 2019)."""
        self.reweight = bool(self.drw) and epoch >= int(self.drw * epochs)

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = logits.float()
        if self.shift.numel():
            logits = logits + self.shift
        if self.soft:
            if "votes" not in batch:
                raise UsageError(
                    "train.soft_labels needs vote distributions; this store has none (only FERPlus has crowd votes)"
                )
            target = batch["votes"]  # F.cross_entropy takes probability targets (and smooths them the same way)
            if self.majority_mix:
                hard = F.one_hot(batch["target"], target.shape[1]).to(target.dtype)
                target = torch.lerp(target, hard, self.majority_mix)
        else:
            target = batch["target"]
        if "mix" in batch:  # mixup: the loss of the mixed face is the same mix of its two faces' losses
            perm, lam = batch["mix"]
            return lam * self._loss(logits, target) + (1 - lam) * self._loss(logits, target[perm])
        return self._loss(logits, target)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.reweight:
            return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        # per face: the weight of its class (of its vote distribution's classes, weighted by the votes), so
        # hard and soft targets are normalised alike (F.cross_entropy's weight= would divide them differently)
        per_face = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction="none")
        w = target.float() @ self.class_weight if target.is_floating_point() else self.class_weight[target]
        return (w * per_face).mean()


def class_prior(split, num_classes: int, soft: bool, floor: float = 1e-4, majority_mix: float = 0.0) -> list[float]:
    """The training split's class frequencies: the mean of the targets the loss sees (the mean vote
    distribution with soft targets, mixed with the majority labels' frequencies by `majority_mix`), floored
    so that a class without faces gets a finite log-prior. (K,) floats summing to 1."""
    import numpy as np

    p = np.bincount(np.asarray(split.labels), minlength=num_classes).astype(np.float64)
    p /= max(p.sum(), 1e-12)
    if soft and split.votes is not None:
        votes = np.asarray(split.votes, dtype=np.float64).mean(0)
        p = (1 - majority_mix) * votes / max(votes.sum(), 1e-12) + majority_mix * p
    p = np.maximum(p / max(p.sum(), 1e-12), floor)
    return (p / p.sum()).tolist()


def class_balanced_weights(prior, train_size: int, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced loss weights (Cui et al., CVPR 2019): (1 - beta) / (1 - beta ** n_k) for the n_k = prior_k
    x train_size faces of class k, scaled so that their mean over the training faces is 1 (the loss keeps its
    scale, and so the learning rate its meaning). (K,) float32."""
    p = torch.as_tensor(prior, dtype=torch.float64)
    n = (p * max(train_size, 1)).clamp_min(1.0)
    w = (1 - beta) / (1 - beta**n)
    return (w / (p * w).sum()).float()


def logit_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T))."""
    t = temperature
    return (
        F.kl_div(F.log_softmax(student.float() / t, 1), F.softmax(teacher.float() / t, 1), reduction="batchmean")
        * t
        * t
    )
