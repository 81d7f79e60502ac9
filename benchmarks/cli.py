"""``derain-bench``: how fast the network and the whole pipeline run on this machine.

Two measurements, printed as markdown tables and optionally written as JSON:

* network alone: frames per second per model, backend, precision, batch and resolution
  (4K in tiles), engine build time, PSNR of reduced precisions against fp32, peak memory
  (:mod:`benchmarks.network_fps`);
* end to end (``--e2e``): a generated clip through the real pipeline, with the per-stage
  breakdown (decode, copy in, infer, copy out, encode) (:mod:`benchmarks.end_to_end`).

``derain-bench costs`` prints each preset's parameters, MACs per pixel and CPU time per
image instead (:mod:`benchmarks.model_costs`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

import model
from model import CheckpointError
from pipeline.backends import backend_names, backend_status
from pipeline.engine import resolve_device

from . import model_costs
from .end_to_end import e2e_table, run_e2e
from .network_fps import Case, load_network, network_table, parse_resolution, resolve_tile, run_cases

log = logging.getLogger("benchmarks")
PROG = "derain-bench"

#: What runs when an option is not given, per device type. Kept small on CPU (minutes).
DEFAULTS: dict[str, dict[str, list[Any]]] = {
    "cpu": {"presets": ["tiny", "video"], "resolutions": ["360p"], "backends": ["eager"],
            "precisions": ["fp32"], "batch": [1], "frames": [12]},
    "cuda": {"presets": ["tiny", "video", "small", "paper"], "resolutions": ["360p", "720p", "1080p", "4k"],
             "backends": ["all"], "precisions": ["fp16"], "batch": [1, 4], "frames": [240]},
}

EPILOG = """\
examples:
  derain-bench --device cpu                                  (tiny and video presets, 360p)
  derain-bench --device cpu --presets tiny video --resolutions 360p --backends eager \\
               --precisions fp32 bf16 --batch 1 --e2e --frames 12 --json cpu.json
  derain-bench --device cuda --backends tensorrt compile eager --precisions fp16 bf16 fp32 \\
               --batch 1 4 --resolutions 360p 720p 1080p 4k --json gpu-network.json
  derain-bench --device cuda --no-network --e2e --presets video --backends auto \\
               --precisions fp16 --batch 4 --e2e-resolution 1080p --frames 240
  derain-bench --presets runs/video/best.pt --resolutions 1280x720   (a trained checkpoint)
  derain-bench costs                                         (parameters, MACs, CPU s/image)

defaults: on CPU the tiny and video presets at 360p, eager fp32, batch 1, 12 e2e frames; on
CUDA every preset at 360p/720p/1080p/4K, every backend that can run, fp16, batch 1 and 4,
240 e2e frames. --backends all means every backend that can run on the device; auto what
derain-video would pick. A backend that cannot run falls back as in derain-video, and the
table shows which one ran.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Measure derain-video's speed: the network alone per backend, precision, "
                    "batch and resolution, and (--e2e) the whole decode-derain-encode pipeline "
                    "with a per-stage breakdown. Prints tables; --json writes every number.")
    w = p.add_argument_group("what to measure")
    w.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    w.add_argument("--presets", nargs="+", metavar="MODEL",
                   help="presets (shipped weights if any, else untrained: same speed) or checkpoint paths")
    w.add_argument("--backends", nargs="+", metavar="NAME",
                   help="auto, all, or backend names: " + ", ".join(backend_names()))
    w.add_argument("--precisions", nargs="+", choices=("fp32", "fp16", "bf16"), metavar="P",
                   help="fp32, fp16 (CUDA only), bf16")
    w.add_argument("--batch", nargs="+", type=_positive_int, metavar="N", help="batch sizes")
    w.add_argument("--resolutions", nargs="+", metavar="RES",
                   help="360p, 480p, 720p, 1080p, 1440p, 4k or WIDTHxHEIGHT")
    w.add_argument("--tile", default="auto", metavar="N",
                   help="tile size in pixels, none, or auto (default: 1024-pixel tiles above 1080p)")
    w.add_argument("--tile-overlap", type=int, default=32, metavar="M", help="tile overlap (default 32)")
    w.add_argument("--no-network", action="store_true", help="skip the network-alone measurement")
    t = p.add_argument_group("timing")
    t.add_argument("--min-seconds", type=_non_negative_float, default=2.0, metavar="S",
                   help="time each case for at least S seconds (default 2)")
    t.add_argument("--min-iters", type=_positive_int, default=3, metavar="N",
                   help="and at least N batches (default 3)")
    t.add_argument("--engine-cache", metavar="DIR",
                   help="where TensorRT engines are cached (default $DERAIN_ENGINE_CACHE or "
                        "~/.cache/derain-video/engines)")
    e = p.add_argument_group("end to end")
    e.add_argument("--e2e", action="store_true", help="also run the whole pipeline on a generated clip")
    e.add_argument("--frames", type=_positive_int, metavar="N", help="frames in the clip (default 12 on CPU, 240 on CUDA)")
    e.add_argument("--e2e-resolution", metavar="RES",
                   help="clip size (default: the first of --resolutions)")
    e.add_argument("--codec", default="auto", help="output encoder, as derain-video --codec (default auto)")
    o = p.add_argument_group("output")
    o.add_argument("--json", type=Path, metavar="FILE", help="write every measurement and the machine as JSON")
    o.add_argument("-v", "--verbose", action="store_true",
                   help="log each case, the engine choice and the encoder (default: warnings only)")
    return p


