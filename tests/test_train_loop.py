"""derain-train end to end (in process, tiny network): the loss falls, checkpoints are normal
derain-video checkpoints, --resume continues exactly, Ctrl-C saves, bad runs are refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from train import cli
from train.datasets import ImageStore, PatchSource, list_clean_images
from train.losses import DerainLoss
from train.synthesis import RainSynthesizer

TINY = json.dumps({"features": 8, "stages": 2, "blocks": 1, "steps": 1, "fusion_reduction": 4})
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def data(shared_data):
    return {"pairs": str(shared_data / "RainTrainL-sample"), "clean": str(shared_data / "Rain13K-sample"),
            "val": str(shared_data / "RainTrainH-sample"), "test": str(shared_data / "Rain100L" / "test")}


def tiny_args(data, out, *extra):
    return ["--preset", "tiny", "--model-config", TINY, "--data", data["pairs"], "--synthetic-clean", data["clean"],
            "--batch", "4", "--patch", "32", "--rain-strength", "0.3:0.7", "--threads", "1", "--log-every", "4", "--save-every", "4",
            "--progress", "off", "--out", str(out), *extra]


def states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_short_training_run_lowers_the_loss(data, tmp_path):
    out = tmp_path / "run"
    assert cli.main(tiny_args(data, out, "--steps", "60", "--lr", "5e-3", "--batch", "8", "--synthetic-from-pairs",
                              "--rain-strength", "0.3:0.7", "--val", data["val"], "--val-every", "30",
                              "--val-limit", "2", "--schedule", "cosine")) == 0
    # A fixed batch of unseen synthetic pairs: the trained network beats its (identity) start.
    clean = list_clean_images(data["clean"])
    source = PatchSource([], clean, ImageStore(), 48, seed=123, synthesizer=RainSynthesizer((0.3, 0.7)))
    batch = [source.sample(10_000 + i) for i in range(16)]
    rainy = torch.from_numpy(np.stack([r for r, _ in batch])).permute(0, 3, 1, 2).float() / 255
    target = torch.from_numpy(np.stack([c for _, c in batch])).permute(0, 3, 1, 2).float() / 255
    crit = DerainLoss()
    start = model.build(model.DerainConfig(**json.loads(TINY), input_skip=True))
    trained = model.load(out / "last.pt")
    with torch.no_grad():
        before = crit(start(rainy), target)
        after = crit(trained(rainy), target)
    assert after["loss"] < 0.97 * before["loss"], (before, after)
    assert after["mse"] < 0.8 * before["mse"], (before, after)

    # Checkpoints: weights_only, model.load(), a model-card-like meta, best.pt without optimiser state.
    raw = torch.load(out / "last.pt", weights_only=True)
    assert raw["training_state"]["step"] == 60
    meta = raw["meta"]["training"]
    assert meta["steps"] == 60 and meta["patches_seen"] == 480 and meta["pairs"] == 10
    assert meta["val"]["pairs"] == 2 and 5 < meta["val"]["psnr"] < 60
    best = torch.load(out / "best.pt", weights_only=True)
    assert "training_state" not in best and best["meta"]["training"]["best_val"]["step"] in (30, 60)
    assert model.load(out / "best.pt").checkpoint_meta["preset"] == "custom"
    assert (out / "train.log").read_text().count("validation: PSNR") == 2
    assert list((out / "tensorboard").iterdir())
    assert json.loads((out / "options.json").read_text())["steps"] == 60
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_resume_continues_exactly(data, tmp_path):
    common = ["--steps", "8", "--val", data["val"], "--val-every", "4", "--val-limit", "1", "--no-tensorboard"]
    assert cli.main(tiny_args(data, tmp_path / "straight", *common)) == 0
    assert cli.main(tiny_args(data, tmp_path / "split", *common, "--stop-at", "4")) == 0
    half = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert half["training_state"]["step"] == 4
    # Resume with the run folder only: options, step, optimiser, schedule and data stream continue.
    assert cli.main(["--resume", str(tmp_path / "split"), "--progress", "off"]) == 0
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert b["training_state"]["step"] == 8
    assert states_equal(a["state_dict"], b["state_dict"])  # bit-identical: same batches, same updates
    sa, sb = a["training_state"]["optimizer"]["state"], b["training_state"]["optimizer"]["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    log = (tmp_path / "split" / "train.log").read_text()
    assert "steps 4..8" in log
    # Already finished: resuming again trains nothing and changes nothing.
    assert cli.main(["--resume", str(tmp_path / "split"), "--progress", "off"]) == 0
    c = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert states_equal(b["state_dict"], c["state_dict"])


def test_config_file_and_flag_precedence(data, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"patch": 40, "batch": 2, "steps": 3, "seed": 9}))
    out = tmp_path / "cfg"
    assert cli.main(tiny_args(data, out, "--config", str(cfg), "--steps", "2", "--no-tensorboard")) == 0
    opts = json.loads((out / "options.json").read_text())
    # tiny_args sets --batch 4 and --patch 32 explicitly: flags beat the file; the file beats defaults.
    assert (opts["patch"], opts["batch"], opts["steps"], opts["seed"]) == (32, 4, 2, 9)


@pytest.mark.parametrize("extra, match", [
    (["--patch", "8"], "--patch must be at least 16"),
    (["--config", '{"nonsense": 1}'], "unknown option"),
    (["--model-config", '{"features": 7}'], "invalid model config"),
    (["--resume", "/nonexistent/run"], "--resume"),
    (["--rain-strength", "storm"], "rain strength"),
])
def test_bad_options_fail_with_one_line(data, tmp_path, caplog, extra, match):
    assert cli.main(tiny_args(data, tmp_path / "bad", "--steps", "1", *extra)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and match in errors[-1] and "\n" not in errors[-1]


def test_test_split_and_existing_runs_are_refused(data, tmp_path, caplog):
    args = tiny_args(data, tmp_path / "t", "--steps", "1", "--no-tensorboard")
    assert cli.main(args + ["--val", data["test"]]) == 2
    assert "looks like a test split" in caplog.records[-1].getMessage()
    assert not (tmp_path / "t").exists()
    assert cli.main(args + ["--data", data["test"], "--allow-test-data", "--val-limit", "1"]) == 0
    assert cli.main(args) == 2
    assert "already holds a training run" in caplog.records[-1].getMessage()
    assert cli.main(args + ["--overwrite"]) == 0


def test_ctrl_c_saves_and_exits_cleanly(data, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "train.cli", *tiny_args(data, out, "--steps", "100000", "--save-every", "100000",
                                                         "--log-every", "1", "--workers", "1", "--no-tensorboard")]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "step 3/" in line:
                break
        else:
            pytest.fail("training did not start: " + "".join(lines))
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in rest, rest
    assert "stopped at step" in rest
    state = torch.load(out / "last.pt", weights_only=True)["training_state"]
    assert 3 <= state["step"] < 100000
    assert cli.main(["--resume", str(out), "--steps", str(state["step"] + 2), "--progress", "off"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["training_state"]["step"] == state["step"] + 2
