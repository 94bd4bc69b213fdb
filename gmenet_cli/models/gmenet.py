"""GME-Net student: a local branch of Mixed-Attention Blocks (distilled from the HR teacher's attention)
plus a quasi-symmetric multi-scale global branch of Mixed-Channel Feature Extraction Blocks, fused.

What the paper states: hybrid-attention local module trained with attention-similarity distillation; a
multi-scale global module with a quasi-symmetric structure. What is ours (each a constructor switch):
depthwise spatial attention (`spatial`), the encoder/decoder layout of the global branch
(`global_branch`, `global_width`, `dilations`) and how the branches meet (`fusion`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmenet_cli.models.base import Faces, FERModel, conv_out, make_backbone
from gmenet_cli.models.blocks import MixedChannelBlock, conv_bn

FUSIONS = ("concat", "gate", "sum")


class GlobalBranch(nn.Module):
    """Quasi-symmetric encoder/decoder of Mixed-Channel blocks with skip connections.

    Encoder: MC(w) @S -> down -> MC(2w) @S/2 -> down -> MC(2w) @S/4 (bottleneck).
    Decoder mirrors it: up + skip -> MC(2w) @S/2 -> up + skip -> MC(w) @S. "Quasi": the decoder reuses
    the encoder's widths but fuses skips by addition, so it is lighter than a strict mirror.

    `stride` 2 starts the branch at half the stem's resolution: global context needs no fine detail, and
    it halves the branch's cost on CPU (depthwise dilated convs are memory-bound there).

    (B, Cin, S, S) -> (B, w, S/stride, S/stride)."""

    def __init__(self, cin: int, width: int, dilations: tuple = (1, 2, 3, 4), stride: int = 2, in_size: int = 24):
        super().__init__()
        w2 = 2 * width
        # Level sizes as Python constants (3x3, pad 1, stride 2 -> (n - 1) // 2 + 1): static shapes export cleanly.
        n0 = conv_out(in_size, stride)
        n1 = conv_out(n0, 2)
        self.sizes = (n0, n1)
        self.proj = nn.Sequential(conv_bn(cin, width, 3 if stride > 1 else 1, stride), nn.ReLU(inplace=True))
        self.enc0 = MixedChannelBlock(width, dilations)
        self.down1 = nn.Sequential(conv_bn(width, w2, 3, 2), nn.ReLU(inplace=True))
        self.enc1 = MixedChannelBlock(w2, dilations)
        self.down2 = nn.Sequential(conv_bn(w2, w2, 3, 2), nn.ReLU(inplace=True))
        self.mid = MixedChannelBlock(w2, dilations)
        self.dec1 = MixedChannelBlock(w2, dilations)
        self.up0 = conv_bn(w2, width, 1)
        self.dec0 = MixedChannelBlock(width, dilations)

    @staticmethod
    def _up(x: torch.Tensor, n: int) -> torch.Tensor:
        return F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n0, n1 = self.sizes
        e0 = self.enc0(self.proj(x))  # (B, w, n0, n0), n0 = S / stride
        e1 = self.enc1(self.down1(e0))  # (B, 2w, n1, n1), n1 = n0 / 2
        m = self.mid(self.down2(e1))  # (B, 2w, n0/4, n0/4)
        d1 = self.dec1(self._up(m, n1) + e1)  # (B, 2w, n1, n1)
        return self.dec0(self.up0(self._up(d1, n0)) + e0)  # (B, w, n0, n0)


class GMENet(FERModel):
    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 8,
        input_size: int = 48,
        widths: tuple = (32, 64, 128, 256),
        depths: tuple = (1, 1, 1, 1),
        stem_stride: int = 2,
        spatial: str = "depthwise",
        global_branch: bool = True,
        global_width: int = 32,
        global_stride: int = 2,
        dilations: tuple = (1, 2, 3, 4),
        fusion: str = "concat",
        dropout: float = 0.2,
        layout: str = "resnet",
        attention: bool = True,
        **base,
    ):
        super().__init__(in_chans, num_classes, input_size, **base)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        # attention=False (layout vgg) with global_branch=False is the plain CNN of ablation row 0.
        self.local = make_backbone(layout, in_chans, widths, depths, stem_stride, spatial, attention)
        c = self.local.out_channels
        # Feature sizes are fixed (inputs are always resized to input_size first); Python constants keep the
        # global branch's resizes and the fusion pool static, which ONNX export needs.
        stem_side, local_side = self.local.sizes(input_size)
        self.local_hw = (local_side, local_side)
        self.global_branch = (GlobalBranch(widths[0], global_width, tuple(dilations), global_stride, stem_side)
                              if global_branch else None)
        self.fusion = fusion if global_branch else "none"
        if self.global_branch is not None:
            if fusion == "concat":
                self.fuse = nn.Sequential(conv_bn(c + global_width, c, 1), nn.ReLU(inplace=True))
            else:
                self.proj = conv_bn(global_width, c, 1)
                if fusion == "gate":
                    self.gate = nn.Conv2d(2 * c, c, 1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(c, num_classes)

    def _pool_to_local(self, g: torch.Tensor) -> torch.Tensor:
        n0, lh = self.global_branch.sizes[0], self.local_hw[0]
        if n0 % lh == 0:  # the usual case (12 -> 3): a fixed-kernel average pool, static for export
            return F.avg_pool2d(g, n0 // lh)
        return F.adaptive_avg_pool2d(g, self.local_hw)

    def forward(self, x: Faces, return_maps: bool = False):
        """x: (B, C, h, w) uint8 or [0, 1] float, any h, w (or mixed-size groups) -> logits (B, K) [, maps]."""
        stem, local, maps = self.local(self.preprocess(x))  # stem (B, w0, S1, S1); local (B, c, S', S')
        if self.global_branch is not None:
            g = self.global_branch(stem)  # (B, gw, S1/global_stride, S1/global_stride)
            g = self._pool_to_local(g)  # (B, gw, S', S'): global context per cell
            if self.fusion == "concat":
                local = self.fuse(torch.cat([local, g], dim=1))
            elif self.fusion == "sum":
                local = F.relu(local + self.proj(g))
            else:  # gate: how much global context each position takes, learned from both
                g = self.proj(g)
                local = F.relu(local + torch.sigmoid(self.gate(torch.cat([local, g], dim=1))) * g)
        logits = self.head(self.drop(local.mean(dim=(2, 3))))
        return (logits, maps) if return_maps else logits
