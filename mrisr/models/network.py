"""Prior-guided super-resolution network (3-D UNet from MONAI, residual on the sinc input).

Design, chosen by measurement on a 2-core CPU (see benchmarks/RESULTS.md):
    * the LR frame is brought to the HR grid by k-space zero-filling (sinc), the same operator as
      the simulation; the prior (when used) is on the same grid;
    * both are scaled by one robust intensity (a high percentile of the sinc frame), which is
      inverted on output;
    * a 2x in-plane space-to-depth rearrangement feeds a MONAI ``UNet`` at half the in-plane
      resolution: the input is band-limited in-plane, so nothing is lost, and the UNet can be
      wider for the same time (the full-resolution level dominates a plain UNet's cost);
    * the UNet's strides never halve a thin slab more than once (``(2,2,1), (2,2,2), (2,2,1)``);
    * a zero-initialised 1x1x1 head predicts a residual on the sinc input, so the untrained
      network is exactly the sinc baseline and training only has to add detail;
    * with ``prior_input="gated-keyhole"`` the second channel is not the prior itself but the
      gated keyhole of the frame and the prior (:func:`mrisr.reconstruct.keyhole.gated_keyhole`:
      the measured frame plus the prior's detail only where the frame agrees with it), and the
      residual is added to that channel instead: the untrained network is exactly the gated
      keyhole, the best classical method measured, and training only has to correct it.
Any input size works: the frame is padded (reflect) to the stride multiple and cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

#: what the second input channel holds (see :class:`PriorSRNet`)
PRIOR_INPUTS = ("prior", "gated-keyhole")


def _space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, nx, ny, nz = x.shape
    x = x.reshape(b, c, nx // factor, factor, ny // factor, factor, nz)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, c * factor * factor, nx // factor, ny // factor, nz)


def _depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, nx, ny, nz = x.shape
    out_c = c // (factor * factor)
    x = x.reshape(b, out_c, factor, factor, nx, ny, nz)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, out_c, nx * factor, ny * factor, nz)


class PriorSRNet(nn.Module):
    """3-D UNet super-resolution of one frame, optionally guided by a prior volume.

    Inputs and output are ``(B, 1, X, Y, Z)`` tensors in the same (normalised) intensity units;
    X and Y are in-plane, Z the slice axis.

    Args:
        use_prior: two input channels (sinc frame, prior) if true, else one.
        channels: UNet channels per level.
        strides: UNet strides between levels, ``(x, y, z)`` each.
        num_res_units: residual units per UNet block.
        features: channels the UNet hands to the residual head.
        space_to_depth: in-plane rearrangement factor (1 disables it).
        prior_input: ``prior`` (the prior volume; residual on the sinc input) or
            ``gated-keyhole`` (the gated keyhole of frame and prior; residual on it).
    """

    def __init__(
        self,
        use_prior: bool = True,
        channels: Sequence[int] = (24, 48, 96, 192),
        strides: Sequence[Sequence[int]] = ((2, 2, 1), (2, 2, 2), (2, 2, 1)),
        num_res_units: int = 1,
        features: int = 16,
        space_to_depth: int = 2,
        prior_input: str = "prior",
    ) -> None:
        super().__init__()
        if prior_input not in PRIOR_INPUTS:
            raise ValueError(f"prior_input {prior_input!r}: choose one of {', '.join(PRIOR_INPUTS)}")
        if prior_input != "prior" and not use_prior:
            raise ValueError(f"prior_input {prior_input!r} needs use_prior")
        self.use_prior = bool(use_prior)
        self.prior_input = prior_input
        self.s2d = int(space_to_depth)
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(tuple(int(s) for s in st) for st in strides)
        in_ch = (2 if self.use_prior else 1) * self.s2d * self.s2d
        self.unet = UNet(
            spatial_dims=3,
            in_channels=in_ch,
            out_channels=features,
            channels=self.channels,
            strides=self.strides,
            num_res_units=num_res_units,
            act="PRELU",
            norm=None,
        )
        self.head = nn.Conv3d(features, self.s2d * self.s2d, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        multiple = [self.s2d] * 3
        multiple[2] = 1
        for st in self.strides:
            multiple = [m * s for m, s in zip(multiple, st)]
        self.multiple = tuple(multiple)
        self.memory_format = torch.contiguous_format

    def set_memory_format(self, memory_format: torch.memory_format) -> PriorSRNet:
        """Store the weights, and feed the UNet, in ``memory_format``.

        ``torch.channels_last_3d`` makes the 3-D convolutions faster on x86 CPUs (oneDNN's preferred
        layout; benchmarks/RESULTS.md, 'Speed', the contiguous-layout lever) and changes the output by
        about 1e-7 of the intensity scale. The layout is not part of the checkpoint.
        """
        self.to(memory_format=memory_format)
        self.memory_format = memory_format
        return self

    def forward(self, sinc: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_prior:
            if prior is None:
                raise ValueError("this network was built with a prior channel; pass a prior")
            x = torch.cat([sinc, prior], dim=1)
        else:
            x = sinc
        shape = x.shape[2:]
        pads = [(-n) % m for n, m in zip(shape, self.multiple)]
        if any(pads):
            # F.pad takes the last axis first; reflect needs pad < size, replicate has no limit
            pad_arg = []
            for p in reversed(pads):
                pad_arg += [p // 2, p - p // 2]
            x = F.pad(x, pad_arg, mode="replicate")
        x = _space_to_depth(x, self.s2d) if self.s2d > 1 else x
        if self.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=self.memory_format)
        residual = self.head(self.unet(x))
        residual = _depth_to_space(residual, self.s2d) if self.s2d > 1 else residual
        if any(pads):
            sl = [slice(None), slice(None)] + [slice(p // 2, p // 2 + n) for p, n in zip(pads, shape)]
            residual = residual[tuple(sl)]
        return (prior if self.prior_input == "gated-keyhole" else sinc) + residual

    def config(self) -> dict:
        """Constructor arguments, stored in the checkpoint (``prior_input`` only when not the
        default, so checkpoints written before it existed keep the same arguments)."""
        extra = {} if self.prior_input == "prior" else {"prior_input": self.prior_input}
        return {
            "use_prior": self.use_prior,
            "channels": list(self.channels),
            "strides": [list(s) for s in self.strides],
            "num_res_units": self.unet_res_units,
            "features": self.head.in_channels,
            "space_to_depth": self.s2d,
            **extra,
        }

    @property
    def unet_res_units(self) -> int:
        return int(self.unet.num_res_units)


ARCHITECTURES = {"prior-sr-unet": PriorSRNet}


def build_network(architecture: str, arguments: dict) -> nn.Module:
    """Instantiate a network by architecture name and constructor arguments."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}") from None
    return cls(**arguments)
