"""The training loop behind ``derain-train``.

:class:`TrainOptions` holds every option as plain values (it is stored in checkpoints so that
``--resume`` continues with the same settings); :class:`Trainer` builds the network, data,
optimiser and schedule from it and runs: forward all stages, loss, backward (AMP, gradient
clipping), step, then logging, validation, checkpoints. One process or one per GPU/CPU
rank under ``torchrun`` (DistributedDataParallel; rank 0 writes everything).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import model
from model import CheckpointError, DerainConfig

from . import distributed as dist_utils
from .datasets import (ImageStore, PairedSet, PatchSource, StepBatchSampler, check_not_test_split,
                       find_paired_sets, list_clean_images, make_loader, natural_key)
from .losses import DerainLoss
from .schedule import PAPER_MILESTONES, LRSchedule
from .scoring import autocast, network_fn, score_pairs, shard
from .state import capture_rng, restore_rng, seed_everything
from .synthesis import RainSynthesizer, parse_strength

log = logging.getLogger("train")

LAST = "last.pt"
BEST = "best.pt"
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
#: PSNR of identical images is infinite; validation means cap each image here.
PSNR_CAP = 100.0


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (one-line message)."""


@dataclass
class TrainOptions:
    """Every ``derain-train`` option (see ``derain-train --help`` for their meaning)."""

    preset: str = model.DEFAULT_MODEL
    model_config: dict[str, Any] | None = None
    data: list[str] = field(default_factory=list)
    synthetic_clean: list[str] = field(default_factory=list)
    synthetic_from_pairs: bool = False
    synthetic_ratio: float | None = None
    rain_strength: str = "mixed"
    rain_angle: str = "-25:25"
    val: list[str] = field(default_factory=list)
    val_holdout: int = 0
    val_every: int = 1000
    val_limit: int = 0
    allow_test_data: bool = False
    out: str = "runs/derain"
    overwrite: bool = False
    steps: int = 100_000
    batch: int = 16
    patch: int = 64
    lr: float = 5e-4
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: list(PAPER_MILESTONES))
    gamma: float = 0.5
    min_lr: float = 1e-6
    warmup: int = 0
    weight_decay: float = 0.0
    ssim_weight: float = 0.2
    stage_weight: float = 0.0
    clip_grad: float = 1.0
    amp: str = "auto"
    channels_last: str = "auto"
    device: str = "auto"
    backend: str | None = None
    threads: int = 0
    workers: int = -1
    seed: int = 0
    flip: str = "h"
    save_every: int = 500
    log_every: int = 50
    image_every: int = 0
    cache_gb: float = 8.0
    tensorboard: bool = True
    progress: str = "auto"
    init: str | None = None
    stop_at: int | None = None
    time_limit: float | None = None

    #: Options that apply to one session only (not inherited by --resume).
    SESSION_ONLY = ("stop_at", "time_limit", "overwrite")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------------- helpers

def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise TrainingError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {spec}: CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        if device.type != "cuda":
            return "none"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("none", "bf16", "fp16"):
        raise TrainingError(f"--amp must be auto, none, bf16 or fp16, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs a CUDA device (use bf16 or none on CPU)")
    return amp


def model_config(opts: TrainOptions) -> tuple[DerainConfig, str]:
    """The network config and the preset name to record (``custom`` when overridden)."""
    if opts.preset not in model.PRESETS:
        raise TrainingError(f"unknown preset {opts.preset!r}; known presets: {', '.join(model.PRESETS)}")
    if not opts.model_config:
        return model.PRESETS[opts.preset], opts.preset
    base = model.PRESETS[opts.preset].to_dict()
    base.update(opts.model_config)
    try:
        cfg = DerainConfig.from_dict(base)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"invalid model config: {exc}") from None
    return cfg, (opts.preset if cfg == model.PRESETS[opts.preset] else "custom")


