"""train.synthesis: light rain scores like Rain100L, heavy like Rain100H, video rain moves
consistently, rendering is reproducible and parameters are checked."""
from __future__ import annotations

import numpy as np
import pytest

from train.datasets import load_paired_set
from train.images import read_rgb
from train.metrics import psnr
from train.synthesis import (STRENGTHS, RainField, RainParams, RainSynthesizer, add_rain, params_for_strength,
                             parse_strength, render_video)


@pytest.fixture(scope="module")
def clean_images(shared_data):
    """Clean halves of real training pairs (never a test split)."""
    paths = [p.clean for p in load_paired_set(shared_data / "RainTrainH-sample").pairs[:8]]
    paths += [p.clean for p in load_paired_set(shared_data / "Rain13K-sample").pairs[:8]]
    images = [read_rgb(p) for p in paths]
    return [im for im in images if max(im.shape) <= 640][:12]  # Rain13K has a few 3072x2048 images


def _mean_psnr(images, strength, seed):
    synth = RainSynthesizer(STRENGTHS[strength])
    rng = np.random.default_rng(seed)
    return float(np.mean([psnr(synth.render(img, rng), img) for img in images]))


def test_light_rain_is_like_rain100l_and_heavy_like_rain100h(clean_images):
    light = _mean_psnr(clean_images, "light", 0)
    heavy = _mean_psnr(clean_images, "heavy", 0)
    medium = _mean_psnr(clean_images, "medium", 0)
    # Rain100L rainy inputs score 26.90 dB, Rain100H about 13.6 dB (the papers' tables).
    assert 24.5 < light < 30.0, light
    assert 11.5 < heavy < 17.0, heavy
    assert heavy < medium < light


def test_strength_extremes_on_one_image(clean_images):
    img = clean_images[0]
    rng = np.random.default_rng(3)
    weak = [psnr(add_rain(img, params_for_strength(0.0, rng), rng), img) for _ in range(3)]
    strong = [psnr(add_rain(img, params_for_strength(1.0, rng), rng), img) for _ in range(3)]
    assert min(weak) > max(strong) + 8


