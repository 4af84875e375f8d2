"""The anchors' network architecture (for speed comparison only), FLOP counting and the
machine's conv3d throughput ceiling, used by ``benchmarks/speed.py``."""

from __future__ import annotations

import math

import torch
from _common import time_call
from torch import nn

# --------------------------------------------------------------------------- the anchor replica


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
    )


class AnchorUNet(nn.Module):
    """Replica of the anchors' network: plain 3-D UNet, depth 3, 64/128/256 channels.

    Two 3x3x3 conv + ReLU per level, average pooling, transposed-conv upsampling, skip
    concatenation, no normalisation, no global residual, 1x1x1 output conv. Input
    ``(B, 2, X, Y, Z)`` (LR frame on the HR grid + prior), output ``(B, 1, X, Y, Z)``; X, Y, Z
    must be multiples of 4. About 5.4 M parameters.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1, channels: tuple[int, int, int] = (64, 128, 256)):
        super().__init__()
        c1, c2, c3 = channels
        self.enc1 = _double_conv(in_channels, c1)
        self.enc2 = _double_conv(c1, c2)
        self.bottom = _double_conv(c2, c3)
        self.pool = nn.AvgPool3d(2)
        self.up2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = _double_conv(2 * c2, c2)
        self.up1 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = _double_conv(2 * c1, c1)
        self.out = nn.Conv3d(c1, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        del e2, b
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


# --------------------------------------------------------------------------- FLOP counting


def conv_flops(net: nn.Module, call) -> int:
    """FLOPs (2 x multiply-adds) of every Conv3d / ConvTranspose3d in one forward pass ``call()``."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kernel = math.prod(module.kernel_size)
        if isinstance(module, nn.ConvTranspose3d):
            x = inputs[0]
            positions = x.shape[0] * math.prod(x.shape[2:])
            total += 2 * module.in_channels * (module.out_channels // module.groups) * kernel * positions
        else:
            positions = output.shape[0] * math.prod(output.shape[2:])
            total += 2 * (module.in_channels // module.groups) * module.out_channels * kernel * positions

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    try:
        with torch.inference_mode():
            call()
    finally:
        for h in handles:
            h.remove()
    return total


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- the ceiling


def conv_ceiling(shape: tuple[int, ...], repeats: int) -> dict:
    """GFLOP/s of one large-channel 3x3x3 conv (64 -> 64) on ``shape`` ``(B, C, X, Y, Z)``, in both
    memory layouts; the ceiling is the faster of the two (the best this machine does)."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv3d(shape[1], 64, 3, padding=1)
    x = torch.randn(shape, generator=gen)
    flops = 2 * shape[1] * 64 * 27 * math.prod(shape[2:]) * shape[0]
    layouts = {}
    with torch.inference_mode():
        layouts["contiguous"], _ = time_call(lambda: conv(x), repeats=repeats, warmup=2)
        conv_cl = conv.to(memory_format=torch.channels_last_3d)
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)
        layouts["channels_last_3d"], _ = time_call(lambda: conv_cl(x_cl), repeats=repeats, warmup=2)
    best = min(layouts, key=layouts.get)
    median = layouts[best]
    return {"shape": shape, "seconds": median, "gflops": flops / 1e9, "gflop_s": flops / 1e9 / median, "layout": best,
            "by_layout": {k: flops / 1e9 / v for k, v in layouts.items()}}

