"""Cost of a network: trainable parameters and multiply-adds per pixel."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters (the fixed Haar filters are buffers and are not counted)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@torch.no_grad()
def macs_per_pixel(net: nn.Module, height: int = 64, width: int = 64) -> float:
    """Multiply-accumulates per input pixel, counted by torch's FLOP counter (convolutions
    and linear layers; element-wise operations are not counted)."""
    param = next(net.parameters())
    x = torch.zeros(1, 3, height, width, dtype=param.dtype, device=param.device)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x)
    return counter.get_total_flops() / 2 / (height * width)
