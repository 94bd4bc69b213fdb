"""The optimiser and the per-step learning-rate schedule, both from the config."""

from __future__ import annotations

import math

import torch

from gmenet_cli.config import Config


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Weight decay on weights only; BN parameters and biases (ndim <= 1) are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def build_schedule(opt: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    """Linear warm-up from 1% of the peak, then cosine to 1% (or step decays, or constant); stepped per batch."""
    total = cfg.train.epochs * steps_per_epoch
    warm = int(cfg.optim.warmup_epochs * steps_per_epoch)
    milestones = [m * steps_per_epoch for m in cfg.optim.step_epochs]

    def factor(step: int) -> float:
        if step < warm:
            return 0.01 + 0.99 * step / max(1, warm)
        if cfg.optim.schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.optim.schedule == "step":
            return 0.1 ** sum(step >= m for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
