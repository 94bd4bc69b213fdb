"""The HR teacher: a ResNet-style network whose every block applies channel then spatial attention
(CBAM style), as in A-SKD. Trained on HR faces by `gmenet distill-teacher`; frozen while it teaches.
"""

from __future__ import annotations

from torch import nn

from gmenet_cli.models.base import Faces, FERModel, make_backbone


class AttentionResNet(FERModel):
    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 8,
        input_size: int = 48,
        widths: tuple = (32, 64, 128, 256),
        depths: tuple = (1, 1, 1, 1),
        stem_stride: int = 2,
        spatial: str = "standard",
        dropout: float = 0.2,
        layout: str = "resnet",
        **base,
    ):
        super().__init__(in_chans, num_classes, input_size, **base)
        self.backbone = make_backbone(layout, in_chans, widths, depths, stem_stride, spatial)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, x: Faces, return_maps: bool = False):
        """x: (B, C, h, w) uint8 or [0, 1] float (or mixed-size groups) -> logits (B, K) [, maps]."""
        _, feat, maps = self.backbone(self.preprocess(x))  # feat: (B, W, S', S')
        logits = self.head(self.drop(feat.mean(dim=(2, 3))))
        return (logits, maps) if return_maps else logits
