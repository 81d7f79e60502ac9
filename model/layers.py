"""Basic layers of the network: 3x3 convolutions, squeeze-and-excitation, the SE residual block."""
from __future__ import annotations

import torch
from torch import nn


def conv3(in_ch: int, out_ch: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, zero padding 1, with bias (the paper's ``conv3``)."""
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)


class ConvD(nn.Sequential):
    """The reference's ``convd``: reflection pad 1, 3x3 convolution, ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3), nn.ReLU(inplace=True))


class SqueezeExcitation(nn.Module):
    """SE(c, r): global average pool, Linear(c, c/r), ReLU, Linear(c/r, c), sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class ResidualBlock(nn.Module):
    """The paper's RB: conv3+ReLU, conv3+ReLU, SE, plus the block input."""

    def __init__(self, channels: int, se_reduction: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3(channels, channels), nn.ReLU(inplace=True),
            conv3(channels, channels), nn.ReLU(inplace=True),
            SqueezeExcitation(channels, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x
