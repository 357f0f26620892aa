"""Building blocks of the stacked hourglass: the residual and the plain-conv block."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["BlockType", "ConvBlock", "Residual", "make_block"]

BlockType = Literal["residual", "conv"]


class Residual(nn.Module):
    """Pre-activation bottleneck residual (Newell et al. 2016).

    BN-ReLU-1×1 (out/2), BN-ReLU-3×3 (out/2), BN-ReLU-1×1 (out), plus a skip that is the
    identity, or a 1×1 conv only when the channel count changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.

    Shapes:
        x: (B, in_channels, H, W) -> (B, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(out_channels // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first BN-ReLU must not act in place on x: the skip still needs it.
        return self.body(x) + self.skip(x)


class ConvBlock(nn.Sequential):
    """3×3 conv + ReLU, no batch norm: the block of the original AE network.

    Shapes:
        x: (B, in_channels, H, W) -> (B, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
        )


def make_block(block: BlockType, in_channels: int, out_channels: int) -> nn.Module:
    """The block named ``block`` ("residual" or "conv") from ``in_channels`` to ``out_channels``."""
    if block == "residual":
        return Residual(in_channels, out_channels)
    if block == "conv":
        return ConvBlock(in_channels, out_channels)
    raise ValueError(f"block: expected 'residual' or 'conv', got {block!r}")
