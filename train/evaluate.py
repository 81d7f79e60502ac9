"""``derain-eval``: score a checkpoint (or the rainy input) on paired test folders.

Prints one row per set: pairs, PSNR and SSIM on the MATLAB Y channel (the papers' protocol,
:mod:`train.metrics`, the same code validation uses) and seconds per image; ``--json`` prints
the same as JSON. ``--save-dir`` keeps the derained images (PNG) per set.

Examples::

    derain-eval --identity ../shared/data/Rain100L/test          # 26.90 dB / 0.838
    derain-eval --model runs/video/best.pt ../shared/data/Rain100L/test --save-dir out/
    derain-eval --model video Datasets/test --json                # every set under Datasets/test
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

import model
from model import CheckpointError

from .datasets import PairedSet, find_paired_sets
from .images import DataError
from .scoring import SetScore, identity_fn, network_fn, score_set

log = logging.getLogger("train.evaluate")


class EvalError(RuntimeError):
    """Bad arguments for derain-eval (one-line message)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="derain-eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a deraining model on paired folders: PSNR and SSIM on the Y channel as the papers' "
                    "MATLAB scripts compute them, and seconds per image.",
        epilog="A DIR is one paired set (PReNet rain-N/norain-N, MPRNet input/+target/, Rain1400, CLIP_Rain/+CLIP_GT/) "
               "or a folder of such sets (one table row each).\n\n"
               "Examples:\n  derain-eval --identity ../shared/data/Rain100L/test\n"
               "  derain-eval --model runs/video/best.pt ../shared/data/Rain100L/test --save-dir derained/")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="paired test folder(s)")
    p.add_argument("--model", default=None, metavar="PATH_OR_PRESET",
                   help=f"checkpoint file or preset with shipped weights (default: {model.DEFAULT_MODEL})")
    p.add_argument("--identity", action="store_true", help="score the rainy inputs themselves (the baseline)")
    p.add_argument("--save-dir", metavar="DIR", help="write the derained images here, DIR/<set>/<name>.png")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--per-image", action="store_true", help="also list every image's scores")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="score only the first N pairs of each set")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="mixed-precision inference (default none: scores in fp32)")
    p.add_argument("--tile", type=int, default=0, metavar="PX",
                   help="run the network on overlapping PX x PX tiles (large images, small GPUs)")
    p.add_argument("--tile-overlap", type=int, default=32, metavar="PX", help="tile overlap (default 32)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="tqdm progress (auto: terminal)")
    return p


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise EvalError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"--device {spec}: CUDA is not available here")
    return device


def _check_save_dir(save_dir: Path, sets: Sequence[PairedSet]) -> None:
    target = save_dir.resolve()
    for s in sets:
        root = s.root.resolve()
        if target == root or root in target.parents:
            raise EvalError(f"--save-dir {save_dir} is inside the data folder {s.root}; choose a folder outside it")


def format_table(results: Sequence[SetScore], label: str) -> str:
    rows = [(r.name, str(r.pairs), f"{r.psnr:.2f}", f"{r.ssim:.4f}", f"{r.seconds_per_image:.3f}") for r in results]
    if len(results) > 1:
        n = sum(r.pairs for r in results)
        psnr = sum(r.psnr * r.pairs for r in results) / n
        ssim = sum(r.ssim * r.pairs for r in results) / n
        sec = sum(r.seconds_per_image * r.pairs for r in results) / n
        rows.append(("all (per image)", str(n), f"{psnr:.2f}", f"{ssim:.4f}", f"{sec:.3f}"))
    head = ("set", "pairs", "PSNR", "SSIM", "s/image")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(5)]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(5))

    lines = [f"model: {label}", fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.limit < 0:
        raise EvalError("--limit must be >= 0")
    if args.tile and args.tile < 16:
        raise EvalError("--tile must be at least 16 pixels")
    if args.identity and args.model:
        raise EvalError("give either --model or --identity, not both")
    sets: list[PairedSet] = []
    for d in args.dirs:
        sets += find_paired_sets(d)
    save_dir = Path(args.save_dir).expanduser() if args.save_dir else None
    if save_dir is not None:
        _check_save_dir(save_dir, sets)
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.identity:
        derain, label, meta = identity_fn, "identity (rainy input)", {}
    else:
        if args.amp == "fp16" and device.type != "cuda":
            raise EvalError("--amp fp16 needs a CUDA device")
        net = model.load(args.model, map_location="cpu").to(device)
        channels_last = device.type == "cuda"
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        derain = network_fn(net, device, args.amp, channels_last, args.tile, args.tile_overlap)
        label = f"{args.model or model.DEFAULT_MODEL} ({getattr(net, 'checkpoint_meta', {}).get('preset', 'custom')}, " \
                f"{model.count_parameters(net):,} parameters, {device.type})"
        meta = dict(getattr(net, "checkpoint_meta", {}))
    progress = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    results = [score_set(s, derain, args.limit, save_dir, device if not args.identity else None, progress) for s in sets]
    if args.json:
        out = {"model": None if args.identity else (args.model or model.DEFAULT_MODEL), "identity": bool(args.identity),
               "device": device.type, "protocol": "Y channel (MATLAB rgb2ycbcr), PSNR, SSIM 11x11 gaussian valid",
               "sets": [r.as_dict(args.per_image) for r in results]}
        if meta.get("training"):
            out["training"] = {k: meta["training"].get(k) for k in ("steps", "patches_seen", "best_val")}
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        print(format_table(results, label))
        if args.per_image:
            for r in results:
                for s in r.images:
                    print(f"{r.name}\t{s.name}\t{s.psnr:.2f}\t{s.ssim:.4f}\t{s.seconds:.3f}")
    if save_dir is not None:
        log.info("derained images written under %s", save_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return run(argv)
    except (EvalError, DataError, CheckpointError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
