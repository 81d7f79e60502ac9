"""Run a network on overlapping tiles of a large image and blend them back.

Used by the video engines (``derain-video --tile``) and by scoring (``derain-eval --tile``):
tiles of ``tile x tile`` pixels overlap by ``overlap`` pixels and are blended with weights
that ramp linearly over the overlap, so seams do not show.
"""
from __future__ import annotations

from typing import Callable

import torch


def feather_window(size_h: int, size_w: int, overlap: int) -> torch.Tensor:
    """Blending weights for one tile: 1 inside, linear ramps over ``overlap`` pixels at edges."""
    def ramp(n: int) -> torch.Tensor:
        w = torch.ones(n)
        k = min(overlap, n // 2)
        if k > 0:
            r = (torch.arange(k, dtype=torch.float32) + 1) / (k + 1)
            w[:k] = r
            w[n - k:] = r.flip(0)
        return w
    return ramp(size_h)[:, None] * ramp(size_w)[None, :]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def tiled(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None,
          overlap: int) -> torch.Tensor:
    """``net(x)`` computed on overlapping tiles of ``x`` (``(N, C, H, W)``), blended back.

    Without ``tile``, or when ``x`` fits in one tile, this is ``net(x)``.
    """
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return net(x)
    th, tw = min(tile, h), min(tile, w)
    out = weight = None
    window = feather_window(th, tw, overlap).to(x.device)
    for y0 in tile_starts(h, th, overlap):
        for x0 in tile_starts(w, tw, overlap):
            piece = net(x[..., y0:y0 + th, x0:x0 + tw]).float()
            if out is None:
                out = torch.zeros(*piece.shape[:2], h, w, dtype=torch.float32, device=x.device)
                weight = torch.zeros(1, 1, h, w, dtype=torch.float32, device=x.device)
            out[..., y0:y0 + th, x0:x0 + tw] += piece * window
            weight[..., y0:y0 + th, x0:x0 + tw] += window
    return (out / weight).to(x.dtype)
