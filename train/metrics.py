"""Image quality metrics exactly as the deraining papers' MATLAB scripts compute them.

Scoring (numpy, float64; see ``shared/docs/evaluation.md``):

* :func:`rgb_to_y` -- MATLAB ``rgb2ycbcr`` luma on uint8 RGB, rounded half away from zero
  back to uint8 values;
* :func:`psnr` -- ``20 log10(255 / RMSE)`` on Y;
* :func:`ssim` -- Wang et al. (2004) on Y: 11x11 Gaussian window (sigma 1.5, normalised),
  K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, mean of the map, no downsampling;
* :func:`score_pair` -- both at once for a (result, ground truth) pair of uint8 RGB images.

Training (torch, differentiable): :func:`ssim_torch` -- the same SSIM on any channels with a
configurable data range, used by the loss and checked against :func:`ssim` in the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03


def gaussian_window_1d(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', [size 1], sigma)``: sampled Gaussian, normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_rgb_uint8(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` on uint8 RGB: ``round_half_up(16 + (65.481 R + 128.553 G +
    24.966 B) / 255)`` in float64, returned as float64 holding integers 16..235."""
    _check_rgb_uint8(rgb, "rgb")
    c = rgb.astype(np.float64)
    y = 16.0 + (65.481 * c[..., 0] + 128.553 * c[..., 1] + 24.966 * c[..., 2]) / 255.0
    return np.floor(y + 0.5)  # y > 0, so this is rounding half away from zero


def psnr_y(y1: np.ndarray, y2: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR of two single-channel float images (``inf`` when identical)."""
    if y1.shape != y2.shape:
        raise ValueError(f"images differ in size: {y1.shape} vs {y2.shape}")
    mse = float(np.mean((y1.astype(np.float64) - y2.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(data_range / math.sqrt(mse))


def ssim_y(y1: np.ndarray, y2: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of two single-channel images with the MATLAB reference's 'valid' filtering."""
    if y1.shape != y2.shape:
        raise ValueError(f"images differ in size: {y1.shape} vs {y2.shape}")
    if min(y1.shape) < WINDOW:
        raise ValueError(f"images must be at least {WINDOW}x{WINDOW} for SSIM, got {y1.shape}")
    a = y1.astype(np.float64)
    b = y2.astype(np.float64)
    g = gaussian_window_1d()
    h = WINDOW // 2

    def filt(x: np.ndarray) -> np.ndarray:
        # Same-size separable correlation, then keep the region that needs no padding:
        # exactly MATLAB filter2(w, x, 'valid') (the border mode never reaches it).
        full = cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
        return full[h:-h, h:-h]

    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def psnr(result: np.ndarray, truth: np.ndarray) -> float:
    """PSNR on the MATLAB Y channel of two uint8 RGB images."""
    return psnr_y(rgb_to_y(result), rgb_to_y(truth))


def ssim(result: np.ndarray, truth: np.ndarray) -> float:
    """SSIM on the MATLAB Y channel of two uint8 RGB images."""
    return ssim_y(rgb_to_y(result), rgb_to_y(truth))


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


def score_pair(result: np.ndarray, truth: np.ndarray) -> Score:
    """PSNR and SSIM of a result against its ground truth (both uint8 RGB, same size)."""
    _check_rgb_uint8(result, "result")
    _check_rgb_uint8(truth, "truth")
    if result.shape != truth.shape:
        raise ValueError(f"result {result.shape[1]}x{result.shape[0]} and ground truth "
                         f"{truth.shape[1]}x{truth.shape[0]} differ in size")
    y1, y2 = rgb_to_y(result), rgb_to_y(truth)
    return Score(psnr_y(y1, y2), ssim_y(y1, y2))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A network output ``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8, as it would be saved."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got {tuple(image.shape)}")
    x = image.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


# ----------------------------------------------------------------------------------- torch

_WINDOW_CACHE: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _torch_window(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (channels, dtype, device)
    win = _WINDOW_CACHE.get(key)
    if win is None:
        g = torch.from_numpy(gaussian_window_1d()).to(device=device, dtype=dtype)
        win = torch.outer(g, g).expand(channels, 1, WINDOW, WINDOW).contiguous()
        _WINDOW_CACHE[key] = win
    return win


def ssim_torch(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
               reduction: str = "mean") -> torch.Tensor:
    """Differentiable SSIM of ``(N, C, H, W)`` tensors, per channel, 'valid' Gaussian filtering.

    ``reduction="mean"`` gives one scalar (mean over images, channels and map);
    ``"none"`` gives one value per image (mean over channels and map).
    Computed in float32 at least (half precision loses the small variances).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two equal (N, C, H, W) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < WINDOW:
        raise ValueError(f"images must be at least {WINDOW}x{WINDOW} for SSIM, got {tuple(x.shape[-2:])}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    y = y.to(dtype)
    c = x.shape[1]
    win = _torch_window(c, dtype, x.device)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    # One grouped convolution for all five filtered maps.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    filtered = F.conv2d(stacked, win.repeat(5, 1, 1, 1), groups=5 * c)
    mu1, mu2, xx, yy, xy = filtered.split(c, dim=1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = xx - mu1_sq, yy - mu2_sq, xy - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    if reduction == "mean":
        return ssim_map.mean()
    if reduction == "none":
        return ssim_map.flatten(1).mean(1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
