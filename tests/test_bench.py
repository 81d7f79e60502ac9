"""``derain-bench`` on the CPU: its JSON, its tables, ``costs``, and one-line errors.

Timings are never asserted (benchmarks/ measures, tests only check the plumbing).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import model

from benchmarks import cli

FAST = ["--device", "cpu", "--presets", "tiny", "--backends", "eager", "--min-seconds", "0", "--min-iters", "1"]


def test_derain_bench_cpu_writes_its_json(tmp_path, capsys):
    out = tmp_path / "bench" / "out.json"
    rc = cli.main([*FAST, "--resolutions", "96x64", "--precisions", "fp32", "bf16", "--batch", "1", "2",
                   "--e2e", "--frames", "3", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    machine = data["machine"]
    assert machine["device"] == "cpu" and machine["cpu_count"] >= 1 and machine["command"].startswith("derain-bench")
    assert machine["backends"]["tensorrt"] == "needs a CUDA device" and machine["backends"]["eager"] is None
    network = data["network"]
    assert [(r["precision"], r["batch"]) for r in network] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    for row in network:
        assert row["ran"] == "eager" and row["resolution"] == "96x64" and row["tile"] is None
        assert row["fps"] > 0 and row["iterations"] >= 1 and row["peak_host_mib"] > 0
        assert row["peak_device_mib"] is None and row["weights"] in ("untrained", "shipped")
    assert "psnr_vs_fp32" not in network[0] and network[2]["psnr_vs_fp32"] > 30
    e2e = data["e2e"]
    assert len(e2e) == 4 and all(r["frames"] == 3 and r["fps"] > 0 for r in e2e)
    assert set(e2e[0]["stage_seconds"]) == {"decode", "copy_in", "infer", "copy_out", "encode"}
    assert e2e[0]["stage_seconds"]["infer"] > 0 and e2e[0]["encoder"] in ("libx264", "h264_nvenc")
    printed = capsys.readouterr().out
    assert "## Network alone" in printed and "## End to end" in printed
    weights = "shipped" if model.available_models()["tiny"] else "untrained"
    assert f"| tiny | {weights} | eager |" in printed


def test_4k_resolutions_are_tiled_by_default():
    from benchmarks.network_fps import parse_resolution, resolve_tile

    assert parse_resolution("4K") == ("4k", 2160, 3840)
    assert resolve_tile("auto", 2160, 3840) == 1024
    assert resolve_tile("auto", 1080, 1920) is None
    assert resolve_tile("512", 360, 640) == 512


def test_costs_prints_a_markdown_table(tmp_path, capsys):
    out = tmp_path / "costs.json"
    assert cli.main(["costs", "--presets", "tiny", "--reps", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| preset | parameters | MACs / pixel |") and "| tiny | 107,728 |" in table
    row = json.loads(out.read_text())["costs"][0]
    assert row["preset"] == "tiny" and row["seconds_channels_last"] > 0 and row["cpu_seconds_contiguous"] > 0


@pytest.mark.parametrize("args,message", [
    (["--precisions", "fp16"], "fp16 is not supported on CPU"),
    (["--backends", "onnx"], "unknown backend 'onnx'"),
    (["--resolutions", "huge"], "resolution 'huge' is neither"),
    (["--presets", "nonexistent.pt"], "neither a preset"),
    (["--tile", "40"], "--tile must be auto, none or a size"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert cli.main([*FAST, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("derain-bench: error:") and message in err and "\n" not in err


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--device", "cpu", "--precisions", "fp16"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "derain-bench: error: fp16 is not supported on CPU; use --precisions fp32 bf16"
