"""End-to-end pipeline speed: a generated clip through ``derain-video``'s own code path.

A synthetic rainy clip (H.264 with AAC audio, :func:`pipeline.synthetic.make_clip`) is
derained by :func:`pipeline.job.process_file` (decode, inference and encode threads, the real
sink and encoder choice) with an engine from :func:`pipeline.backends.create_engine` that is
built and warmed up before the clock starts. The per-stage breakdown combines the runner's
busy time of its decode and encode threads with the engine's copy-in / infer / copy-out
times (CUDA event times on a GPU). Stages overlap, so their sum exceeds the wall time; the
slowest stage bounds the throughput.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import model
from pipeline.backends import create_engine

from .network_fps import peak_host_mib

log = logging.getLogger(__name__)

STAGES = ("decode", "copy_in", "infer", "copy_out", "encode")


def run_e2e(net: model.IterativeDerainNet, *, model_name: str, weights: str, device: torch.device,
            backend: str, precision: str, batch: int, resolution: str, height: int, width: int,
            frames: int, tile: int | None, tile_overlap: int = 32, cache_dir: str | None = None,
            codec: str = "auto", workdir: Path | None = None) -> dict[str, Any]:
    """Derain a generated ``width`` x ``height`` clip of ``frames`` frames; a JSON-ready row."""
    from pipeline.encoders import EncoderSettings
    from pipeline.job import JobOptions, process_file
    from pipeline.runner import RunnerConfig
    from pipeline.synthetic import make_clip

    with tempfile.TemporaryDirectory(prefix="derain-bench-", dir=workdir) as tmp:
        clip = make_clip(Path(tmp) / "rainy.mp4", width=width, height=height, frames=frames, audio=True)
        engine = create_engine(net, device=device, backend=backend, precision=precision, tile=tile,
                               tile_overlap=tile_overlap, batch=batch, cache_dir=cache_dir,
                               frame_size=(height, width))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        before = engine.stage_times()
        options = JobOptions(encoder=EncoderSettings(codec=codec), runner=RunnerConfig(batch=batch),
                             overwrite=True)
        t0 = time.perf_counter()
        result = process_file(clip.path, Path(tmp) / "derained.mp4", engine, options)
        wall = time.perf_counter() - t0
        after = engine.stage_times()
    stats = result.stats
    stage_s = {
        "decode": stats["stages"]["decode"]["busy_s"],
        **{name: after[name] - before[name] for name in ("copy_in", "infer", "copy_out")},
        "encode": stats["stages"]["encode"]["busy_s"],
    }
    out_frames = stats["frames_out"]
    return {
        "model": model_name, "weights": weights, "backend": backend, "ran": engine.active_backend,
        "engine": engine.describe(), "precision": precision, "batch": batch, "resolution": resolution,
        "height": height, "width": width, "tile": tile, "frames": out_frames, "wall_s": wall,
        "fps": out_frames / wall if wall > 0 else 0.0, "runner_fps": stats["fps"],
        "stage_seconds": stage_s,
        "stage_ms_per_frame": {k: 1000 * v / max(out_frames, 1) for k, v in stage_s.items()},
        "encoder": stats["encoder"]["name"], "peak_host_mib": peak_host_mib(),
        "peak_device_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None,
    }


def e2e_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | backend (ran) | precision | batch | resolution | frames | fps | encoder | "
             "decode | copy in | infer | copy out | encode | peak host MiB | peak GPU MiB |",
             "|---|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        backend = r["backend"] if r["ran"] == r["backend"] else f"{r['backend']} ({r['ran']})"
        ms = r["stage_ms_per_frame"]
        gpu = "-" if r["peak_device_mib"] is None else f"{r['peak_device_mib']:.0f}"
        lines.append(f"| {r['model']} | {backend} | {r['precision']} | {r['batch']} | {r['resolution']} | "
                     f"{r['frames']} | {r['fps']:.2f} | {r['encoder']} | "
                     + " | ".join(f"{ms[s]:.1f}" for s in STAGES)
                     + f" | {r['peak_host_mib']:.0f} | {gpu} |")
    lines.append("\nStage columns: busy milliseconds per frame of each stage (they overlap; the "
                 "slowest one bounds fps).")
    return "\n".join(lines)
