"""The optimiser and the per-step learning-rate schedule, both from the config."""

from __future__ import annotations

import math

import torch

from gmenet_cli.config import Config

MOMENTUM_SWING = 0.05  # onecycle + SGD: momentum moves within optim.momentum +- this, against the learning rate


def peak_lr(cfg: Config, world: int = 1) -> float:
    """`optim.lr` is the peak learning rate at a global batch of `optim.base_batch`; larger batches scale it
    (`auto`: linearly for SGD as in Goyal et al. 2017, by the square root for AdamW, whose update is already
    normalised per parameter, as in Granziol et al. 2022), so `--batch-size 1024` on a GPU trains with the
    same recipe without hand-tuning the rate."""
    ratio = cfg.train.batch_size * world / max(cfg.optim.base_batch, 1)
    rule = cfg.optim.scale_lr
    if rule == "auto":
        rule = "linear" if cfg.optim.name == "sgd" else "sqrt"
    if rule == "linear":
        return cfg.optim.lr * ratio
    if rule == "sqrt":
        return cfg.optim.lr * math.sqrt(ratio)
    return cfg.optim.lr


def build_optimizer(model: torch.nn.Module, cfg: Config, world: int = 1) -> torch.optim.Optimizer:
    """Weight decay on weights only; BN parameters and biases (ndim <= 1) are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = peak_lr(cfg, world)
    if cfg.optim.name == "sgd":
        m = cfg.optim.momentum  # Nesterov needs momentum: momentum 0 is plain SGD
        return torch.optim.SGD(groups, lr=lr, momentum=m, nesterov=cfg.optim.nesterov and m > 0)
    return torch.optim.AdamW(groups, lr=lr)


def build_schedule(opt: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    """Stepped per batch. onecycle: torch's OneCycleLR (Smith & Topin 2019: cosine up for `pct_start` of the
    steps from peak/25, then cosine down to peak/1e4), with the momentum cycled inversely within
    `optim.momentum` +- MOMENTUM_SWING for SGD (0.85-0.95 for 0.9, torch's own default range) and Adam's
    beta1 over torch's 0.85-0.95 for AdamW; otherwise linear warm-up from 1% of the peak, then cosine to 1%
    (or step decays, or constant)."""
    total = cfg.train.epochs * steps_per_epoch
    if cfg.optim.schedule == "onecycle":
        momentum = {}
        if cfg.optim.name == "sgd":
            m = cfg.optim.momentum
            momentum = {"cycle_momentum": m > 0, "base_momentum": max(0.0, m - MOMENTUM_SWING),
                        "max_momentum": min(0.999, m + MOMENTUM_SWING)}
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
                                                   pct_start=cfg.optim.pct_start, **momentum)
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
