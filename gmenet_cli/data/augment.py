"""On-the-fly augmentation and low-resolution synthesis, run on the training device.

The loader draws each sample's random parameters on the host (seeded by seed, epoch and rank, so a run is
the same on any device and after a resume): one affine warp (flip, rotation, zoom, shift), an optional
erasing box and the LR scale. On the device, `make_views` then turns the uint8 HR batch into

- `hr`: the augmented HR faces, float in [0, 1] (what the teacher sees);
- `lowres`: for a student, each augmented HR face area-downsampled by its scale and rounded to 8 bits,
  like the prepared LR bytes, grouped by scale: {scale: (positions, faces)}.

Because the LR face is made from the *same* augmented HR face, a teacher/student pair is aligned to the
sub-pixel, and the student sees a new LR image every epoch. Only torch here (no OpenCV).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def draw(rng: np.random.Generator, n: int, size: int, flip: bool, shift: float, scale: float, rotate: float,
         erase: float, scales: list[int]) -> dict:
    """Random parameters for `n` samples of `size` px faces, as CPU tensors (pinned with the batch).

    theta (n, 2, 3): affine_grid matrices (output -> input coordinates, normalised to [-1, 1]);
    erase (n, 5): box y0, y1, x0, x1 in pixels (empty when y0 == y1) and its grey level in [0, 1];
    positions {scale: (b,)}: which samples get which of the student's LR scales (one drawn per sample).
    Groups are formed here, on the host, so the device never waits to learn their sizes."""
    angle = rng.uniform(-rotate, rotate, n) * math.pi / 180 if rotate > 0 else np.zeros(n)
    zoom = 1 + rng.uniform(-scale, scale, n) if scale > 0 else np.ones(n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0) if flip else np.ones(n)
    # A shift of k pixels moves the sampling grid by 2k/size in normalised coordinates (align_corners=False).
    offset = rng.uniform(-shift, shift, (n, 2)) * 2 / size if shift > 0 else np.zeros((n, 2))
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * mirror, -sin, offset[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * mirror, cos, offset[:, 1]
    boxes = np.zeros((n, 5), dtype=np.float32)
    if erase > 0:
        hit = rng.random(n) < erase
        area = rng.uniform(0.02, 0.2, n) * size * size
        aspect = np.exp(rng.uniform(-math.log(3), math.log(3), n))
        h = np.clip(np.round(np.sqrt(area * aspect)), 1, size - 1)
        w = np.clip(np.round(np.sqrt(area / aspect)), 1, size - 1)
        y0 = np.floor(rng.random(n) * (size - h + 1))
        x0 = np.floor(rng.random(n) * (size - w + 1))
        grey = rng.random(n)
        boxes[hit] = np.stack([y0, y0 + h, x0, x0 + w, grey], 1)[hit]
    pick = rng.integers(0, max(len(scales), 1), n)
    positions = {s: torch.from_numpy(np.nonzero(pick == k)[0]) for k, s in enumerate(scales)}
    return {"theta": torch.from_numpy(theta), "erase": torch.from_numpy(boxes),
            "positions": {s: p for s, p in positions.items() if len(p)}}


def warp(hr: torch.Tensor, params: dict) -> torch.Tensor:
    """(B, C, H, W) uint8 or [0, 1] float -> augmented float faces in [0, 1] (border pixels extend outwards)."""
    x = hr.float().div(255.0) if hr.dtype == torch.uint8 else hr.float()
    theta = params["theta"].to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    boxes = params["erase"]
    H, W = x.shape[-2:]
    ys = torch.arange(H, device=x.device, dtype=boxes.dtype).view(1, H, 1)
    xs = torch.arange(W, device=x.device, dtype=boxes.dtype).view(1, 1, W)
    inside = ((ys >= boxes[:, 0, None, None]) & (ys < boxes[:, 1, None, None])
              & (xs >= boxes[:, 2, None, None]) & (xs < boxes[:, 3, None, None]))  # (B, H, W); empty boxes: none
    return torch.where(inside[:, None], boxes[:, 4, None, None, None].to(x.dtype), x)


def downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Area downsampling by an integer factor (the mean of each scale x scale block, as OpenCV's INTER_AREA
    does for integer factors), rounded to 8-bit levels like a stored face. [0, 1] float in and out."""
    return torch.round(F.avg_pool2d(hr, scale) * 255.0) / 255.0


def make_views(batch: dict, student: bool) -> dict:
    """Replace the batch's uint8 `hr` by its augmented float version and, for a student, add `lowres`
    groups degraded from it. The batch is already on the device."""
    params = batch.pop("augment")
    hr = warp(batch["hr"], params)
    out = {**batch, "hr": hr}
    if student:
        out["lowres"] = {s: (pos, downsample(hr[pos], s)) for s, pos in params["positions"].items()}
    return out