def test_rain_only_brightens_and_is_reproducible(clean_images):
    img = clean_images[1]
    p = RainParams(density=0.01, length=20, width=1.5, angle=15, brightness=0.8, blur=0.7, layers=2)
    a = add_rain(img, p, np.random.default_rng(7))
    b = add_rain(img, p, np.random.default_rng(7))
    c = add_rain(img, p, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (a.astype(int) >= img.astype(int)).all()
    assert (a != img).any(axis=2).mean() > 0.05


def test_streaks_lean_with_the_angle():
    def orientation(angle):
        field = RainField(RainParams(density=0.003, length=30, width=1, angle=angle, blur=0, layers=1),
                          200, 200, np.random.default_rng(1))
        layer = field.layer(0).astype(np.float64)
        gy, gx = np.gradient(layer)
        # Streak direction is perpendicular to the dominant gradient; compare the structure tensor.
        return (gx * gy).sum() / np.sqrt((gx * gx).sum() * (gy * gy).sum())

    assert abs(orientation(0)) < 0.1
    assert orientation(30) * orientation(-30) < 0  # opposite leans


def test_video_rain_moves_consistently_between_frames():
    p = RainParams(density=0.004, length=16, width=1.2, angle=20, brightness=0.8, blur=0.0, layers=1, speed=7.0)
    field = RainField(p, 120, 160, np.random.default_rng(5))
    x0, y0 = field.drop_positions(3.0)
    x1, y1 = field.drop_positions(4.0)
    layer = field.layers[0]
    same = (np.abs(y1 - y0 - layer["vy"]) < 1e-9)  # drops that did not wrap around
    assert same.mean() > 0.8
    assert np.allclose(x1[same] - x0[same], layer["vx"]) or np.allclose(
        np.mod(x1[same] - x0[same], layer["dom"][1]), np.mod(layer["vx"], layer["dom"][1]))
    assert np.hypot(layer["vx"], layer["vy"]) == pytest.approx(7.0)

    # The rain layer of frame t+1 is that of frame t moved by the velocity (away from the borders).
    import cv2

    a, b = field.layer(3.0), field.layer(4.0)
    shift = np.float32([[1, 0, layer["vx"]], [0, 1, layer["vy"]]])
    moved = cv2.warpAffine(a, shift, (160, 120), flags=cv2.INTER_LINEAR)
    inner = (slice(30, 90), slice(30, 130))

    def corr(u, v):
        u, v = u[inner].ravel() - u[inner].mean(), v[inner].ravel() - v[inner].mean()
        return float(u @ v / np.sqrt((u @ u) * (v @ v)))

    assert corr(moved, b) > 0.9
    assert corr(a, b) < 0.5  # the rain really moves


def test_rendered_video_is_reproducible_and_never_repeats():
    frames = [np.full((48, 64, 3), 60, np.uint8) for _ in range(40)]
    p = RainParams(density=0.01, length=10, speed=9.0)
    one = list(render_video(frames, p, np.random.default_rng(2)))
    two = list(render_video(frames, p, np.random.default_rng(2)))
    assert len(one) == 40 and all(np.array_equal(a, b) for a, b in zip(one, two))
    assert all((f > 60).any() for f in one)
    # Drops wrapping around get new positions: no frame repeats an earlier one.
    assert not any(np.array_equal(one[i], one[j]) for i in range(40) for j in range(i + 1, 40))
    with pytest.raises(ValueError, match="frame 1"):
        list(render_video([frames[0], np.zeros((10, 10, 3), np.uint8)], p, np.random.default_rng(0)))


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="brightness"):
        RainParams(brightness=1.5)
    with pytest.raises(ValueError, match="density=-1"):
        RainParams(density=-1)
    assert parse_strength("light") == STRENGTHS["light"]
    assert parse_strength("0.2:0.4") == (0.2, 0.4)
    assert parse_strength("0.5") == (0.5, 0.5)
    for bad in ("storm", "0.8:0.2", "1.5"):
        with pytest.raises(ValueError, match="rain strength"):
            parse_strength(bad)
    with pytest.raises(ValueError, match="uint8"):
        add_rain(np.zeros((8, 8, 3), np.float32), RainParams(), np.random.default_rng(0))


def _write_clip(path, frames=6, w=64, h=48):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (np.arange(w) * 3 + i * 5) % 256
            img[..., 1] = 90
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_render_cli_writes_trainable_pairs_from_images_and_videos(tmp_path):
    from train import render
    from train.datasets import load_paired_set
    from train.images import write_rgb

    photos = tmp_path / "photos"
    for i in range(2):
        write_rgb(photos / f"p{i}.jpg", np.full((40, 50, 3), 80 + 40 * i, np.uint8))
    assert render.main([str(photos), str(tmp_path / "pairs"), "--strength", "light"]) == 0
    s = load_paired_set(tmp_path / "pairs")
    assert s.layout == "mprnet" and len(s) == 2
    assert render.main([str(photos), str(tmp_path / "r1400"), "--copies", "3", "--strength", "heavy"]) == 0
    s = load_paired_set(tmp_path / "r1400")
    assert s.layout == "rain1400" and len(s) == 6

    videos = tmp_path / "videos"
    videos.mkdir()
    _write_clip(videos / "street.mp4")
    assert render.main([str(videos), str(tmp_path / "vid"), "--strength", "0.5"]) == 0
    s = load_paired_set(tmp_path / "vid")
    assert s.layout == "video" and len(s) == 6 and s.pairs[0].name == "street/00001"
    rainy = [read_rgb(p.rainy).astype(int) for p in s.pairs]
    clean = [read_rgb(p.clean).astype(int) for p in s.pairs]
    assert all((r - c).mean() > 1 for r, c in zip(rainy, clean))
    assert not np.array_equal(rainy[0] - clean[0], rainy[1] - clean[1])  # the rain moves

    assert render.main([str(photos), str(tmp_path / "pairs")]) == 2  # refuses a non-empty output
    assert render.main([str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
