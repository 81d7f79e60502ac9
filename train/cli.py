"""``derain-train``: train the deraining network on paired data and/or synthetic rain.

Examples::

    derain-train --preset video --data RainTrainH --data Rain13K --synthetic-clean clean_photos \\
        --val my_val_pairs --steps 200000 --out runs/video
    derain-train --resume runs/video                      # continue exactly where it stopped
    torchrun --nproc_per_node=4 -m train.cli --config run.json   # DistributedDataParallel

Option precedence: defaults < the run's own options (with --resume) < --config file < flags.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import model
from model import CheckpointError

from .images import DataError
from .schedule import PAPER_MILESTONES, SCHEDULES
from .synthesis import STRENGTHS
from .trainer import LAST, TrainingError, TrainOptions, Trainer

log = logging.getLogger("train")
EXIT_USAGE = 2


def _json_or_file(text: str) -> Any:
    """Inline JSON, or the path of a JSON file."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        source, raw = "inline JSON", stripped
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise TrainingError(f"{text!r} is neither inline JSON nor an existing JSON file")
        source, raw = str(path), path.read_text()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{source} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


def build_parser(suppress: bool = False) -> argparse.ArgumentParser:
    """The argument parser; with ``suppress`` no defaults are set (to see which flags were given)."""
    d = TrainOptions()

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p = argparse.ArgumentParser(
        prog="derain-train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the iterative ResLSTM deraining network (Park, Park & Eom 2024) on paired rainy/clean "
                    "images and/or rain rendered on clean images.",
        epilog="Data layouts (detected from each folder): PReNet/Rain100 (rain-N.png beside norain-N.png, or "
               "rainy/rain-N.png), MPRNet/Restormer (input/ + target/), Rain1400 (rainy_image/N_k.jpg + "
               "ground_truth/N.jpg), video frame pairs (CLIP_Rain/ + CLIP_GT/); or a folder of such sets.\n"
               "Paths with a component named test/Test100/testing... (or NTURain-synthetic) are refused as "
               "training or validation data unless --allow-test-data is given: scores on data you trained or "
               "selected checkpoints on are meaningless.\n\n"
               "Examples:\n"
               "  derain-train --preset video --data RainTrainH --synthetic-clean photos --val val_pairs --out runs/v\n"
               "  derain-train --resume runs/v\n"
               "  torchrun --nproc_per_node=2 -m train.cli --data RainTrainH --batch 32 --out runs/ddp")
    p.add_argument("--config", metavar="JSON", default=default(None),
                   help="JSON file (or inline JSON) of options, keys as the long flag names with underscores, "
                        'e.g. {"preset": "video", "patch": 96, "data": ["RainTrainH"]}; flags override it')
    m = p.add_argument_group("network")
    m.add_argument("--preset", choices=sorted(model.PRESETS), default=default(d.preset),
                   help=f"network preset (default: {d.preset})")
    m.add_argument("--model-config", metavar="JSON", default=default(None),
                   help="DerainConfig fields overriding the preset, inline JSON or a file, "
                        "e.g. '{\"features\": 16, \"stages\": 2}'")
    m.add_argument("--init", metavar="CKPT", default=default(None),
                   help="start from the weights of this checkpoint (fine-tuning); a fresh optimiser and schedule")
    m.add_argument("--resume", metavar="CKPT_OR_DIR", default=default(None),
                   help=f"continue a run exactly (model, optimiser, schedule, step, RNG) from a checkpoint or a run "
                        f"folder's {LAST}; the run's options are reused, flags given now override them")

    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", action="append", default=default(None),
                   help="paired training data folder (repeatable)")
    g.add_argument("--synthetic-clean", metavar="DIR", action="append", default=default(None),
                   help="folder of clean images or clean video frame folders; rain is rendered on the fly "
                        "(repeatable; a paired folder contributes its clean images)")
    g.add_argument("--synthetic-from-pairs", action="store_true", default=default(False),
                   help="also render rain on the clean images of the --data pairs")
    g.add_argument("--synthetic-ratio", type=float, metavar="R", default=default(None),
                   help="fraction of samples with synthetic rain when both kinds exist (default 0.5)")
    g.add_argument("--rain-strength", metavar="S", default=default(d.rain_strength),
                   help=f"synthetic rain strength: {', '.join(f'{k} ({a:g}-{b:g})' for k, (a, b) in STRENGTHS.items())}"
                        f" or A:B in [0, 1]; 0 is like Rain100L (~27 dB), 1 heavier than Rain100H (default {d.rain_strength})")
    g.add_argument("--rain-angle", metavar="MIN:MAX", default=default(d.rain_angle),
                   help=f"synthetic streak angle range in degrees from vertical (default {d.rain_angle})")
    g.add_argument("--patch", type=int, metavar="PX", default=default(d.patch), help=f"square patch size (default {d.patch})")
    g.add_argument("--batch", type=int, metavar="N", default=default(d.batch),
                   help=f"global batch size, split over DDP processes (default {d.batch})")
    g.add_argument("--flip", choices=("none", "h", "hv"), default=default(d.flip),
                   help="random flips: horizontal (h, default), horizontal+vertical (hv) or none")
    g.add_argument("--workers", type=int, metavar="N", default=default(d.workers),
                   help="data loader worker processes (default: 0 on CPU, up to 8 on CUDA)")
    g.add_argument("--cache-gb", type=float, metavar="GB", default=default(d.cache_gb),
                   help=f"memory for decoded images; the rest is decoded on every use (default {d.cache_gb:g})")
    g.add_argument("--seed", type=int, default=default(d.seed), help="seed of the weights and of the patch stream")
    g.add_argument("--allow-test-data", action="store_true", default=default(False),
                   help="allow paths that look like test splits as --data/--synthetic-clean/--val (don't)")

    v = p.add_argument_group("validation")
    v.add_argument("--val", metavar="DIR", action="append", default=default(None),
                   help="held-in paired folder scored (PSNR/SSIM, Y channel) every --val-every steps (repeatable)")
    v.add_argument("--val-holdout", type=int, metavar="N", default=default(d.val_holdout),
                   help="hold N random --data pairs out of training and validate on them")
    v.add_argument("--val-every", type=int, metavar="STEPS", default=default(d.val_every),
                   help=f"validation interval (default {d.val_every}); best.pt is written on improvement")
    v.add_argument("--val-limit", type=int, metavar="N", default=default(d.val_limit),
                   help="score only the first N pairs of each validation set (default all)")

    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=default(d.steps), help=f"total optimiser steps (default {d.steps})")
    o.add_argument("--lr", type=float, default=default(d.lr), help=f"Adam learning rate (default {d.lr:g})")
    o.add_argument("--schedule", choices=SCHEDULES, default=default(d.schedule),
                   help=f"learning-rate schedule (default {d.schedule})")
    o.add_argument("--milestones", type=float, nargs="+", metavar="M", default=default(None),
                   help="multistep milestones: fractions of --steps (<1) or step numbers; default the paper "
                        f"family's {', '.join(f'{m:.3f}' for m in PAPER_MILESTONES)}")
    o.add_argument("--gamma", type=float, default=default(d.gamma), help="multistep factor (default 0.5)")
    o.add_argument("--min-lr", type=float, default=default(d.min_lr), help="cosine final rate (default 1e-6)")
    o.add_argument("--warmup", type=int, default=default(d.warmup), help="linear warm-up steps (default 0)")
    o.add_argument("--weight-decay", type=float, default=default(d.weight_decay), help="Adam weight decay")
    o.add_argument("--ssim-weight", type=float, default=default(d.ssim_weight),
                   help=f"loss = MSE + W * (1 - SSIM) (default {d.ssim_weight:g})")
    o.add_argument("--stage-weight", type=float, default=default(d.stage_weight),
                   help="weight of the same loss on each earlier stage's output (default 0: final only)")
    o.add_argument("--clip-grad", type=float, default=default(d.clip_grad),
                   help=f"clip the gradient norm to this (0: off; default {d.clip_grad:g})")

    r = p.add_argument_group("runtime")
    r.add_argument("--device", default=default(d.device), help="auto (default), cpu, cuda or cuda:N")
    r.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"), default=default(d.amp),
                   help="mixed precision (auto: bf16 on CUDA when supported, else fp16; none on CPU)")
    r.add_argument("--channels-last", choices=("auto", "on", "off"), default=default(d.channels_last),
                   help="channels_last memory format (auto: on for CUDA)")
    r.add_argument("--threads", type=int, default=default(d.threads),
                   help="CPU threads per process (default: all cores / processes on this node)")
    r.add_argument("--backend", choices=("gloo", "nccl"), default=default(None),
                   help="torch.distributed backend under torchrun (default nccl on CUDA, gloo on CPU)")

    w = p.add_argument_group("output")
    w.add_argument("--out", metavar="DIR", default=default(None),
                   help=f"run folder: {LAST} (every --save-every steps, atomically), best.pt, train.log, "
                        "options.json, tensorboard/ (default runs/<preset>, or the resumed run's folder)")
    w.add_argument("--overwrite", action="store_true", default=default(False),
                   help=f"start a new run in an --out that already holds {LAST}")
    w.add_argument("--save-every", type=int, metavar="STEPS", default=default(d.save_every),
                   help=f"write {LAST} every this many steps (default {d.save_every})")
    w.add_argument("--log-every", type=int, metavar="STEPS", default=default(d.log_every),
                   help=f"log and tensorboard scalars every this many steps (default {d.log_every})")
    w.add_argument("--image-every", type=int, metavar="STEPS", default=default(d.image_every),
                   help="tensorboard sample images interval (default: with validation)")
    w.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=default(True),
                   help="do not write tensorboard logs")
    w.add_argument("--progress", choices=("auto", "on", "off"), default=default(d.progress),
                   help="tqdm progress bar (auto: on a terminal)")
    w.add_argument("--stop-at", type=int, metavar="STEP", default=default(None),
                   help="this session only: save and stop after this step (continue later with --resume)")
    w.add_argument("--time-limit", type=float, metavar="MINUTES", default=default(None),
                   help="this session only: save and stop after this many minutes of training")
    w.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug logging")
    return p


