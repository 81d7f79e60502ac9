"""The paper's named modules: residue channel, ResLSTM, residue branch, fusion module,
consecutive ResLSTM. Section names follow Park, Park & Eom (Neurocomputing 2024)."""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvD, ResidualBlock, SqueezeExcitation, conv3


class ResidueChannel(nn.Module):
    """Residue channel: per-pixel max minus min over the colour channels, repeated to 3.

    Rain streaks are nearly achromatic, so this map keeps the scene's colour edges while
    being almost free of rain. Parameter-free.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residue = x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)
        return residue.expand(-1, 3, -1, -1)


class ResLSTM(nn.Module):
    """Residual ConvLSTM block (the reference's ``RIR_LSTM``), unrolled ``steps`` times.

    Each step computes the four gates from ``cat(x, h)``, updates ``c`` and ``h``, then sets
    ``x = conv3(RB(RB(h))) + block_input``. Weights are shared across steps; ``h`` and ``c``
    start at zero, created like the input (same device and dtype).
    """

    def __init__(self, channels: int, steps: int = 3, se_reduction: int = 1) -> None:
        super().__init__()
        self.steps = steps
        self.gate_i = conv3(2 * channels, channels)
        self.gate_f = conv3(2 * channels, channels)
        self.gate_g = conv3(2 * channels, channels)
        self.gate_o = conv3(2 * channels, channels)
        self.body = nn.Sequential(
            ResidualBlock(channels, se_reduction),
            ResidualBlock(channels, se_reduction),
            conv3(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block_input = x
        h = torch.zeros_like(x)
        c = torch.zeros_like(x)
        for _ in range(self.steps):
            xh = torch.cat((x, h), dim=1)
            i = torch.sigmoid(self.gate_i(xh))
            f = torch.sigmoid(self.gate_f(xh))
            g = torch.tanh(self.gate_g(xh))
            o = torch.sigmoid(self.gate_o(xh))
            c = f * c + i * g
            h = o * torch.tanh(c)
            x = self.body(h) + block_input
        return x


class ResidueBranch(nn.Module):
    """Residue-channel feature branch (``res_ch``): convd(3, n/2), convd(n/2, n), ResLSTM."""

    def __init__(self, features: int, steps: int, residue_blocks: int = 1, se_reduction: int = 1) -> None:
        super().__init__()
        self.residue = ResidueChannel()
        self.stem = nn.Sequential(ConvD(3, features // 2), ConvD(features // 2, features))
        self.lstm = nn.Sequential(*[ResLSTM(features, steps, se_reduction) for _ in range(residue_blocks)])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.stem(self.residue(image)))


class FusionModule(nn.Module):
    """Fusion of wavelet features with residue-channel guidance (``Prior_Sp``).

    ``q = conv3(x)``, ``k = conv3(prior)``, ``e = SE(q * k)``; returns
    ``(x + conv3(e), prior + conv3'(e))``.
    """

    def __init__(self, features: int, reduction: int = 8) -> None:
        super().__init__()
        self.query = conv3(features, features)
        self.key = conv3(features, features)
        self.attention = SqueezeExcitation(features, reduction)
        self.to_x = conv3(features, features)
        self.to_prior = conv3(features, features)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.attention(self.query(x) * self.key(prior))
        return x + self.to_x(e), prior + self.to_prior(e)


class ConsecutiveResLSTM(nn.Module):
    """Feature extractor (``Feature_ex``): fusion, concat, convd(2n, n), ResLSTM blocks in sequence."""

    def __init__(self, features: int, blocks: int, steps: int, se_reduction: int = 1,
                 fusion_reduction: int = 8) -> None:
        super().__init__()
        self.fusion = FusionModule(features, fusion_reduction)
        self.merge = ConvD(2 * features, features)
        self.blocks = nn.Sequential(*[ResLSTM(features, steps, se_reduction) for _ in range(blocks)])

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        x, prior = self.fusion(x, prior)
        return self.blocks(self.merge(torch.cat((x, prior), dim=1)))
