"""Losses and training tasks.

A-SKD (Shin et al., ECCV 2022): for every paired block, the student's pre-sigmoid channel map (B, C, 1, 1)
and spatial map (B, 1, H, W) are pulled towards the frozen teacher's with `1 - cos(flatten(s), flatten(t))`
averaged over the batch; each map's term is weighted by lambda (5 in that work) and the terms summed.

A task turns a batch into a dict {"loss", "logits", "target", ...every loss part}; the engine logs every
scalar in it and knows nothing about distillation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmenet_cli.data.loader import assemble_lr
from gmenet_cli.errors import UsageError


def map_similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cosine(flatten(student_i), flatten(teacher_i)); 0 iff maps align."""
    s = student.flatten(1).float()
    t = teacher.flatten(1).float()
    return (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


def check_pairing(student_maps, teacher_maps) -> None:
    if len(student_maps) != len(teacher_maps):
        raise UsageError(f"student has {len(student_maps)} attention blocks, teacher has {len(teacher_maps)}: "
                         "use a teacher of the same size letter (gmenet_s pairs with teacher_s)")
    for i, ((sc, ss), (tc, ts)) in enumerate(zip(student_maps, teacher_maps)):
        if sc.shape != tc.shape or ss.shape != ts.shape:
            raise UsageError(f"attention maps of block {i} differ: student {tuple(sc.shape)}/{tuple(ss.shape)} vs "
                             f"teacher {tuple(tc.shape)}/{tuple(ts.shape)}; use a teacher of the same size letter "
                             "(gmenet_s pairs with teacher_s)")


class ASKDLoss(nn.Module):
    """Sum over blocks and map kinds of weight * (1 - cos). Returns (total, {"askd_channel", "askd_spatial"})."""

    def __init__(self, weight: float = 5.0, maps: str = "both"):
        super().__init__()
        if maps not in ("both", "channel", "spatial"):
            raise UsageError(f"distill.maps must be both, channel or spatial, got '{maps}'")
        self.weight, self.maps = weight, maps

    def forward(self, student_maps, teacher_maps):
        check_pairing(student_maps, teacher_maps)
        zero = student_maps[0][0].new_zeros(())
        channel, spatial = zero, zero
        for (sc, ss), (tc, ts) in zip(student_maps, teacher_maps):
            if self.maps in ("both", "channel"):
                channel = channel + map_similarity_loss(sc, tc.detach())
            if self.maps in ("both", "spatial"):
                spatial = spatial + map_similarity_loss(ss, ts.detach())
        total = self.weight * (channel + spatial)
        return total, {"askd_channel": channel.detach(), "askd_spatial": spatial.detach()}


class ClassificationLoss(nn.Module):
    """Cross-entropy on hard labels or on soft (vote distribution) targets, optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0, soft: bool = False):
        super().__init__()
        self.label_smoothing, self.soft = label_smoothing, soft

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.soft:
            if "votes" not in batch:
                raise UsageError("train.soft_labels needs a store prepared with --label-mode votes (FERPlus)")
            target = batch["votes"]
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / target.shape[1]
            return torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()
        return F.cross_entropy(logits.float(), batch["target"], label_smoothing=self.label_smoothing)


def logit_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T))."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.softmax(teacher.float() / t, 1), reduction="batchmean") * t * t


class ClassifierTask(nn.Module):
    """Plain supervised training of one model on one view: HR (teacher) or LR (the CE-only baseline)."""

    def __init__(self, model: nn.Module, loss: ClassificationLoss, view: str = "hr", channels_last: bool = False):
        super().__init__()
        self.model, self.loss, self.view, self.channels_last = model, loss, view, channels_last

    def inputs(self, batch: dict, device) -> torch.Tensor:
        core = self.core
        if self.view == "hr":
            x = core.resize(batch["hr"].to(device, non_blocking=True).float().div_(255.0))
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return assemble_lr(batch["lr"], core.resize, device, self.channels_last)

    @property
    def core(self) -> nn.Module:
        return getattr(self.model, "module", self.model)  # unwrap DDP

    def forward(self, batch: dict, device) -> dict:
        logits = self.model(self.inputs(batch, device))
        ce = self.loss(logits, batch)
        return {"loss": ce, "ce": ce.detach(), "logits": logits}


class DistillTask(ClassifierTask):
    """GME-Net student on LR + frozen HR teacher: CE + A-SKD (+ optional logit KD)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: ClassificationLoss, askd: ASKDLoss,
                 kd_weight: float = 0.0, kd_temperature: float = 4.0, channels_last: bool = False):
        super().__init__(student, loss, view="lr", channels_last=channels_last)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.askd, self.kd_weight, self.kd_temperature = askd, kd_weight, kd_temperature

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BN statistics and dropout stay in eval mode
        return self

    def forward(self, batch: dict, device) -> dict:
        x = self.inputs(batch, device)
        logits, s_maps = self.model(x, return_maps=True)
        ce = self.loss(logits, batch)
        out = {"ce": ce.detach(), "logits": logits}
        total = ce
        if self.training:  # validation reports the student alone; the teacher's views are training signal
            hr = self.teacher.resize(batch["hr"].to(device, non_blocking=True).float().div_(255.0))
            if self.channels_last:
                hr = hr.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                t_logits, t_maps = self.teacher(hr, return_maps=True)
            askd, parts = self.askd(s_maps, t_maps)
            total = total + askd
            out.update(parts, askd=askd.detach())
            if self.kd_weight > 0:
                kd = logit_kd(logits, t_logits, self.kd_temperature)
                total = total + self.kd_weight * kd
                out["kd"] = kd.detach()
        out["loss"] = total
        return out