_NOT_OPTIONS = {"config", "resume", "verbose"}


def resolve_options(argv: Sequence[str] | None) -> tuple[TrainOptions, dict | None, str | None, bool]:
    """Merge defaults, the resumed run's options, the config file and explicit flags."""
    args = build_parser().parse_args(argv)
    explicit = vars(build_parser(suppress=True).parse_args(argv))
    values: dict[str, Any] = TrainOptions().to_dict()
    names = TrainOptions.field_names()

    resume_data, resume_path = None, None
    if args.resume:
        path = Path(args.resume).expanduser()
        if path.is_dir():
            path = path / LAST
        try:
            resume_data = model.read_checkpoint(path)
        except CheckpointError as exc:
            raise TrainingError(f"--resume: {exc}") from None
        resume_path = str(path)
        state = resume_data.get("training_state")
        if not isinstance(state, dict) or not isinstance(state.get("args"), dict):
            raise TrainingError(f"--resume {path}: not a training checkpoint (no training state); "
                                "use --init to fine-tune from its weights")
        values.update({k: v for k, v in state["args"].items() if k in names and k not in TrainOptions.SESSION_ONLY})
        values["out"] = str(path.parent) if "out" not in explicit else values["out"]
    if args.config:
        cfg = _json_or_file(args.config)
        if not isinstance(cfg, dict):
            raise TrainingError("--config must hold a JSON object of options")
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise TrainingError(f"--config: unknown option(s) {', '.join(unknown)}")
        values.update(cfg)
    for key, value in explicit.items():
        if key in _NOT_OPTIONS:
            continue
        if key == "model_config":
            value = _json_or_file(value) if value else None
            if value is not None and not isinstance(value, dict):
                raise TrainingError("--model-config must be a JSON object of DerainConfig fields")
        values[key] = value
    if values.get("out") is None:
        values["out"] = f"runs/{values['preset']}"
    try:
        opts = TrainOptions(**values)
    except TypeError as exc:
        raise TrainingError(f"invalid options: {exc}") from None
    for key in ("data", "synthetic_clean", "val", "milestones"):
        if isinstance(getattr(opts, key), (str, int, float)):
            setattr(opts, key, [getattr(opts, key)])
    return opts, resume_data, resume_path, bool(args.verbose)


def _setup_logging(verbose: bool) -> None:
    import os

    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    fmt = "%(asctime)s %(levelname)s %(message)s" if rank == 0 else f"%(asctime)s [rank {rank}] %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("train").setLevel(level)  # also when the root logger was configured elsewhere


def main(argv: Sequence[str] | None = None) -> int:
    verbose = "-v" in (argv if argv is not None else sys.argv[1:]) or "--verbose" in (argv if argv is not None else sys.argv[1:])
    _setup_logging(verbose)
    try:
        opts, resume_data, resume_path, _ = resolve_options(argv)
        trainer = Trainer(opts, resume_data, resume_path)
        show_bar = opts.progress == "on" or (opts.progress == "auto" and sys.stderr.isatty())
        if show_bar:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():
                return trainer.run()
        return trainer.run()
    except (TrainingError, DataError, CheckpointError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("aborted without saving")
        return 130
    except MemoryError:
        log.error("out of memory: lower --batch, --patch or --cache-gb")
        return 1
    except RuntimeError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "out of memory" in text.lower():
            log.error("out of memory on the device: lower --batch or --patch (%s)", text)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
