"""On-the-fly augmentation and low-resolution synthesis, run on the training device.

The loader draws each sample's random parameters on the host (seeded by seed, epoch and rank, so a run is
the same on any device and after a resume): one affine warp (flip, rotation, zoom, shift), an optional
erasing box and the LR scale. On the device, `make_views` then turns the uint8 HR batch into

- `hr`: the augmented HR faces, float in [0, 1] (what the teacher sees);
- `lowres`: for a student, each augmented HR face area-downsampled by its scale and rounded to 8 bits,
  like the prepared LR bytes, grouped by scale: {scale: (positions, faces)}.

Because the LR face is made from the *same* augmented HR face, a teacher/student pair is aligned to the
sub-pixel, and the student sees a new LR image every epoch. A store prepared with its own degradation
(blur, noise, JPEG, another resampling) keeps its LR bytes instead: they get the same warp, in normalised
coordinates, so the pair stays aligned and the recipe (rotation, zoom, ...) is the same either way.
Only torch here (no OpenCV).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def draw(rng: np.random.Generator, n: int, size: int, flip: bool, shift: float, scale: float, rotate: float,
         erase: float, scales: list[int], brightness: float = 0.0, contrast: float = 0.0, gamma: float = 0.0,
         blur: float = 0.0, noise: float = 0.0, mixup: float = 0.0) -> dict:
    """Random parameters for `n` samples of `size` px faces, as CPU tensors (pinned with the batch).

    theta (n, 2, 3): affine_grid matrices (output -> input coordinates, normalised to [-1, 1]);
    erase (n, 5): box y0, y1, x0, x1 in pixels (empty when y0 == y1) and its grey level in [0, 1];
    positions {scale: (b,)}: which samples get which of the student's LR scales (one drawn per sample);
    only when enabled: photo (n, 3) brightness offset, contrast factor, gamma; blur (n,) sigma in HR pixels
    (0 = none); noise (n,) std in [0, 1] units and noise_field (n, 1, size, size) standard normal draws;
    mix_lam () and mix_perm (n,): mixup's weight, Beta(mixup, mixup), one per batch, and each sample's
    partner, drawn within its LR-scale group so that a student's mixed LR face is the mix of its mixed HR face.
    Groups are formed here, on the host, so the device never waits to learn their sizes. Parameters that
    are off draw nothing, so a recipe without them keeps the random stream it had before they existed."""
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
    out = {"theta": torch.from_numpy(theta), "erase": torch.from_numpy(boxes),
           "positions": {s: p for s, p in positions.items() if len(p)}}
    if brightness > 0 or contrast > 0 or gamma > 0:
        photo = np.zeros((n, 3), dtype=np.float32)
        photo[:, 0] = rng.uniform(-brightness, brightness, n) if brightness > 0 else 0.0
        photo[:, 1] = 1 + rng.uniform(-contrast, contrast, n) if contrast > 0 else 1.0
        photo[:, 2] = np.exp(rng.uniform(-1, 1, n) * math.log1p(gamma)) if gamma > 0 else 1.0
        out["photo"] = torch.from_numpy(photo)
    if blur > 0:
        sigma = np.where(rng.random(n) < blur, rng.uniform(0.3, 1.5, n), 0.0).astype(np.float32)
        out["blur"] = torch.from_numpy(sigma)
    if noise > 0:
        out["noise"] = torch.from_numpy(rng.uniform(0, noise / 255.0, n).astype(np.float32))
        out["noise_field"] = torch.from_numpy(rng.standard_normal((n, 1, size, size), dtype=np.float32))
    if mixup > 0:
        perm = np.arange(n)
        for p in out["positions"].values() if scales else [np.arange(n)]:
            p = np.asarray(p)
            perm[p] = p[rng.permutation(len(p))]
        out["mix_lam"] = torch.tensor(float(rng.beta(mixup, mixup)), dtype=torch.float32)
        out["mix_perm"] = torch.from_numpy(perm)
    return out


def mix(x: torch.Tensor, params: dict, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Mixup of a view: lam * x + (1 - lam) * its partners' x. `positions`: the samples a group view holds
    (their partners are in the same group, see `draw`). Unchanged without mixup."""
    if "mix_lam" not in params:
        return x
    lam, perm = params["mix_lam"].to(x.dtype), params["mix_perm"]
    if positions is not None:  # partners as indices into the group
        perm = torch.searchsorted(positions, perm[positions])
    return lam * x + (1 - lam) * x[perm]


