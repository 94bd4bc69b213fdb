"""Fold BatchNorm into the convolution before it, for a model that is only run forward (the frozen teacher
during distillation): y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution, with
weights scaled per output channel and a bias. Same outputs up to float rounding, one layer instead of two.

The pairs folded are the ones gmenet's blocks compose directly, conv then BN with nothing between:
`conv_bn` (an nn.Sequential of Conv2d, BatchNorm2d) and the attention modules' (conv, bn), (dw, bn_dw) and
(pw, bn) attribute pairs. The folded BN becomes an nn.Identity, so every forward stays as written.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gmenet_cli.models.blocks import DepthwiseSpatialAttention, SpatialAttention

# module type -> (conv attribute, bn attribute) pairs its forward applies back to back
_PAIRS = {SpatialAttention: [("conv", "bn")], DepthwiseSpatialAttention: [("dw", "bn_dw"), ("pw", "bn")]}


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every conv -> BN pair folded (the original is untouched)."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i in range(len(children) - 1):
                if isinstance(children[i], nn.Conv2d) and isinstance(children[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(children[i], children[i + 1])
                    module[i + 1] = nn.Identity()
        for conv_name, bn_name in _PAIRS.get(type(module), []):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
