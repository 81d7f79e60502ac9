"""Cost of every preset: parameters, multiply-adds per pixel, and CPU time per image.

For each preset: trainable parameters, multiply-accumulates per pixel (torch's FLOP counter),
and wall-clock seconds to derain one 481x321 image (the Rain100L size) in fp32 on the CPU with
``torch.set_num_threads(threads)``, with channels-last memory format on and off. Prints a
markdown table (and optionally writes JSON)::

    derain-bench costs                     # or: python -m benchmarks.model_costs
    derain-bench costs --presets tiny video --reps 5 --json costs.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

import model

log = logging.getLogger(__name__)

HEIGHT, WIDTH = 321, 481


def time_image(net: model.IterativeDerainNet, channels_last: bool, reps: int,
               height: int = HEIGHT, width: int = WIDTH) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds per image for ``reps`` timed runs (after one untimed
    warm-up run). CPU seconds add up all threads and are less disturbed by other work."""
    module = model.Derainer(net).eval()
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    wall, cpu = [], []
    with torch.inference_mode():
        module(x)
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            module(x)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def measure_costs(presets: Sequence[str], reps: int = 3, paper_reps: int = 1,
                  threads: int = 2) -> list[dict[str, Any]]:
    """One row per preset (see the module docstring)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for name in presets:
            net = model.build(name).eval()
            n = paper_reps if name == "paper" else reps
            log.info("timing %s (%d run(s) per layout)", name, n)
            row: dict[str, Any] = {
                "preset": name,
                "parameters": model.count_parameters(net),
                "macs_per_pixel": model.macs_per_pixel(net, 64, 64),
                "reps": n,
            }
            for layout, flag in (("channels_last", True), ("contiguous", False)):
                wall, cpu = time_image(net, flag, n)
                row[f"seconds_{layout}"] = statistics.median(wall)
                row[f"cpu_seconds_{layout}"] = statistics.median(cpu)
                row[f"all_seconds_{layout}"] = wall
            rows.append(row)
    finally:
        torch.set_num_threads(previous)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], threads: int = 2) -> str:
    lines = [
        f"| preset | parameters | MACs / pixel | wall s / 481x321 image, channels_last | wall s, contiguous | "
        f"CPU s, channels_last | CPU s, contiguous | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['parameters']:,} | {r['macs_per_pixel'] / 1e6:.3f} M | "
                     f"{r['seconds_channels_last']:.3f} | {r['seconds_contiguous']:.3f} | "
                     f"{r['cpu_seconds_channels_last']:.3f} | {r['cpu_seconds_contiguous']:.3f} | {r['reps']} |")
    lines.append(f"\nfp32, {threads} torch threads, median of the runs; CPU s = process CPU time "
                 "(all threads).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="derain-bench costs",
        description="Parameters, multiply-adds per pixel and CPU seconds per 481x321 image (fp32) "
                    "of each network preset, with channels-last on and off.")
    p.add_argument("--presets", nargs="+", default=list(model.PRESETS), metavar="PRESET",
                   help=f"presets to measure (default: all: {', '.join(model.PRESETS)})")
    p.add_argument("--reps", type=int, default=3, help="timed runs per preset and layout (default 3)")
    p.add_argument("--paper-reps", type=int, default=1,
                   help="timed runs for the slow 'paper' preset (default 1; ~12 s each on 2 cores)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    unknown = [p for p in args.presets if p not in model.PRESETS]
    if unknown:
        print(f"derain-bench costs: error: unknown preset {unknown[0]!r}; known: {', '.join(model.PRESETS)}",
              file=sys.stderr)
        return 2
    if min(args.reps, args.paper_reps, args.threads) < 1:
        print("derain-bench costs: error: --reps, --paper-reps and --threads must be >= 1", file=sys.stderr)
        return 2
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "threads": args.threads, "torch": torch.__version__,
            "image": f"{WIDTH}x{HEIGHT}", "precision": "fp32", "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg())}
    rows = measure_costs(args.presets, args.reps, args.paper_reps, args.threads)
    meta["load_average_at_end"] = list(os.getloadavg())
    print(markdown_table(rows, args.threads))
    if args.json:
        try:
            args.json.write_text(json.dumps({"meta": meta, "costs": rows}, indent=1))
        except OSError as exc:
            print(f"derain-bench costs: error: cannot write {args.json}: {exc.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
