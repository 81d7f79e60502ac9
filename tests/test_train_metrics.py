"""train.metrics: the MATLAB protocol (Y, PSNR, SSIM 'valid'), the torch SSIM, and the
published rainy-input scores of Rain100L test (26.90 dB / 0.838)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train import metrics
from train.datasets import load_paired_set
from train.images import read_rgb


def test_y_channel_matches_matlab_rgb2ycbcr():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # MATLAB: rgb2ycbcr(uint8([0 0 0; 255 255 255; 255 0 0; 0 255 0; 0 0 255])) -> Y = 16 235 81 145 41
    assert metrics.rgb_to_y(rgb).tolist() == [[16, 235, 81, 145, 41]]


def test_y_rounds_half_away_from_zero_like_matlab():
    # 16 + (65.481*2 + 128.553*44 + 24.966*141)/255 == 52.5 exactly in float64.
    px = np.array([[[2, 44, 141]]], np.uint8)
    exact = 16 + (65.481 * 2 + 128.553 * 44 + 24.966 * 141) / 255
    assert exact == 52.5 and np.round(exact) == 52  # numpy rounds halves to even
    assert metrics.rgb_to_y(px)[0, 0] == 53


def test_psnr_of_a_known_difference():
    a = np.full((20, 20, 3), 100, np.uint8)
    b = a.copy()
    b[:10] = 110  # Y differs by round(16 + 10*0.859 ... ) -> check through Y directly
    ya, yb = metrics.rgb_to_y(a), metrics.rgb_to_y(b)
    mse = np.mean((ya - yb) ** 2)
    assert metrics.psnr(b, a) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-12)
    assert metrics.psnr(a, a) == math.inf


def _ssim_brute_force(y1: np.ndarray, y2: np.ndarray) -> float:
    """Direct transcription of Wang's ssim_index.m with filter2(..., 'valid')."""
    g = metrics.gaussian_window_1d()
    w = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, wd = y1.shape
    vals = []
    for i in range(h - 10):
        for j in range(wd - 10):
            a, b = y1[i:i + 11, j:j + 11], y2[i:i + 11, j:j + 11]
            m1, m2 = (w * a).sum(), (w * b).sum()
            s1 = (w * a * a).sum() - m1 * m1
            s2 = (w * b * b).sum() - m2 * m2
            s12 = (w * a * b).sum() - m1 * m2
            vals.append(((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1 * m1 + m2 * m2 + c1) * (s1 + s2 + c2)))
    return float(np.mean(vals))


def test_ssim_is_the_valid_region_gaussian_ssim():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (23, 27, 3), dtype=np.uint8)
    noisy = np.clip(clean.astype(int) + rng.integers(-40, 41, clean.shape), 0, 255).astype(np.uint8)
    y1, y2 = metrics.rgb_to_y(noisy), metrics.rgb_to_y(clean)
    assert metrics.ssim(noisy, clean) == pytest.approx(_ssim_brute_force(y1, y2), abs=1e-12)
    assert metrics.ssim(clean, clean) == pytest.approx(1.0, abs=1e-12)
    assert metrics.gaussian_window_1d().sum() == pytest.approx(1.0)


def test_torch_ssim_agrees_with_the_scoring_ssim():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    y1 = torch.from_numpy(metrics.rgb_to_y(a))[None, None]
    y2 = torch.from_numpy(metrics.rgb_to_y(b))[None, None]
    got = metrics.ssim_torch(y1, y2, data_range=255.0).item()
    assert got == pytest.approx(metrics.ssim(a, b), abs=1e-10)
    # Differentiable, per-image reduction.
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    per_image = metrics.ssim_torch(x, torch.rand(2, 3, 16, 16), reduction="none")
    assert per_image.shape == (2,)
    per_image.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_inputs_give_clear_errors():
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        metrics.score_pair(a, np.zeros((20, 21, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        metrics.score_pair(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(np.zeros((8, 30, 3), np.uint8), np.zeros((8, 30, 3), np.uint8))


def test_to_uint8_rounds_like_saving():
    t = torch.tensor([0.0, 0.6 / 255, 1.49 / 255, 1.0, 1.2, -0.1]).view(1, 1, 6).expand(3, 1, 6)
    assert metrics.to_uint8(t)[0, :, 0].tolist() == [0, 1, 1, 255, 255, 0]


def test_rain100l_rainy_input_scores_match_the_published_values(shared_data):
    pset = load_paired_set(shared_data / "Rain100L" / "test")
    assert len(pset) == 100
    scores = [metrics.score_pair(read_rgb(p.rainy), read_rgb(p.clean)) for p in pset.pairs]
    psnr = np.mean([s.psnr for s in scores])
    ssim = np.mean([s.ssim for s in scores])
    assert round(psnr, 2) == 26.90, psnr
    assert round(ssim, 3) == 0.838 and round(ssim, 4) == 0.8382, ssim
