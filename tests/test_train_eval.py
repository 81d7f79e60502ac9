"""derain-eval on real Rain100L pairs: the identity baseline, a real checkpoint, saved images,
JSON, tiling, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from train import evaluate
from train.datasets import load_paired_set
from train.images import read_rgb
from train.metrics import score_pair
from model.tiling import tiled as _tiled

REPO = Path(__file__).resolve().parents[1]
TINY = model.DerainConfig(features=8, stages=2, blocks=1, steps=1, wavelet="decimated", fusion_reduction=4,
                          input_skip=True)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def rain100l(shared_data):
    return shared_data / "Rain100L" / "test"


def _json(capsys, argv):
    assert evaluate.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_identity_baseline_on_real_pairs(rain100l, capsys):
    out = _json(capsys, ["--identity", str(rain100l), "--limit", "5", "--json", "--per-image"])
    (s,) = out["sets"]
    assert s["set"] == "Rain100L/test" and s["pairs"] == 5 and s["layout"] == "prenet"
    pairs = load_paired_set(rain100l).pairs[:5]
    direct = [score_pair(read_rgb(p.rainy), read_rgb(p.clean)) for p in pairs]
    assert s["psnr"] == pytest.approx(np.mean([d.psnr for d in direct]), abs=1e-9)
    assert s["ssim"] == pytest.approx(np.mean([d.ssim for d in direct]), abs=1e-12)
    assert [i["name"] for i in s["images"]] == ["001", "002", "003", "004", "005"]


def test_checkpoint_scores_table_and_saved_images(rain100l, tmp_path, capsys):
    torch.manual_seed(0)
    net = model.build(TINY)  # input_skip: an untrained network is (numerically) the identity
    ckpt = model.save_checkpoint(net, tmp_path / "net.pt", meta={"preset": "custom"})
    save = tmp_path / "derained"
    assert evaluate.main(["--model", str(ckpt), str(rain100l), "--limit", "3", "--save-dir", str(save),
                          "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "Rain100L/test" in table and "PSNR" in table and "s/image" in table
    saved = sorted((save / "Rain100L" / "test").glob("*.png"))
    assert [p.name for p in saved] == ["001.png", "002.png", "003.png"]
    out = _json(capsys, ["--model", str(ckpt), str(rain100l), "--limit", "3", "--json", "--per-image", "--threads", "1"])
    base = _json(capsys, ["--identity", str(rain100l), "--limit", "3", "--json"])
    s = out["sets"][0]
    assert s["psnr"] == pytest.approx(base["sets"][0]["psnr"], abs=0.02)
    assert s["seconds_per_image"] > 0
    # The saved images score exactly as reported (same rounding, same metric code).
    pairs = load_paired_set(rain100l).pairs[:3]
    for img, pair, rec in zip(saved, pairs, s["images"]):
        assert score_pair(read_rgb(img), read_rgb(pair.clean)).psnr == pytest.approx(rec["psnr"], abs=1e-9)


def test_tiles_blend_seamlessly():
    x = torch.rand(1, 3, 70, 90)
    f = lambda t: t * 0.5 + 0.1  # noqa: E731  (a pointwise "network": tiling must not change it)
    torch.testing.assert_close(_tiled(f, x, 32, 8), f(x))


def test_errors_are_one_line(rain100l, tmp_path, caplog):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 100)
    # The real console entry point: exit status 2 and exactly one line on stderr.
    proc = subprocess.run([sys.executable, "-m", "train.evaluate", "--model", str(bad), str(rain100l)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a readable checkpoint" in lines[0], proc.stderr
    cases = [
        (["--identity", str(tmp_path / "missing")], "not found"),
        (["--identity", "--model", "video", str(rain100l)], "either --model or --identity"),
        (["--identity", str(rain100l), "--save-dir", str(rain100l / "out")], "inside the data folder"),
        (["--model", "nonexistent.pt", str(rain100l)], "neither a preset"),
    ]
    for argv, match in cases:
        caplog.clear()
        assert evaluate.main(argv) == 2, argv
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and match in errors[0] and "\n" not in errors[0], errors
    assert not (rain100l / "out").exists()
