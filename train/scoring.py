"""Running a network over paired images and scoring it (shared by validation and ``derain-eval``).

One code path: decode uint8 RGB, derain, round to uint8 exactly as a saved image would be,
then :func:`train.metrics.score_pair` (the MATLAB protocol).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from model.tiling import tiled

from .datasets import Pair, PairedSet
from .images import DataError, read_rgb, write_rgb
from .metrics import score_pair, to_uint8

#: A function from a rainy uint8 RGB image to a derained one (same size).
DerainFn = Callable[[np.ndarray], np.ndarray]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``amp`` in {"none", "bf16", "fp16"}."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


def network_fn(net: torch.nn.Module, device: torch.device, amp: str = "none", channels_last: bool = False,
               tile: int = 0, tile_overlap: int = 32) -> DerainFn:
    """A :data:`DerainFn` running ``net`` (inputs/outputs RGB in [0, 1]) on ``device``."""

    def run(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device).float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, amp):
            y = tiled(net, x, tile, tile_overlap)
        return to_uint8(y[0])

    return run


def identity_fn(rgb: np.ndarray) -> np.ndarray:
    """The rainy-input baseline."""
    return rgb


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float
    seconds: float


@dataclass
class SetScore:
    name: str
    root: str
    layout: str
    images: list[ImageScore] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return len(self.images)

    @property
    def psnr(self) -> float:
        return float(np.mean([s.psnr for s in self.images])) if self.images else math.nan

    @property
    def ssim(self) -> float:
        return float(np.mean([s.ssim for s in self.images])) if self.images else math.nan

    @property
    def seconds_per_image(self) -> float:
        return float(np.mean([s.seconds for s in self.images])) if self.images else math.nan

    def as_dict(self, per_image: bool = False) -> dict:
        out = {"set": self.name, "root": self.root, "layout": self.layout, "pairs": self.pairs,
               "psnr": _finite(self.psnr), "ssim": _finite(self.ssim), "seconds_per_image": _finite(self.seconds_per_image)}
        if per_image:
            out["images"] = [{"name": s.name, "psnr": _finite(s.psnr), "ssim": _finite(s.ssim),
                              "seconds": s.seconds} for s in self.images]
        return out


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _sync(device: "torch.device | None") -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def score_pairs(pairs: Sequence[Pair], derain: DerainFn, save_dir: Path | None = None,
                device: torch.device | None = None, progress: bool = False, desc: str = "scoring",
                read: Callable[[Path], np.ndarray] = read_rgb) -> list[ImageScore]:
    """Derain and score each pair; optionally save each result as ``save_dir/<name>.png``."""
    from tqdm import tqdm

    scores = []
    for pair in tqdm(pairs, desc=desc, unit="img", disable=not progress, leave=False):
        rainy, clean = read(pair.rainy), read(pair.clean)
        if rainy.shape != clean.shape:
            raise DataError(f"{pair.rainy} ({rainy.shape[1]}x{rainy.shape[0]}) and {pair.clean} "
                            f"({clean.shape[1]}x{clean.shape[0]}) differ in size")
        _sync(device)
        t0 = time.perf_counter()
        result = derain(rainy)
        _sync(device)
        seconds = time.perf_counter() - t0
        s = score_pair(result, clean)
        scores.append(ImageScore(pair.name, s.psnr, s.ssim, seconds))
        if save_dir is not None:
            write_rgb(save_dir / f"{pair.name}.png", result)
    return scores


def score_set(pset: PairedSet, derain: DerainFn, limit: int = 0, save_dir: Path | None = None,
              device: torch.device | None = None, progress: bool = False) -> SetScore:
    pairs = pset.pairs[:limit] if limit else pset.pairs
    out_dir = save_dir / pset.name if save_dir is not None else None
    images = score_pairs(pairs, derain, out_dir, device, progress, desc=pset.name)
    return SetScore(pset.name, str(pset.root), pset.layout, images)


def shard(items: Sequence, rank: int, world: int) -> list:
    """Every ``world``-th item starting at ``rank`` (validation across DDP ranks)."""
    return list(items[rank::world])

