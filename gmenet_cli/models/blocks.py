"""Building blocks: hybrid (channel + spatial) attention, attention residual blocks, mixed-channel blocks.

Attention modules return their map *before* the sigmoid: that is what A-SKD distils (Shin et al., ECCV
2022, "Teaching Where to Look"). Blocks return `(features, (channel_map, spatial_map))` explicitly, so the
teacher/student pairing is a visible contract rather than a forward hook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a stride-1 "same" convolution (padding = dilation * (kernel // 2)), with the kernel cut
    to the taps a map of x's size can reach: on a 3x3 map a 7x7 kernel's outer ring only ever multiplies
    padding zeros, and a dilation-4 3x3 kernel is its centre alone. The same sums without the zero terms
    (the cut taps' gradients are zero either way); on small maps the CPU's depthwise convolutions, forward
    and backward, cost about their kernel area (measured: BENCHMARKS.md, training step)."""
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return conv(x)  # exported graphs keep the whole kernel: their spatial size may be left open
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    ch, cw = kh // 2, kw // 2
    rh, rw = min(ch, (x.shape[-2] - 1) // dh), min(cw, (x.shape[-1] - 1) // dw)
    if (rh, rw) == (ch, cw):
        return conv(x)
    weight = conv.weight[:, :, ch - rh : ch + rh + 1, cw - rw : cw + rw + 1]
    return F.conv2d(x, weight, conv.bias, 1, (dh * rh, dw * rw), conv.dilation, conv.groups)


class ChannelAttention(nn.Module):
    """CBAM channel attention: shared MLP over average- and max-pooled features.

    (B, C, H, W) -> pre-sigmoid logits (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)  # plain reductions (not adaptive pools) export to ONNX cleanly
        mx = x.amax(dim=(2, 3), keepdim=True)
        return self.mlp(avg) + self.mlp(mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a k x k conv over the channel-mean and channel-max maps.

    (B, C, H, W) -> pre-sigmoid logits (B, 1, H, W)."""

    def __init__(self, channels: int, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.bn(same_conv(self.conv, pooled))


class DepthwiseSpatialAttention(nn.Module):
    """Depthwise block attention (our reading of the paper's DBAM): a depthwise k x k conv sees every
    channel's own neighbourhood, a 1x1 conv then weighs the channels into one map. Unlike CBAM's
    mean/max summary, each channel contributes with a learned weight at a cost of C*k*k + C parameters.

    (B, C, H, W) -> pre-sigmoid logits (B, 1, H, W)."""

    def __init__(self, channels: int, kernel: int = 7):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
        self.bn_dw = nn.BatchNorm2d(channels)
        self.pw = nn.Conv2d(channels, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(F.relu(self.bn_dw(same_conv(self.dw, x)))))


SPATIAL = {"standard": SpatialAttention, "depthwise": DepthwiseSpatialAttention}


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class AttentionBlock(nn.Module):
    """Residual basic block with hybrid attention: conv-conv -> channel attention -> spatial attention
    -> + shortcut. The teacher uses `spatial="standard"` (CBAM); GME-Net's Mixed-Attention Block uses
    `spatial="depthwise"`. Same stride/width -> same map shapes, which is what lets A-SKD pair them.

    (B, Cin, H, W) -> (B, Cout, H/stride, W/stride), maps ((B, Cout, 1, 1), (B, 1, H/stride, W/stride))."""

    def __init__(self, cin: int, cout: int, stride: int = 1, spatial: str = "standard", kernel: int = 7):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.channel = ChannelAttention(cout)
        self.spatial = SPATIAL[spatial](cout, kernel)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor):
        out = self.conv2(F.relu(self.conv1(x)))
        c_map = self.channel(out)
        out = out * torch.sigmoid(c_map)
        s_map = self.spatial(out)
        out = out * torch.sigmoid(s_map)
        return F.relu(out + self.shortcut(x)), (c_map, s_map)


class AttentionStage(nn.Module):
    """VGG-style stage with hybrid attention: conv3x3 (stride) -> BN -> ReLU -> conv3x3 -> BN -> ReLU ->
    channel attention -> spatial attention (CBAM order, as A-SKD). Without the attention (`attention=False`)
    it is the plain-CNN stage of the baseline in docs/method.md; the attention adds the maps A-SKD needs at
    almost no cost.

    (B, Cin, H, W) -> (B, Cout, H/stride, W/stride), maps ((B, Cout, 1, 1), (B, 1, H/stride, W/stride)) or None."""

    def __init__(self, cin: int, cout: int, stride: int = 1, spatial: str = "standard", kernel: int = 7,
                 attention: bool = True):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.channel = ChannelAttention(cout) if attention else None
        self.spatial = SPATIAL[spatial](cout, kernel) if attention else None

    def forward(self, x: torch.Tensor):
        out = F.relu(self.conv2(F.relu(self.conv1(x))))
        if self.channel is None:
            return out, None
        c_map = self.channel(out)
        out = out * torch.sigmoid(c_map)
        s_map = self.spatial(out)
        return out * torch.sigmoid(s_map), (c_map, s_map)


class MixedChannelBlock(nn.Module):
    """Mixed-Channel Feature Extraction Block: the channels are split into groups, each group gets a
    depthwise 3x3 conv at its own dilation (receptive fields 3, 5, 7, 9 px for dilations 1..4), then a
    1x1 conv mixes the groups. Large receptive fields at depthwise cost bring global context; averaging
    over wide neighbourhoods damps isolated noisy LR pixels. Residual.

    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        g = len(dilations)
        sizes = [channels // g + (1 if i < channels % g else 0) for i in range(g)]
        self.sizes = sizes
        self.branches = nn.ModuleList(
            nn.Conv2d(n, n, 3, padding=d, dilation=d, groups=n, bias=False) for n, d in zip(sizes, dilations)
        )
        self.bn = nn.BatchNorm2d(channels)
        self.mix = conv_bn(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.sizes, dim=1)
        y = torch.cat([same_conv(branch, p) for branch, p in zip(self.branches, parts)], dim=1)
        y = self.mix(F.relu(self.bn(y)))
        return F.relu(x + y)