def parse_range(text: str, what: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or parts[0] > parts[1]:
        raise TrainingError(f"{what} must be MIN:MAX, got {text!r}")
    return parts[0], parts[1]


class _AllStages(nn.Module):
    """``forward`` returning every stage's output, so DistributedDataParallel sees it."""

    def __init__(self, net: model.IterativeDerainNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.forward_stages(x)


class _Stopper:
    """Ctrl-C / SIGTERM: finish the current step, save, exit. A second Ctrl-C more than two
    seconds later aborts at once (without saving)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signal is not None:
            if signum == signal.SIGINT and now - self._when > 2.0:
                raise KeyboardInterrupt
            return
        self.signal, self._when = signum, now
        log.warning("%s received: stopping after this step and saving (Ctrl-C again to abort without saving)",
                    signal.Signals(signum).name)


# ----------------------------------------------------------------------------------- trainer

class Trainer:
    """One training run. ``resume``: a checkpoint dict read by :func:`model.read_checkpoint`."""

    def __init__(self, opts: TrainOptions, resume: dict[str, Any] | None = None,
                 resume_path: str | None = None) -> None:
        self.opts = opts
        self.resume = resume
        self.resume_path = resume_path
        self.stopper = _Stopper()
        self.writer = None

    # -------------------------------------------------------------------------- set-up
    def _validate_options(self) -> None:
        o = self.opts
        for name in ("steps", "batch", "patch", "save_every", "log_every", "val_every"):
            if getattr(o, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be >= 1")
        if o.patch < 16:
            raise TrainingError("--patch must be at least 16 (SSIM needs 11x11 windows)")
        if o.lr <= 0:
            raise TrainingError("--lr must be positive")
        if o.synthetic_ratio is not None and not 0.0 <= o.synthetic_ratio <= 1.0:
            raise TrainingError("--synthetic-ratio must be between 0 and 1")
        if o.flip not in ("none", "h", "hv"):
            raise TrainingError("--flip must be none, h or hv")
        if not (o.data or o.synthetic_clean):
            raise TrainingError("no training data: give --data DIR (paired) and/or --synthetic-clean DIR (clean images)")
        if o.synthetic_from_pairs and not o.data:
            raise TrainingError("--synthetic-from-pairs needs --data")
        for option, paths in (("--data", o.data), ("--synthetic-clean", o.synthetic_clean), ("--val", o.val)):
            for p in paths:
                check_not_test_split(p, option, o.allow_test_data)

    def _setup_runtime(self) -> None:
        o = self.opts
        info = dist_utils.env_info()
        self.device = pick_device(o.device, info.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = dist_utils.setup(self.device, o.backend)
        if o.batch % self.dist.world:
            raise TrainingError(f"--batch {o.batch} is the global batch and must be divisible by the "
                                f"{self.dist.world} processes")
        self.per_rank = o.batch // self.dist.world
        self.amp = resolve_amp(o.amp, self.device)
        self.channels_last = o.channels_last == "on" or (o.channels_last == "auto" and self.device.type == "cuda")
        threads = o.threads or max(1, (os.cpu_count() or 1) // self.dist.local_world)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # pragma: no cover - cv2 is a dependency
            pass
        self.workers = o.workers if o.workers >= 0 else (0 if self.device.type == "cpu" else min(8, os.cpu_count() or 1))
        tty = sys.stderr.isatty()
        self.show_progress = self.dist.is_main and (o.progress == "on" or (o.progress == "auto" and tty))

    def _build_network(self) -> None:
        o = self.opts
        cfg, preset = model_config(o)
        if self.resume is not None:
            net = model.network_from_checkpoint(self.resume, source=self.resume_path or "resume checkpoint")
            if net.config != cfg:
                raise TrainingError(f"--resume {self.resume_path}: its network ({net.config}) differs from the "
                                    f"one asked for ({cfg}); drop --preset/--model-config to continue it")
            preset = self.resume.get("meta", {}).get("preset", preset)
        elif o.init:
            try:
                data = model.read_checkpoint(o.init)
                net = model.network_from_checkpoint(data, source=o.init)
            except CheckpointError as exc:
                raise TrainingError(f"--init: {exc}") from None
            if net.config != cfg and (o.model_config or o.preset != model.DEFAULT_MODEL):
                raise TrainingError(f"--init {o.init} holds a different network ({net.config}) than --preset/"
                                    f"--model-config ask for ({cfg})")
            cfg = net.config
            preset = data.get("meta", {}).get("preset", "custom")
            log.info("initialised from %s", o.init)
        else:
            seed_everything(o.seed)
            net = model.build(cfg)
        self.preset = preset
        self.net = net.to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net.train()
        stages = _AllStages(self.net)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_module: nn.Module = DDP(stages, device_ids=ids)
        else:
            self.train_module = stages

    def _build_optimisation(self) -> None:
        o = self.opts
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.schedule = LRSchedule(o.lr, o.steps, o.schedule, list(o.milestones), o.gamma, o.min_lr, o.warmup)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.criterion = DerainLoss(o.ssim_weight, o.stage_weight)
        self.step = 0
        self.elapsed_before = 0.0
        self.best: dict[str, Any] = {"psnr": -math.inf, "ssim": None, "step": None}
        self.last_val: dict[str, Any] | None = None
        if self.resume is not None:
            ts = self.resume.get("training_state")
            if not isinstance(ts, dict):
                raise TrainingError(f"--resume {self.resume_path} holds weights but no training state "
                                    "(use --init to start a new run from it)")
            try:
                self.optimizer.load_state_dict(ts["optimizer"])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise TrainingError(f"--resume {self.resume_path}: optimiser state does not fit: {exc}") from None
            if self.scaler is not None and ts.get("scaler"):
                self.scaler.load_state_dict(ts["scaler"])
            self.step = int(ts["step"])
            self.elapsed_before = float(ts.get("elapsed", 0.0))
            self.best = dict(ts.get("best", self.best))
            if self.best.get("psnr") is None:
                self.best["psnr"] = -math.inf
            self.last_val = ts.get("last_val")
            restore_rng(ts.get("rng", {}))
            if self.step >= o.steps:
                log.warning("checkpoint is at step %d, already >= --steps %d: nothing to train", self.step, o.steps)

    def _build_data(self) -> None:
        o = self.opts
        sets: list[PairedSet] = []
        for d in o.data:
            sets += find_paired_sets(d)
        pairs = [p for s in sets for p in s.pairs]
        self.val_sets: list[PairedSet] = []
        if o.val_holdout:
            if o.val_holdout >= len(pairs):
                raise TrainingError(f"--val-holdout {o.val_holdout} leaves no training pairs (there are {len(pairs)})")
            order = np.random.default_rng(o.seed).permutation(len(pairs))
            held = sorted(order[:o.val_holdout].tolist())
            held_set = set(held)
            self.val_sets.append(PairedSet(Path("holdout"), "holdout", [pairs[i] for i in held]))
            pairs = [p for i, p in enumerate(pairs) if i not in held_set]
        for v in o.val:
            self.val_sets += find_paired_sets(v)
        held_clean = {p.clean for s in self.val_sets for p in s.pairs}
        clean: list[Path] = []
        for d in o.synthetic_clean:
            clean += list_clean_images(d)
        if o.synthetic_from_pairs:
            clean += [p.clean for p in pairs]
        clean = sorted({p for p in clean if p not in held_clean}, key=lambda p: natural_key(str(p)))
        synth = None
        if clean:
            try:
                synth = RainSynthesizer(parse_strength(o.rain_strength), parse_range(o.rain_angle, "--rain-angle"))
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
        self.store = ImageStore(int(o.cache_gb * (1 << 30)))
        self.source = PatchSource(pairs, clean, self.store, o.patch, o.seed, o.flip, o.synthetic_ratio, synth)
        self.data_summary = {
            "data": [f"{s.root} ({s.layout}, {len(s)} pairs)" for s in sets],
            "pairs": len(pairs),
            "synthetic_clean_images": len(clean),
            "synthetic_ratio": self.source.synthetic_ratio,
            "rain": synth.describe() if synth else None,
            "val": [f"{s.root} ({len(s)} pairs)" for s in self.val_sets],
        }
        t0 = time.perf_counter()
        self.store.preload(self.source.paths(), progress=self.show_progress)
        self.store.freeze()
        if self.dist.is_main:
            log.info("training data: %d real pairs from %d set(s), %d clean images for synthetic rain "
                     "(ratio %.2f); %d images decoded (%.0f MB) in %.1f s", len(pairs), len(sets), len(clean),
                     self.source.synthetic_ratio, len(self.store), self.store.nbytes / 1e6, time.perf_counter() - t0)

    def _open_outputs(self) -> None:
        o = self.opts
        self.out = Path(o.out)
        if not self.dist.is_main:
            return
        if self.resume is None and (self.out / LAST).exists() and not o.overwrite:
            raise TrainingError(f"{self.out} already holds a training run ({LAST}); continue it with "
                                f"--resume {self.out}, or pass --overwrite / another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        self._log_handler = handler
        (self.out / "options.json").write_text(json.dumps(o.to_dict(), indent=2) + "\n")
        if o.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover
                log.warning("tensorboard is not installed: no training curves (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step or None)

    # -------------------------------------------------------------------------- checkpoints
    def meta(self) -> dict[str, Any]:
        o = self.opts
        return {
            "preset": self.preset,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "training": {
                "steps": self.step, "total_steps": o.steps, "batch": o.batch, "patch": o.patch,
                "patches_seen": self.step * o.batch, "loss": self.criterion.describe(),
                "optimizer": f"Adam lr {o.lr:g}", "schedule": o.schedule, "amp": self.amp,
                "seconds": round(self.elapsed(), 1), "world_size": self.dist.world, "device": self.device.type,
                "seed": o.seed, **self.data_summary,
                "val": self.last_val, "best_val": {k: self.best[k] for k in ("psnr", "ssim", "step")}
                if self.best.get("step") is not None else None,
            },
        }

    def training_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "schedule": self.schedule.state_dict(),
            "rng": capture_rng(),
            "best": {"psnr": None if not math.isfinite(self.best["psnr"]) else self.best["psnr"],
                     "ssim": self.best.get("ssim"), "step": self.best.get("step")},
            "last_val": self.last_val,
            "elapsed": self.elapsed(),
            "world_size": self.dist.world,
            "args": self.opts.to_dict(),
        }

    def save(self, name: str = LAST, with_state: bool = True) -> Path | None:
        if not self.dist.is_main:
            return None
        extra = {"training_state": self.training_state()} if with_state else {}
        path = model.save_checkpoint(self.net, self.out / name, meta=self.meta(), **extra)
        log.debug("saved %s at step %d", path, self.step)
        return path

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t_start if hasattr(self, "t_start") else 0.0)

    # -------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        if not self.val_sets:
            return None
        o = self.opts
        self.net.eval()
        run = network_fn(self.net, self.device, self.amp, self.channels_last)
        results: dict[str, Any] = {"step": self.step, "sets": {}}
        totals = [0.0, 0.0, 0.0]
        t0 = time.perf_counter()
        for vs in self.val_sets:
            pairs = vs.pairs[:o.val_limit] if o.val_limit else vs.pairs
            scores = score_pairs(shard(pairs, self.dist.rank, self.dist.world), run, device=self.device)
            sums = [sum(min(s.psnr, PSNR_CAP) for s in scores), sum(s.ssim for s in scores), float(len(scores))]
            sums = dist_utils.all_reduce_sum(sums)
            n = max(sums[2], 1.0)
            results["sets"][vs.name] = {"pairs": int(sums[2]), "psnr": sums[0] / n, "ssim": sums[1] / n}
            totals = [a + b for a, b in zip(totals, sums)]
            if self.writer is not None and pairs:
                self._sample_image(f"val/{vs.name}", pairs[0], run)
        n = max(totals[2], 1.0)
        results.update(psnr=totals[0] / n, ssim=totals[1] / n, pairs=int(totals[2]))
        self.net.train()
        if self.dist.is_main:
            per_set = ", ".join(f"{k} {v['psnr']:.2f} dB / {v['ssim']:.4f}" for k, v in results["sets"].items())
            log.info("step %d validation: PSNR %.2f dB, SSIM %.4f on %d pairs (%s) in %.1f s", self.step,
                     results["psnr"], results["ssim"], results["pairs"], per_set, time.perf_counter() - t0)
            if self.writer is not None:
                self.writer.add_scalar("val/psnr", results["psnr"], self.step)
                self.writer.add_scalar("val/ssim", results["ssim"], self.step)
                for k, v in results["sets"].items():
                    self.writer.add_scalar(f"val/{k}/psnr", v["psnr"], self.step)
                    self.writer.add_scalar(f"val/{k}/ssim", v["ssim"], self.step)
        self.last_val = results
        return results

    def _sample_image(self, tag: str, pair: Any, run: Any) -> None:
        from .images import read_rgb

        rainy, clean = read_rgb(pair.rainy), read_rgb(pair.clean)
        derained = run(rainy)
        self.writer.add_image(tag, np.concatenate([rainy, derained, clean], axis=1), self.step, dataformats="HWC")

    def _train_images(self, rainy: torch.Tensor, output: torch.Tensor, clean: torch.Tensor) -> None:
        k = min(4, rainy.shape[0])
        rows = [torch.cat([rainy[i], output[i].detach().float().clamp(0, 1), clean[i]], dim=2) for i in range(k)]
        self.writer.add_image("train/rainy_derained_clean", torch.cat(rows, dim=1).cpu(), self.step)

    # -------------------------------------------------------------------------- loop
    def run(self) -> int:
        """Train; returns the process exit status (0, or 130/143 when stopped by a signal)."""
        try:
            self._validate_options()
            self._setup_runtime()
            self._build_network()
            self._build_optimisation()
            self._build_data()
            self._open_outputs()
            return self._loop()
        finally:
            self.stopper.uninstall()
            if self.writer is not None:
                self.writer.close()
            if getattr(self, "_log_handler", None) is not None:
                logging.getLogger().removeHandler(self._log_handler)
                self._log_handler.close()
            dist_utils.teardown()

    def _loop(self) -> int:
        o = self.opts
        main = self.dist.is_main
        sampler = StepBatchSampler(self.per_rank, self.dist.rank, self.dist.world, self.step, o.steps)
        loader = make_loader(self.source, sampler, self.workers, pin_memory=self.device.type == "cuda")
        image_every = o.image_every or o.val_every
        if main:
            log.info("training %s (%s parameters) on %s%s for steps %d..%d: global batch %d of %dx%d patches, "
                     "%s, AMP %s, loss %s; output in %s", self.preset, f"{model.count_parameters(self.net):,}",
                     self.device, f" x {self.dist.world} processes" if self.dist.enabled else "", self.step, o.steps,
                     o.batch, o.patch, o.patch, o.schedule, self.amp, self.criterion.describe(), self.out)
        self.stopper.install()
        self.t_start = time.perf_counter()
        cpu_start = time.process_time()
        window = {"loss": 0.0, "mse": 0.0, "ssim": 0.0, "n": 0, "t": time.perf_counter(), "steps": 0}
        first_step = self.step
        bar = None
        if self.show_progress:
            from tqdm import tqdm

            bar = tqdm(total=o.steps, initial=self.step, unit="step", dynamic_ncols=True, desc="train")
        exit_code = 0
        try:
            it = iter(loader)
            step_times: collections.deque[float] = collections.deque(maxlen=1000)
            while self.step < o.steps:
                t_step = time.perf_counter()
                try:
                    rainy_u8, clean_u8 = next(it)
                except StopIteration:
                    break
                except RuntimeError:
                    if self.stopper.signal is not None:
                        break
                    raise
                stats = self._train_step(rainy_u8, clean_u8, image_every)
                step_times.append(time.perf_counter() - t_step)
                self.step += 1
                for k in ("loss", "mse", "ssim"):
                    window[k] += stats[k]
                window["n"] += 1
                window["steps"] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}", refresh=False)
                if self.step % o.log_every == 0 or self.step == o.steps:
                    self._log_window(window, stats)
                t_extra = time.perf_counter()
                if self.step % o.val_every == 0 or self.step == o.steps:
                    val = self.validate()
                    if val is not None and val["psnr"] > self.best["psnr"]:
                        self.best = {"psnr": val["psnr"], "ssim": val["ssim"], "step": self.step}
                        self.save(BEST, with_state=False)
                        if main:
                            log.info("new best validation PSNR %.2f dB: saved %s", val["psnr"], self.out / BEST)
                if self.step % o.save_every == 0 or self.step == o.steps:
                    self.save(LAST)
                window["t"] += time.perf_counter() - t_extra  # throughput counts training only
                stop = self.stopper.signal is not None
                planned = (o.stop_at is not None and self.step >= o.stop_at) or (
                    o.time_limit is not None and time.perf_counter() - self.t_start >= o.time_limit * 60)
                if self.dist.enabled:
                    stop, planned = dist_utils.any_rank(stop), dist_utils.any_rank(planned)
                if (stop or planned) and self.step < o.steps:
                    self.save(LAST)
                    if stop:
                        exit_code = EXIT_TERMINATED if self.stopper.signal == signal.SIGTERM else EXIT_INTERRUPTED
                    if main:
                        log.warning("%s at step %d; saved %s; continue with: derain-train --resume %s",
                                    "stopped" if stop else "session limit reached", self.step, self.out / LAST, self.out)
                    break
        finally:
            if bar is not None:
                bar.close()
            del loader
        if main:
            seconds = time.perf_counter() - self.t_start
            done = self.step - first_step
            rate = done * o.batch / seconds if seconds > 0 else 0.0
            cpu = time.process_time() - cpu_start  # all threads of this process
            log.info("%s at step %d: %d steps in %.1f s (%.1f patches/s; %.1f patches per CPU-second of this "
                     "process); checkpoint %s", "finished" if self.step >= o.steps else "stopped", self.step, done,
                     seconds, rate, done * o.batch / cpu if cpu > 0 else 0.0, self.out / LAST)
            if len(step_times) > 1:
                # On a shared machine the fastest steps tell what the hardware does when it gets the CPU.
                times = sorted(list(step_times)[1:])  # the first step includes one-off start-up work
                log.info("step time (data + forward + backward + update): median %.3f s (%.1f patches/s), "
                         "fastest %.3f s (%.1f patches/s)", times[len(times) // 2], o.batch / times[len(times) // 2],
                         times[0], o.batch / times[0])
            self.summary = {"steps": done, "seconds": seconds, "patches_per_second": rate, "cpu_seconds": cpu}
        return exit_code

    def _train_step(self, rainy_u8: torch.Tensor, clean_u8: torch.Tensor, image_every: int) -> dict[str, float]:
        o = self.opts
        non_blocking = self.device.type == "cuda"
        rainy = rainy_u8.to(self.device, non_blocking=non_blocking).float().div_(255.0)
        clean = clean_u8.to(self.device, non_blocking=non_blocking).float().div_(255.0)
        if self.channels_last:
            rainy = rainy.contiguous(memory_format=torch.channels_last)
            clean = clean.contiguous(memory_format=torch.channels_last)
        lr = self.schedule.apply(self.optimizer, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            outputs = self.train_module(rainy)
        losses = self.criterion(outputs, clean)
        loss = losses["loss"]
        if not torch.isfinite(loss) and self.scaler is None:
            raise TrainingError(f"loss became {loss.item()} at step {self.step + 1} (try a lower --lr, --clip-grad, "
                                f"or --amp none); the last checkpoint is {self.out / LAST}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        max_norm = o.clip_grad if o.clip_grad > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        stats = {"loss": float(loss.detach()), "mse": float(losses["mse"]), "ssim": float(losses["ssim"]),
                 "lr": lr, "grad_norm": grad_norm}
        if self.writer is not None and (self.step + 1) % image_every == 0 and not self.val_sets:
            with torch.no_grad():
                self.step += 1
                self._train_images(rainy, outputs[0], clean)
                self.step -= 1
        return stats

    def _log_window(self, window: dict[str, Any], stats: dict[str, float]) -> None:
        o = self.opts
        now = time.perf_counter()
        seconds = max(now - window["t"], 1e-9)
        rate = window["steps"] * o.batch / seconds
        n = max(window["n"], 1)
        loss, mse, ssim = window["loss"] / n, window["mse"] / n, window["ssim"] / n
        if self.dist.is_main:
            remaining = (o.steps - self.step) * seconds / max(window["steps"], 1)
            log.info("step %d/%d  loss %.5f  mse %.6f  ssim %.4f  lr %.2e  grad %.3f  %.1f patches/s  eta %s",
                     self.step, o.steps, loss, mse, ssim, stats["lr"], stats["grad_norm"], rate, _hms(remaining))
            if self.writer is not None:
                w = self.writer
                w.add_scalar("train/loss", loss, self.step)
                w.add_scalar("train/mse", mse, self.step)
                w.add_scalar("train/ssim", ssim, self.step)
                w.add_scalar("train/psnr_rgb", -10 * math.log10(max(mse, 1e-12)), self.step)
                w.add_scalar("train/lr", stats["lr"], self.step)
                w.add_scalar("train/grad_norm", stats["grad_norm"], self.step)
                w.add_scalar("train/patches_per_second", rate, self.step)
        window.update(loss=0.0, mse=0.0, ssim=0.0, n=0, t=now, steps=0)


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
