"""An exponential moving average of the weights (and BN statistics): validated and saved in place of the
raw weights when `train.ema` > 0.

Decay warms up as TensorFlow's tf.train.ExponentialMovingAverage does with `num_updates`:
min(decay, (1 + n) / (10 + n)) after n updates, so the average does not carry the first, random weights
for long. The update is a handful of fused lerps on the device with a
host-side counter: unlike torch.optim.swa_utils.AveragedModel, whose `if n_averaged == 0` reads a device
tensor, it never makes the host wait for the GPU.
"""

from __future__ import annotations

import copy

import torch


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_f, new_f = [], []
        for ema_t, new_t in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_t.is_floating_point():
                ema_f.append(ema_t)
                new_f.append(new_t.detach())
            else:
                ema_t.copy_(new_t)  # BN's num_batches_tracked
        torch._foreach_lerp_(ema_f, new_f, 1.0 - d)

    def to(self, *args, **kwargs) -> "WeightEMA":
        self.module.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
