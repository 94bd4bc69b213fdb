"""What every gmenet model shares: input preprocessing and the stem + attention-stage backbone.

Preprocessing lives *inside* the model so a prepared LR pair, a real tiny face crop, an exported ONNX
graph and a checkpoint reloaded months later all take the same path: uint8 or [0, 1] float in any size
-> resized to the working size (bicubic up by default, antialiased down) -> normalised. A training batch
that mixes face sizes (one LR scale drawn per sample) comes in as groups and takes the same path.
"""

from __future__ import annotations

from typing import Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from gmenet_cli.models.blocks import AttentionBlock, AttentionStage, conv_bn

# One face size per tensor, or a batch that mixes sizes: {scale: (positions (b,), faces (b, C, h, w))}.
Faces = Union[torch.Tensor, Mapping[int, tuple]]


def conv_out(size: int, stride: int) -> int:
    """Side of a 3x3, padding 1 convolution's output: what every strided layer here does to a map."""
    return (size - 1) // stride + 1


class FERModel(nn.Module):
    """Base: `forward(x, return_maps=False)` -> logits (B, K), or (logits, [(c_map, s_map), ...])."""

    def __init__(self, in_chans: int, num_classes: int, input_size: int, upsample: str = "bicubic",
                 mean: float = 0.5, std: float = 0.25):
        super().__init__()
        if upsample not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"upsample must be bicubic, bilinear or nearest, got {upsample!r}")
        self.in_chans, self.num_classes, self.input_size, self.upsample = in_chans, num_classes, input_size, upsample
        self.register_buffer("mean", torch.full((1, in_chans, 1, 1), float(mean)), persistent=False)
        self.register_buffer("std", torch.full((1, in_chans, 1, 1), float(std)), persistent=False)

    def preprocess(self, x: Faces) -> torch.Tensor:
        """(B, C, h, w) uint8 or float in [0, 1], or mixed-size groups -> (B, C, S, S) normalised float."""
        if not torch.is_tensor(x):
            return self._preprocess_groups(x)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        x = self.resize(x)
        return (x - self.mean) / self.std

    def _preprocess_groups(self, groups: Mapping[int, tuple]) -> torch.Tensor:
        """Each group resized on its own, then scattered back to its samples' places in the batch."""
        total = sum(len(pos) for pos, _ in groups.values())
        out = None
        for pos, faces in groups.values():
            x = self.preprocess(faces)
            if out is None:
                out = x.new_empty((total, *x.shape[1:]))
            out[pos] = x
        return out

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if x.shape[-2:] == (size, size):
            return x
        if x.shape[-1] > size:  # a face larger than the working size: antialiased shrink
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if self.upsample == "nearest":
            return F.interpolate(x, size=(size, size), mode="nearest")
        # bicubic overshoots: clamp back to the valid range of the [0, 1] input.
        return F.interpolate(x, size=(size, size), mode=self.upsample, align_corners=False).clamp(0.0, 1.0)


class AttentionBackbone(nn.Module):
    """Stem + stages of attention blocks; returns the last feature map and every block's maps.

    (B, C, S, S) -> (B, widths[-1], S/stride_total, S/stride_total), [(c, s)] * sum(depths)."""

    def __init__(self, in_chans: int, widths: tuple, depths: tuple, stem_stride: int, spatial: str, kernel: int = 7):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError("widths and depths must have the same length")
        self.stem = nn.Sequential(conv_bn(in_chans, widths[0], 3, stem_stride), nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                # First stage keeps the stem's resolution; each later stage halves it.
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(AttentionBlock(cin, w, stride, spatial, kernel))
                cin = w
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin
        self.stem_stride, self.n_stages = stem_stride, len(widths)

    def sizes(self, input_size: int) -> tuple[int, int]:
        """(stem side, last stage side) for a square input: Python constants, so exports stay static."""
        stem = conv_out(input_size, self.stem_stride)
        last = stem
        for _ in range(self.n_stages - 1):
            last = conv_out(last, 2)
        return stem, last

    def forward(self, x: torch.Tensor):
        stem = self.stem(x)
        maps = []
        out = stem
        for block in self.blocks:
            out, m = block(out)
            maps.append(m)
        return stem, out, maps


class StageBackbone(nn.Module):
    """VGG-style stages of attention (`AttentionStage`): the first at the input's resolution, each later one
    halving it. Same interface as AttentionBackbone: forward -> (first stage's output, which the GME-Net
    global branch reads; last feature map; every stage's maps).

    (B, C, S, S) -> (B, widths[0], S, S), (B, widths[-1], S/2^(n-1), ...), [(c, s)] * len(widths) (or [])."""

    def __init__(self, in_chans: int, widths: tuple, spatial: str, kernel: int = 7, attention: bool = True):
        super().__init__()
        stages, cin = [], in_chans
        for i, w in enumerate(widths):
            stages.append(AttentionStage(cin, w, 1 if i == 0 else 2, spatial, kernel, attention))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin

    def sizes(self, input_size: int) -> tuple[int, int]:
        """(first stage side, last stage side) for a square input."""
        last = input_size
        for _ in range(len(self.stages) - 1):
            last = conv_out(last, 2)
        return input_size, last

    def forward(self, x: torch.Tensor):
        maps, first = [], None
        for stage in self.stages:
            x, m = stage(x)
            first = x if first is None else first
            if m is not None:
                maps.append(m)
        return first, x, maps


def make_backbone(layout: str, in_chans: int, widths: tuple, depths: tuple, stem_stride: int, spatial: str,
                  attention: bool = True):
    """`layout` "resnet": stem + residual attention blocks (teacher_s, gmenet_s); "vgg": plain conv stages
    with attention (teacher_s2, gmenet_s2)."""
    if layout == "vgg":
        return StageBackbone(in_chans, tuple(widths), spatial, attention=attention)
    if layout != "resnet":
        raise ValueError(f"layout must be resnet or vgg, got {layout!r}")
    if not attention:
        raise ValueError("attention=False needs layout vgg")
    return AttentionBackbone(in_chans, tuple(widths), tuple(depths), stem_stride, spatial)