BLUR_RADIUS = 3  # kernel 7 taps: covers +-2 sigma of the widest blur drawn (1.5 px)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each face of (B, C, H, W) with its own Gaussian sigma (B,) (0 = unchanged), separably, with
    replicated borders: one grouped convolution per direction for the whole batch."""
    B, C, H, W = x.shape
    taps = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (taps[None] / s) ** 2)  # (B, 7); sigma -> 0 gives a delta
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, 7)
    y = F.pad(x.reshape(1, B * C, H, W), (BLUR_RADIUS,) * 4, mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def photometric(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Gamma, contrast (about each face's mean) and brightness, then blur: [0, 1] in and out."""
    if "photo" in params:
        p = params["photo"].to(x.dtype)
        x = x.clamp(0, 1) ** p[:, 2, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * p[:, 1, None, None, None] + mean + p[:, 0, None, None, None]
        x = x.clamp(0, 1)
    if "blur" in params:
        x = gaussian_blur(x, params["blur"])
    return x


def add_noise(x: torch.Tensor, params: dict, positions=None) -> torch.Tensor:
    """Sensor noise at the view's own size (the top-left h x w of each sample's noise field)."""
    if "noise" not in params:
        return x
    std, field = params["noise"], params["noise_field"]
    if positions is not None:
        std, field = std[positions], field[positions]
    h, w = x.shape[-2:]
    return (x + std.to(x.dtype)[:, None, None, None] * field[..., :h, :w].to(x.dtype)).clamp(0, 1)


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


def downsample(hr: torch.Tensor, scale: int, params: dict | None = None, positions=None) -> torch.Tensor:
    """Area downsampling by an integer factor (the mean of each scale x scale block, as OpenCV's INTER_AREA
    does for integer factors), plus the LR view's sensor noise when drawn, rounded to 8-bit levels like a
    stored face. [0, 1] float in and out."""
    low = F.avg_pool2d(hr, scale)
    if params is not None:
        low = add_noise(low, params, positions)
    return torch.round(low * 255.0) / 255.0


def _for_lowres(params: dict, pos: torch.Tensor, scale: int) -> dict:
    """The parameters of samples `pos`, for their stored LR faces (1/scale the HR size): the same warp (theta is
    in normalised coordinates), erase box and blur in LR pixels, the same photometric change and noise."""
    out = {k: params[k][pos] for k in ("theta", "erase", "photo", "noise", "noise_field") if k in params}
    out["erase"] = torch.cat([out["erase"][:, :4] / scale, out["erase"][:, 4:]], 1)
    if "blur" in params:
        out["blur"] = params["blur"][pos] / scale
    return out


def make_views(batch: dict, student: bool) -> dict:
    """Replace the batch's uint8 `hr` by its augmented float version and, for a student, add `lowres`
    groups: degraded from the augmented HR faces, or (a batch with `stored` LR faces, from a store prepared
    with its own degradation) the stored LR faces augmented exactly like their HR face. The batch is
    already on the device."""
    params = batch.pop("augment")
    stored = batch.pop("stored", None)
    hr = mix(photometric(warp(batch["hr"], params), params), params)
    out = {**batch, "hr": add_noise(hr, params)}
    if "mix_lam" in params:  # the loss mixes the targets alike
        out["mix"] = (params["mix_perm"], params["mix_lam"])
    if student and stored is not None:
        out["lowres"] = {}
        for s, (pos, low) in stored.items():
            sub = _for_lowres(params, pos, s)
            low = mix(photometric(warp(low, sub), sub), params, pos)
            out["lowres"][s] = (pos, torch.round(add_noise(low, sub) * 255.0) / 255.0)
    elif student:
        out["lowres"] = {s: (pos, downsample(hr[pos], s, params, pos)) for s, pos in params["positions"].items()}
    return out