def machine_info(device: torch.device) -> dict[str, Any]:
    """The hardware and software the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join([PROG, *sys.argv[1:]]),
        "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device), "backends": backend_status(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_mib=props.total_memory // 2 ** 20,
                    compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def _plan(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Resolve defaults and validate the lists; ``ValueError`` (one line) for bad values."""
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    presets = args.presets or defaults["presets"]
    precisions = args.precisions or defaults["precisions"]
    if device.type == "cpu" and "fp16" in precisions:
        raise ValueError("fp16 is not supported on CPU; use --precisions fp32 bf16")
    status = backend_status(device)
    backends: list[str] = []
    for name in args.backends or defaults["backends"]:
        if name == "all":
            backends += [b for b, reason in status.items() if reason is None]
        elif name == "auto" or name in status:
            backends.append(name)
        else:
            raise ValueError(f"unknown backend {name!r}; choose from auto, all, {', '.join(status)}")
    backends = list(dict.fromkeys(backends))
    resolutions = [parse_resolution(r) for r in (args.resolutions or defaults["resolutions"])]
    if args.tile not in ("auto", "none"):
        if not args.tile.isdigit() or int(args.tile) <= 2 * args.tile_overlap:
            raise ValueError(f"--tile must be auto, none or a size larger than twice --tile-overlap, got {args.tile!r}")
    if args.tile_overlap < 0:
        raise ValueError("--tile-overlap must be >= 0")
    e2e_res = parse_resolution(args.e2e_resolution) if args.e2e_resolution else resolutions[0]
    for spec in presets:
        if spec not in model.PRESETS and not Path(spec).expanduser().exists():
            raise ValueError(f"model {spec!r} is neither a preset ({', '.join(model.PRESETS)}) nor an existing file")
    return {"presets": presets, "precisions": precisions, "backends": backends, "resolutions": resolutions,
            "batch": args.batch or defaults["batch"], "frames": args.frames or defaults["frames"][0],
            "e2e_resolution": e2e_res}


def _cases(plan: dict[str, Any], tile: str, overlap: int) -> list[Case]:
    cases = []
    for spec, (label, h, w), backend, precision, batch in itertools.product(
            plan["presets"], plan["resolutions"], plan["backends"], plan["precisions"], plan["batch"]):
        cases.append(Case(spec, backend, precision, batch, label, h, w, resolve_tile(tile, h, w), overlap))
    return cases


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="derain-bench", unit="case", disable=not sys.stderr.isatty(), leave=False)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["costs"]:
        return model_costs.main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    def error(message: str, code: int = 2) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return code

    try:
        device = resolve_device(args.device)
        plan = _plan(args, device)
    except (ValueError, RuntimeError) as exc:
        return error(str(exc).splitlines()[0])
    try:
        nets = {spec: load_network(spec) for spec in plan["presets"]}
    except CheckpointError as exc:
        return error(str(exc), 3)

    result: dict[str, Any] = {"machine": machine_info(device), "network": [], "e2e": []}
    cases = [] if args.no_network else _cases(plan, args.tile, args.tile_overlap)
    e2e_cases = list(itertools.product(plan["presets"], plan["backends"], plan["precisions"], plan["batch"])) \
        if args.e2e else []
    progress = _progress(len(cases) + len(e2e_cases))
    status = 0
    try:
        run_cases(cases, nets, device, min_seconds=args.min_seconds, min_iters=args.min_iters,
                  cache_dir=args.engine_cache, progress=progress, rows=result["network"])
        for spec, backend, precision, batch in e2e_cases:
            label, h, w = plan["e2e_resolution"]
            net, weights = nets[spec]
            log.info("e2e: %s %s %s batch %d %s, %d frames", spec, backend, precision, batch, label, plan["frames"])
            result["e2e"].append(run_e2e(
                net, model_name=spec, weights=weights, device=device, backend=backend, precision=precision,
                batch=batch, resolution=label, height=h, width=w, frames=plan["frames"],
                tile=resolve_tile(args.tile, h, w), tile_overlap=args.tile_overlap,
                cache_dir=args.engine_cache, codec=args.codec))
            progress.update(1)
    except KeyboardInterrupt:
        result["interrupted"] = True
        status = 130
    except Exception as exc:  # report what was measured, then a one-line error
        result["error"] = f"{type(exc).__name__}: {exc}"
        status = error(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1)
        if args.verbose:
            log.exception("benchmark failed")
    finally:
        progress.close()
    result["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    m = result["machine"]
    print(f"# derain-bench {m['date']}\n\n{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
          + (f", {m['gpu']}" if "gpu" in m else "") + f", torch {m['torch']}, device {m['device']}\n")
    if result["network"]:
        print("## Network alone\n\n" + network_table(result["network"]) + "\n")
    if result["e2e"]:
        print("## End to end\n\n" + e2e_table(result["e2e"]) + "\n")
    if args.json:
        try:
            _write_json(args.json, result)
        except OSError as exc:
            return error(f"cannot write {args.json}: {exc.strerror or exc}", 1)
    if status == 130:
        print(f"{PROG}: interrupted", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
