"""The training loss of the paper's family: ``MSE + 0.2 * (1 - SSIM)``, with optional deep
supervision of the earlier stage outputs."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import ssim_torch


class DerainLoss(nn.Module):
    """``L(out) = MSE(out, clean) + ssim_weight * (1 - SSIM(out, clean))`` on the final output,
    plus ``stage_weight * L(out_k)`` for every earlier stage output.

    SSIM is computed per RGB channel on [0, 1] images with the 11x11 Gaussian window ('valid'),
    in float32 whatever the autocast precision.
    """

    def __init__(self, ssim_weight: float = 0.2, stage_weight: float = 0.0) -> None:
        super().__init__()
        if ssim_weight < 0 or stage_weight < 0:
            raise ValueError("loss weights must be >= 0")
        self.ssim_weight = float(ssim_weight)
        self.stage_weight = float(stage_weight)

    def single(self, output: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, mse, ssim) of one output."""
        output = output.float()
        clean = clean.float()
        mse = F.mse_loss(output, clean)
        ssim = ssim_torch(output, clean, data_range=1.0) if self.ssim_weight else mse.new_tensor(0.0)
        return mse + self.ssim_weight * (1.0 - ssim), mse, ssim

    def forward(self, outputs: "torch.Tensor | Sequence[torch.Tensor]", clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """``outputs``: the final image or every stage's image, final first.
        Returns ``{"loss", "mse", "ssim"}`` (mse and ssim of the final output)."""
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        loss, mse, ssim = self.single(outputs[0], clean)
        if self.stage_weight:
            for earlier in outputs[1:]:
                loss = loss + self.stage_weight * self.single(earlier, clean)[0]
        return {"loss": loss, "mse": mse.detach(), "ssim": ssim.detach()}

    def describe(self) -> str:
        text = f"MSE + {self.ssim_weight:g} * (1 - SSIM)"
        if self.stage_weight:
            text += f", earlier stages x {self.stage_weight:g}"
        return text
