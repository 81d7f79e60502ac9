"""Frames per second of the network alone, per backend, precision, batch and resolution.

Each case builds an engine with :func:`pipeline.backends.create_engine` (so a backend that
cannot run falls back exactly as in the pipeline, and the row says which backend ran), warms
it up (engine builds and compilation are timed separately), then times ``run_tiled`` on a
device-resident batch until both ``min_iters`` and ``min_seconds`` are reached, so copies,
decoding and encoding are excluded. Reduced precisions are checked against the fp32 eager
output of the same rainy frame (PSNR).
"""
from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

import model
from pipeline.backends import create_engine

log = logging.getLogger(__name__)

RESOLUTIONS: dict[str, tuple[int, int]] = {
    "360p": (360, 640), "480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920),
    "1440p": (1440, 2560), "4k": (2160, 3840),
}
#: With ``--tile auto``, frames larger than 1080p are processed in tiles of this size.
AUTO_TILE = 1024


def parse_resolution(text: str) -> tuple[str, int, int]:
    """``720p``, ``4K`` or ``WIDTHxHEIGHT`` -> (label, height, width)."""
    key = text.lower()
    if key in RESOLUTIONS:
        return key, *RESOLUTIONS[key]
    w, sep, h = key.partition("x")
    if sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
        return f"{int(w)}x{int(h)}", int(h), int(w)
    raise ValueError(f"resolution {text!r} is neither one of {', '.join(RESOLUTIONS)} nor WIDTHxHEIGHT")


def resolve_tile(tile: str, height: int, width: int) -> int | None:
    """``auto`` (tiles of 1024 above 1080p), ``none`` or a size in pixels."""
    if tile == "auto":
        return AUTO_TILE if height * width > 1080 * 1920 else None
    if tile == "none":
        return None
    return int(tile)


def peak_host_mib() -> float:
    """Peak resident memory of this process so far (MiB; a high-water mark, never lowered)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def load_network(spec: str) -> tuple[model.IterativeDerainNet, str]:
    """A preset with its shipped weights when they exist (else untrained: same speed), or a
    checkpoint path. Returns the network and a word about its weights."""
    if spec in model.PRESETS:
        if model.available_models().get(spec):
            return model.load(spec), "shipped"
        return model.build(spec).eval(), "untrained"
    return model.load(spec), "checkpoint"


@dataclass(frozen=True)
class Case:
    model: str
    backend: str
    precision: str
    batch: int
    resolution: str
    height: int
    width: int
    tile: int | None
    tile_overlap: int = 32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_frame(height: int, width: int) -> np.ndarray:
    """One rainy frame of the synthetic scene the pipeline tests use."""
    from pipeline.synthetic import rainy_frames

    return next(iter(rainy_frames(width, height, 1, seed=7)))


def measure(case: Case, net: model.IterativeDerainNet, device: torch.device, *,
            min_seconds: float = 2.0, min_iters: int = 3, cache_dir: str | None = None,
            reference: np.ndarray | None = None, frame: np.ndarray | None = None) -> dict[str, Any]:
    """Time one case; returns a JSON-ready row. ``reference`` is the fp32 eager output of
    ``frame`` (for the PSNR check of reduced precisions)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    engine = create_engine(net, device=device, backend=case.backend, precision=case.precision,
                           tile=case.tile, tile_overlap=case.tile_overlap, batch=case.batch,
                           cache_dir=cache_dir)
    build_seconds = engine.warmup(case.height, case.width, case.batch)
    x = torch.rand(case.batch, 3, case.height, case.width, generator=torch.Generator().manual_seed(0))
    x = x.to(device, engine.dtype)
    iters, elapsed = 0, 0.0
    with torch.inference_mode():
        engine.run_tiled(x)  # a second warm-up: first-call effects other than compilation
        _sync(device)
        t0 = time.perf_counter()
        while iters < min_iters or elapsed < min_seconds:
            engine.run_tiled(x)
            _sync(device)
            iters += 1
            elapsed = time.perf_counter() - t0
    row: dict[str, Any] = asdict(case)
    row.update(
        ran=engine.active_backend, engine=engine.describe(), iterations=iters, seconds=elapsed,
        fps=iters * case.batch / elapsed, ms_per_batch=1000 * elapsed / iters,
        build_seconds=build_seconds, peak_host_mib=peak_host_mib(),
        peak_device_mib=torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None,
    )
    if reference is not None and frame is not None:
        out = engine.infer(frame[None])
        row["psnr_vs_fp32"] = psnr(out[0], reference)
    return row


def fp32_reference(net: model.IterativeDerainNet, device: torch.device, frame: np.ndarray,
                   tile: int | None, tile_overlap: int) -> np.ndarray:
    engine = create_engine(net, device=device, backend="eager", precision="fp32", tile=tile,
                           tile_overlap=tile_overlap)
    return engine.infer(frame[None])[0]


def run_cases(cases: list[Case], nets: dict[str, tuple[model.IterativeDerainNet, str]], device: torch.device,
              *, min_seconds: float, min_iters: int, cache_dir: str | None,
              progress: Any = None, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Measure every case, computing one fp32 reference per (model, resolution, tile).
    Rows are appended to ``rows`` as they are measured (kept if the run is interrupted)."""
    rows = [] if rows is None else rows
    references: dict[tuple[str, int, int, int | None], tuple[np.ndarray, np.ndarray]] = {}
    for case in cases:
        net, weights = nets[case.model]
        ref = frame = None
        if case.precision != "fp32":
            key = (case.model, case.height, case.width, case.tile)
            if key not in references:
                frame = sample_frame(case.height, case.width)
                references[key] = (frame, fp32_reference(net, device, frame, case.tile, case.tile_overlap))
            frame, ref = references[key]
        log.info("network: %s %s %s batch %d %s", case.model, case.backend, case.precision, case.batch,
                 case.resolution)
        try:
            row = measure(case, net, device, min_seconds=min_seconds, min_iters=min_iters,
                          cache_dir=cache_dir, reference=ref, frame=frame)
        except torch.cuda.OutOfMemoryError:
            row = {**asdict(case), "error": "out of GPU memory"}
            log.warning("%s at %s batch %d: out of GPU memory", case.model, case.resolution, case.batch)
        row["weights"] = weights
        rows.append(row)
        if progress is not None:
            progress.update(1)
    return rows


def network_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | weights | backend (ran) | precision | batch | resolution | tile | fps | ms / batch | "
             "build s | PSNR vs fp32 | peak host MiB | peak GPU MiB |",
             "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        backend = r["backend"] if r.get("ran") in (None, r["backend"]) else f"{r['backend']} ({r['ran']})"
        if "error" in r:
            lines.append(f"| {r['model']} | {r['weights']} | {backend} | {r['precision']} | {r['batch']} | "
                         f"{r['resolution']} | {r['tile'] or '-'} | {r['error']} | | | | | |")
            continue
        psnr_text = "-" if "psnr_vs_fp32" not in r else (
            "identical" if r["psnr_vs_fp32"] == float("inf") else f"{r['psnr_vs_fp32']:.1f} dB")
        gpu = "-" if r["peak_device_mib"] is None else f"{r['peak_device_mib']:.0f}"
        lines.append(f"| {r['model']} | {r['weights']} | {backend} | {r['precision']} | {r['batch']} | "
                     f"{r['resolution']} | {r['tile'] or '-'} | {r['fps']:.2f} | {r['ms_per_batch']:.1f} | "
                     f"{r['build_seconds']:.1f} | {psnr_text} | {r['peak_host_mib']:.0f} | {gpu} |")
    return "\n".join(lines)
