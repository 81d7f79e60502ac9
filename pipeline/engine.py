"""Inference engines: run the network on batches of uint8 RGB frames.

An engine turns ``(N, H, W, 3)`` uint8 RGB arrays into derained arrays of the same shape.
``infer`` is synchronous; ``stream`` takes ``(batch, tag)`` pairs and yields
``(derained, tag)`` in order, which lets an engine keep several batches in flight (the CUDA
engine overlaps copies and compute this way). Large frames can be processed in overlapping
tiles (``tile``/``tile_overlap``) that are blended back with feathered weights.
"""
from __future__ import annotations

import copy
import logging
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from model import Derainer, IterativeDerainNet
from model.tiling import tiled

log = logging.getLogger(__name__)
T = TypeVar("T")

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA, fp32 on CPU. fp16 on CPU is refused (slow and inaccurate)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is not supported on CPU; use fp32 or bf16")
    return _DTYPES[precision]


class Engine:
    """Eager PyTorch engine (works on any device). Backends subclass it and replace ``run``."""

    name = "eager"

    def __init__(self, net: IterativeDerainNet, device: "str | torch.device" = "cpu",
                 precision: str = "auto", tile: int | None = None, tile_overlap: int = 32,
                 channels_last: bool = True) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = resolve_precision(precision, self.device)
        if tile is not None and tile <= 2 * tile_overlap:
            raise ValueError(f"--tile ({tile}) must be larger than twice --tile-overlap ({tile_overlap})")
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.channels_last = channels_last
        # A copy: moving/casting in place would change the caller's network (and other engines').
        self.module: nn.Module = Derainer(copy.deepcopy(net)).eval().to(self.device, self.dtype)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.config = net.config

    # -- tensor level ------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Network on a float ``(N, 3, H, W)`` tensor on ``self.device`` in ``self.dtype``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)

    def run_tiled(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`run`, on overlapping tiles when ``tile`` is set (see :mod:`model.tiling`)."""
        return tiled(self.run, x, self.tile, self.tile_overlap)

    # -- frame level -------------------------------------------------------------------
    @torch.inference_mode()
    def infer(self, frames: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB -> derained ``(N, H, W, 3)`` uint8 RGB."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        x = self.preprocess(torch.from_numpy(frames).to(self.device, non_blocking=True))
        y = self.postprocess(self.run_tiled(x))
        return y.contiguous().cpu().numpy()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 tensor on ``self.device`` -> ``(N, 3, H, W)`` in ``self.dtype``,
        scaled to [0, 1]; a new tensor, so ``frames`` may be overwritten once this work has run."""
        return frames.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)

    def postprocess(self, y: torch.Tensor) -> torch.Tensor:
        """Network output ``(N, 3, H, W)`` -> ``(N, H, W, 3)`` uint8 on the same device
        (rounded, clamped; a strided view, not necessarily contiguous)."""
        return y.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def stream(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[tuple[np.ndarray, T]]:
        """Derain each ``(batch, tag)`` in order. The eager engine has one batch in flight."""
        for batch, tag in items:
            yield self.infer(batch), tag

    def describe(self) -> str:
        tiles = f", tiles {self.tile}px/{self.tile_overlap}px overlap" if self.tile else ""
        return f"{self.name} on {self.device} ({str(self.dtype).replace('torch.', '')}{tiles})"
