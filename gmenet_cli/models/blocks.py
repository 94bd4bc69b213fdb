"""Building blocks: hybrid (channel + spatial) attention, attention residual blocks, mixed-channel blocks.

Attention modules return their map *before* the sigmoid: that is what A-SKD distils (Shin et al., ECCV
2022, "Teaching Where to Look"). Blocks return `(features, (channel_map, spatial_map))` explicitly, so the
teacher/student pairing is a visible contract rather than a forward hook.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class _HandWeightGrad(torch.autograd.Function):
    """`F.conv2d` (no bias) whose weight gradient is summed by hand: the input gradient stays oneDNN's.

    On small maps oneDNN's CPU weight gradient costs far more than the arithmetic (measured, batch 128, AVX2:
    a depthwise 7x7 on 128 channels of 6x6 maps 30-42 ms against 9-15 ms summed tap by tap; a dense 3x3 on
    256 channels of 2x2 maps 13 ms against 5 ms as one matrix product; BENCHMARKS.md, training step). The
    same sums in another order: gradients equal to float rounding (tested)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, (0, 0), groups, (True, False, False)
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, grad, weight.shape, stride, padding, dilation, groups)
        return grad_x, grad_w, None, None, None, None


def _weight_grad(x, grad, shape, stride, padding, dilation, groups) -> torch.Tensor:
    """d(loss)/d(weight) of a bias-free conv2d: for each kernel tap, the input shifted to that tap times the
    output gradient, summed. Dense (groups 1): all taps at once as one (Cout, N) x (N, taps * Cin) matrix
    product; depthwise: per tap, a product summed per channel. Channels-last throughout."""
    cout, cin, kh, kw = shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = grad.shape[-2:]
    xn = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (B, H + 2ph, W + 2pw, Cin)
    gn = grad.permute(0, 2, 3, 1)  # (B, Ho, Wo, Cout)
    taps = [xn[:, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            for i in range(kh) for j in range(kw)]
    if groups == 1:
        cols = torch.stack(taps, dim=3).reshape(-1, kh * kw * cin)
        return (gn.reshape(-1, cout).t() @ cols).view(cout, kh, kw, cin).permute(0, 3, 1, 2)
    return torch.stack([(tap * gn).sum((0, 1, 2)) for tap in taps], dim=1).view(cout, 1, kh, kw)


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # older torch: no device argument, a function per device
        return torch.is_autocast_cpu_enabled()


# None: on the CPUs where the hand-summed weight gradient was measured faster (x86 with AVX2 and no AVX-512;
# on AVX-512 CPUs oneDNN has other kernels and it is not measured yet); True / False: on / off everywhere
# (benchmarks/train_speed.py's rows set it).
HAND_WEIGHT_GRAD: bool | None = None


@functools.cache
def _measured_cpu() -> bool:
    return torch.backends.cpu.get_cpu_capability() == "AVX2"


def _hand_grad(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Where the hand-summed weight gradient is the faster one (measured on an AVX2 CPU, BENCHMARKS.md): dense
    kernels on output maps of 3x3 and below, depthwise kernels on maps of 6x6 and below with 64 channels or
    more, and dilated depthwise kernels. Only while training on the CPU in float32, never in an export; by
    default only on the kind of CPU it was measured on (HAND_WEIGHT_GRAD)."""
    on = _measured_cpu() if HAND_WEIGHT_GRAD is None else HAND_WEIGHT_GRAD
    if not (on and torch.is_grad_enabled() and weight.requires_grad and x.device.type == "cpu"
            and x.dtype == torch.float32 and not _cpu_autocast()):
        return False
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    kh, kw = weight.shape[-2:]
    ho, wo = ((x.shape[i - 2] + 2 * padding[i] - dilation[i] * (weight.shape[i - 2] - 1) - 1) // stride[i] + 1
              for i in (0, 1))
    if groups == 1:
        return kh * kw > 1 and ho * wo <= 9
    if groups == x.shape[1] == weight.shape[0]:
        return max(dilation) > 1 or (ho * wo <= 36 and groups >= 64)
    return False


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups: int) -> torch.Tensor:
    """`F.conv2d`, with the hand-summed weight gradient where `_hand_grad` says it is faster."""
    if bias is None and _hand_grad(x, weight, stride, padding, dilation, groups):
        return _HandWeightGrad.apply(x, weight, tuple(stride), tuple(padding), tuple(dilation), groups)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) that takes `conv2d`'s faster weight gradient in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


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
    weight = conv.weight if (rh, rw) == (ch, cw) else conv.weight[:, :, ch - rh : ch + rh + 1, cw - rw : cw + rw + 1]
    return conv2d(x, weight, conv.bias, (1, 1), (dh * rh, dw * rw), conv.dilation, conv.groups)


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
        Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout)
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
