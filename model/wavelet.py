"""One-level Haar wavelet transforms used by the network, with exact inverses.

* :class:`StationaryHaar` / :class:`InverseStationaryHaar`: the undecimated (stationary)
  transform the paper uses. It matches ``pytorch_wavelets``' ``SWTForward(J=1, wave="haar",
  mode="zero")`` up to channel order, and keeps full resolution.
* :class:`DecimatedHaar` / :class:`InverseDecimatedHaar`: the orthogonal Haar DWT at half
  resolution, for the cheap presets (inputs must have even height and width).

Coefficients are ordered by subband, then colour: ``LL(R,G,B), LH(R,G,B), HL(R,G,B),
HH(R,G,B)``, so ``coeffs[:, :C]`` is always the low-pass band.

``pytorch_wavelets`` 1.3.0 cannot invert the stationary transform (its ``SWTInverse`` does
not import), so the inverse here is the least-squares (Moore-Penrose) inverse of the forward
operator. For coefficients produced by the forward transform it reconstructs exactly; for
coefficients predicted by a network it returns the image whose transform is closest to them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LO = (1 / math.sqrt(2), 1 / math.sqrt(2))
_HI = (1 / math.sqrt(2), -1 / math.sqrt(2))


def haar_kernels(channels: int) -> torch.Tensor:
    """Dense 2x2 analysis kernels of shape ``(4*channels, channels, 2, 2)``, subband-major.

    Subband ``b = 2*a_w + a_h`` applies filter ``a_w`` along the width and ``a_h`` along
    the height (0 = low-pass, 1 = high-pass), the ``pytorch_wavelets`` ordering
    (LL, LH, HL, HH).
    """
    filt = torch.tensor([_LO, _HI], dtype=torch.float64)
    weight = torch.zeros(4 * channels, channels, 2, 2, dtype=torch.float64)
    for band in range(4):
        a_w, a_h = divmod(band, 2)
        kernel = torch.outer(filt[a_h], filt[a_w])
        for c in range(channels):
            weight[band * channels + c, c] = kernel
    return weight.float()


class _HaarBase(nn.Module):
    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        # Fixed filters: a buffer, not a parameter, so they are neither trained nor counted.
        self.register_buffer("weight", haar_kernels(channels), persistent=False)

    def _w(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(dtype=x.dtype)


class StationaryHaar(_HaarBase):
    """Undecimated one-level Haar transform: ``(N, C, H, W) -> (N, 4C, H, W)``, zero padded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), self._w(x))


class InverseStationaryHaar(_HaarBase):
    """Least-squares inverse of :class:`StationaryHaar`: ``(N, 4C, H, W) -> (N, C, H, W)``.

    The forward operator ``A`` satisfies ``A^T A = diag(d_h) (x) diag(d_w)`` with
    ``d = (1, 2, 2, ...)`` (the first row/column is covered by one filter position, the rest
    by two), so the pseudo-inverse is the adjoint followed by a division by that weight.
    """

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        h, w = coeffs.shape[-2:]
        y = F.conv_transpose2d(coeffs, self._w(coeffs))[..., :h, :w]
        ones_h = torch.ones(h, dtype=coeffs.dtype, device=coeffs.device)
        ones_w = torch.ones(w, dtype=coeffs.dtype, device=coeffs.device)
        d_h = torch.cat([ones_h[:1], 2 * ones_h[1:]])
        d_w = torch.cat([ones_w[:1], 2 * ones_w[1:]])
        return y / (d_h[:, None] * d_w[None, :])


class DecimatedHaar(_HaarBase):
    """Orthogonal one-level Haar DWT: ``(N, C, H, W) -> (N, 4C, H/2, W/2)``; H, W even."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self._w(x), stride=2)


class InverseDecimatedHaar(_HaarBase):
    """Exact inverse of :class:`DecimatedHaar` (its adjoint, since the DWT is orthogonal)."""

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(coeffs, self._w(coeffs), stride=2)


def make_wavelet_pair(kind: str, channels: int = 3) -> tuple[nn.Module, nn.Module]:
    """Return ``(forward, inverse)`` modules for ``"stationary"`` or ``"decimated"``."""
    if kind == "stationary":
        return StationaryHaar(channels), InverseStationaryHaar(channels)
    if kind == "decimated":
        return DecimatedHaar(channels), InverseDecimatedHaar(channels)
    raise ValueError(f"unknown wavelet kind {kind!r}")
