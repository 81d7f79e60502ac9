"""derain-train under torchrun: 2 CPU processes on gloo train the same network as one process
with the same global batch (DistributedDataParallel, rank-sliced patch stream, rank 0 writes)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train import cli

TINY = json.dumps({"features": 8, "stages": 2, "blocks": 1, "steps": 1, "fusion_reduction": 4})
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_two_process_gloo_run_matches_one_process(shared_data, tmp_path):
    args = ["--preset", "tiny", "--model-config", TINY, "--data", str(shared_data / "RainTrainL-sample"),
            "--synthetic-clean", str(shared_data / "Rain13K-sample"), "--steps", "6", "--batch", "4", "--patch", "32",
            "--val", str(shared_data / "RainTrainH-sample"), "--val-every", "3", "--val-limit", "3",
            "--log-every", "3", "--threads", "1", "--progress", "off", "--no-tensorboard"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "train.cli", *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stderr
    assert cli.main([*args, "--out", str(tmp_path / "single")]) == 0

    ddp = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    assert ddp["meta"]["training"]["world_size"] == 2 and ddp["training_state"]["step"] == 6
    for k, v in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    # Validation is sharded over the ranks and summed: same pairs, same score.
    assert ddp["meta"]["training"]["val"]["pairs"] == 3
    assert abs(ddp["meta"]["training"]["val"]["psnr"] - single["meta"]["training"]["val"]["psnr"]) < 1e-3
    # Only rank 0 wrote: one log, no stray files.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "last.pt", "options.json", "train.log"]
