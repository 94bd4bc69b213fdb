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

from gmenet_cli.models.base import AttentionBackbone, FERModel
from gmenet_cli.models.blocks import MixedChannelBlock, conv_bn

FUSIONS = ("concat", "gate", "sum")


class GlobalBranch(nn.Module):
    """Quasi-symmetric encoder/decoder of Mixed-Channel blocks with skip connections.

    Encoder: MC(w) @S -> down -> MC(2w) @S/2 -> down -> MC(2w) @S/4 (bottleneck).
    Decoder mirrors it: up + skip -> MC(2w) @S/2 -> up + skip -> MC(w) @S. "Quasi": the decoder reuses
    the encoder's widths but fuses skips by addition, so it is lighter than a strict mirror.

    (B, Cin, S, S) -> (B, w, S, S)."""

    def __init__(self, cin: int, width: int, dilations: tuple = (1, 2, 3, 4)):
        super().__init__()
        w2 = 2 * width
        self.proj = nn.Sequential(conv_bn(cin, width, 1), nn.ReLU(inplace=True))
        self.enc0 = MixedChannelBlock(width, dilations)
        self.down1 = nn.Sequential(conv_bn(width, w2, 3, 2), nn.ReLU(inplace=True))
        self.enc1 = MixedChannelBlock(w2, dilations)
        self.down2 = nn.Sequential(conv_bn(w2, w2, 3, 2), nn.ReLU(inplace=True))
        self.mid = MixedChannelBlock(w2, dilations)
        self.dec1 = MixedChannelBlock(w2, dilations)
        self.up0 = conv_bn(w2, width, 1)
        self.dec0 = MixedChannelBlock(width, dilations)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(self.proj(x))  # (B, w, S, S)
        e1 = self.enc1(self.down1(e0))  # (B, 2w, S/2, S/2)
        m = self.mid(self.down2(e1))  # (B, 2w, S/4, S/4)
        d1 = self.dec1(self._up(m, e1) + e1)  # (B, 2w, S/2, S/2)
        return self.dec0(self.up0(self._up(d1, e0)) + e0)  # (B, w, S, S)


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
        dilations: tuple = (1, 2, 3, 4),
        fusion: str = "concat",
        dropout: float = 0.2,
        **base,
    ):
        super().__init__(in_chans, num_classes, input_size, **base)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.local = AttentionBackbone(in_chans, tuple(widths), tuple(depths), stem_stride, spatial)
        c = self.local.out_channels
        self.global_branch = GlobalBranch(widths[0], global_width, tuple(dilations)) if global_branch else None
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

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        """x: (B, C, h, w) uint8 or [0, 1] float, any h, w -> logits (B, K) [, maps]."""
        stem, local, maps = self.local(self.preprocess(x))  # stem (B, w0, S1, S1); local (B, c, S', S')
        if self.global_branch is not None:
            g = self.global_branch(stem)  # (B, gw, S1, S1)
            g = F.adaptive_avg_pool2d(g, local.shape[-2:])  # (B, gw, S', S'): global context per cell
            if self.fusion == "concat":
                local = self.fuse(torch.cat([local, g], dim=1))
            elif self.fusion == "sum":
                local = F.relu(local + self.proj(g))
            else:  # gate: how much global context each position takes, learned from both
                g = self.proj(g)
                local = F.relu(local + torch.sigmoid(self.gate(torch.cat([local, g], dim=1))) * g)
        logits = self.head(self.drop(F.adaptive_avg_pool2d(local, 1).flatten(1)))
        return (logits, maps) if return_maps else logits
