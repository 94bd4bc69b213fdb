"""Training tasks: what one batch means for each command.

A task turns a batch (already on the device, see runtime.to_device) into a dict {"loss", "logits", ...every
loss part}; the training loop logs every scalar in it and knows nothing about distillation. The model
does its own preprocessing (uint8 -> float, resize to its working size, normalise), so a task only picks
which faces each model sees: the HR faces, or the mixed-size low-resolution groups.
"""

from __future__ import annotations

import torch
from torch import nn

from gmenet_cli.data.augment import downsample
from gmenet_cli.losses import ASKDLoss, ClassificationLoss, logit_kd


class ClassifierTask(nn.Module):
    """Plain supervised training of one model on one view: "hr" (a teacher) or "lowres" (the CE-only
    student baseline)."""

    def __init__(self, model: nn.Module, loss: ClassificationLoss, view: str = "hr"):
        super().__init__()
        if view not in ("hr", "lowres"):
            raise ValueError(f"view must be hr or lowres, got {view!r}")
        self.model, self.loss, self.view = model, loss, view

    @property
    def core(self) -> nn.Module:
        """The bare model (the one checkpoints store), also when `model` is wrapped by DDP or torch.compile."""
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile
        return getattr(model, "module", model)  # DDP

    def forward(self, batch: dict) -> dict:
        logits = self.model(batch[self.view])
        ce = self.loss(logits, batch)
        return {"loss": ce, "ce": ce.detach(), "logits": logits}


class ReadsAt(nn.Module):
    """A frozen teacher that reads each HR face area-downsampled by `scale` and rounded to 8-bit levels, as
    the students' LR faces are made (augment.downsample), then upsampled by the teacher's own preprocessing:
    a teacher assistant (Mirzadeh et al., AAAI 2020), e.g. the 24 px model teaching a 12 px student
    (distill.teacher_scale). Part of the teacher's graph, so it runs wherever the teacher runs (onnxruntime
    included) and the int8 teacher is calibrated on HR faces as before."""

    def __init__(self, teacher: nn.Module, scale: int):
        super().__init__()
        self.teacher, self.scale = teacher, int(scale)

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.teacher(downsample(x, self.scale), return_maps=return_maps)


class DistillTask(ClassifierTask):
    """GME-Net student on low-resolution faces + the frozen HR teacher: CE + A-SKD (+ optional logit KD).
    With `teacher_scale` > 1 the teacher reads the faces downsampled by that factor (ReadsAt)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: ClassificationLoss, askd: ASKDLoss,
                 kd_weight: float = 0.0, kd_temperature: float = 4.0, fuse_teacher: bool = True,
                 teacher_runtime: str = "torch", teacher_calibration: torch.Tensor | None = None,
                 teacher_scale: int = 1):
        super().__init__(student, loss, view="lowres")
        from gmenet_cli.models.fuse import fuse_batchnorm

        if teacher_scale > 1:
            teacher = ReadsAt(teacher, teacher_scale)
        # Frozen: BN folded into its convolutions (the same outputs, one layer instead of two), no gradients.
        teacher = fuse_batchnorm(teacher) if fuse_teacher else teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if teacher_runtime.startswith("onnxruntime"):  # the forward in onnxruntime's CPU kernels (faster here)
            from gmenet_cli.training.ort_teacher import OrtTeacher

            teacher = OrtTeacher(teacher, int8=teacher_runtime == "onnxruntime-int8", calibration=teacher_calibration)
        self.teacher, self.teacher_runtime = teacher, teacher_runtime
        self.askd, self.kd_weight, self.kd_temperature = askd, kd_weight, kd_temperature

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BN statistics and dropout stay in eval mode
        return self

    def forward(self, batch: dict) -> dict:
        logits, s_maps = self.model(batch["lowres"], return_maps=True)
        ce = self.loss(logits, batch)
        if self.teacher_runtime == "torch":
            with torch.inference_mode():  # no autograd bookkeeping at all for the teacher's forward
                t_logits, t_maps = self.teacher(batch["hr"], return_maps=True)
            # inference tensors cannot be saved for backward, which the losses do with their targets: copies
            t_logits, t_maps = t_logits.clone(), [(c.clone(), s.clone()) for c, s in t_maps]
        else:  # onnxruntime: plain tensors made from its outputs, outside autograd by construction
            t_logits, t_maps = self.teacher(batch["hr"], return_maps=True)
        askd, parts = self.askd(s_maps, t_maps)
        total = ce + askd
        out = {"ce": ce.detach(), "logits": logits, "askd": askd.detach(), **parts}
        if self.kd_weight > 0:
            kd = logit_kd(logits, t_logits, self.kd_temperature)
            total = total + self.kd_weight * kd
            out["kd"] = kd.detach()
        out["loss"] = total
        return out

    @torch.no_grad()
    def check_pairing(self, channels: int, size: int) -> None:
        """Fail before the first epoch, not after it, if the teacher's maps do not pair with the student's."""
        probe = torch.zeros(2, channels, size, size, device=next(self.core.parameters()).device)
        was_training = self.core.training
        _, s_maps = self.core.eval()(probe, return_maps=True)
        self.core.train(was_training)
        self.askd(s_maps, self.teacher(probe, return_maps=True)[1])
