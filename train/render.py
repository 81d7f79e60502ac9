"""``python -m train.render``: write synthetic rainy/clean pairs from clean images or clean videos.

* a clean image, or a folder of them -> ``OUT/input/<name>.png`` + ``OUT/target/<name>.png``
  (the MPRNet layout), or with ``--copies K`` ``OUT/rainy_image/<name>_k.png`` +
  ``OUT/ground_truth/<name>.png`` (the Rain1400 layout);
* a clean video file (decoded with PyAV) or a folder of frame folders / videos ->
  ``OUT/<clip>_Rain/00001.png`` + ``OUT/<clip>_GT/00001.png`` (the NTURain layout); the rain of
  one clip has one random strength and its streaks fall consistently from frame to frame.

Every output folder is then a data set ``derain-train --data`` and ``derain-eval`` read.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .datasets import natural_key
from .images import DataError, is_image, read_rgb, write_rgb
from .synthesis import STRENGTHS, RainSynthesizer, parse_strength, render_video

log = logging.getLogger("train.render")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts", ".mpg", ".mpeg")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """Decoded RGB frames of a video file's first video stream."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode video {path}: {exc}") from None


def _clips(src: Path) -> list[tuple[str, Path]]:
    """(clip name, video file or frame folder) below ``src``."""
    if src.is_file():
        return [(src.stem, src)] if is_video(src) else []
    clips = []
    for p in sorted(src.iterdir(), key=lambda p: natural_key(p.name)):
        if p.is_file() and is_video(p):
            clips.append((p.stem, p))
        elif p.is_dir() and any(is_image(f) for f in p.iterdir() if f.is_file()):
            clips.append((p.name, p))
    return clips


def _frames(source: Path) -> Iterator[np.ndarray]:
    if source.is_file():
        yield from video_frames(source)
    else:
        for f in sorted((f for f in source.iterdir() if f.is_file() and is_image(f)), key=lambda f: natural_key(f.name)):
            yield read_rgb(f)


def render_clip(name: str, source: Path, out: Path, synth: RainSynthesizer, rng: np.random.Generator) -> int:
    params = synth.random_params(rng)
    clean_frames = list(_frames(source))
    if not clean_frames:
        raise DataError(f"no frames in {source}")
    for i, (clean, rainy) in enumerate(zip(clean_frames, render_video(clean_frames, params, rng)), start=1):
        write_rgb(out / f"{name}_GT" / f"{i:05d}.png", clean)
        write_rgb(out / f"{name}_Rain" / f"{i:05d}.png", rainy)
    return len(clean_frames)


def render_images(images: Sequence[Path], out: Path, synth: RainSynthesizer, rng: np.random.Generator,
                  copies: int) -> int:
    for path in images:
        clean = read_rgb(path)
        if copies == 1:
            write_rgb(out / "target" / f"{path.stem}.png", clean)
            write_rgb(out / "input" / f"{path.stem}.png", synth.render(clean, rng))
        else:
            write_rgb(out / "ground_truth" / f"{path.stem}.png", clean)
            for k in range(1, copies + 1):
                write_rgb(out / "rainy_image" / f"{path.stem}_{k}.png", synth.render(clean, rng))
    return len(images) * copies


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.render", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Example: python -m train.render clean_photos/ synth_pairs/ --strength light")
    p.add_argument("src", help="clean image, folder of clean images, clean video, or folder of videos/frame folders")
    p.add_argument("out", help="new output folder")
    p.add_argument("--strength", default="mixed",
                   help=f"{', '.join(STRENGTHS)} or A:B in [0, 1] (default mixed)")
    p.add_argument("--angle", default="-25:25", help="streak angle range in degrees (default -25:25)")
    p.add_argument("--copies", type=int, default=1, help="rainy versions per clean image (>1: Rain1400 layout)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    src, out = Path(args.src).expanduser(), Path(args.out).expanduser()
    if not src.exists():
        raise DataError(f"not found: {src}")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder {out} is not empty; choose a new one")
    if src.is_dir() and (out.resolve() == src.resolve() or src.resolve() in out.resolve().parents):
        raise DataError(f"output folder {out} is inside the source {src}")
    if args.copies < 1:
        raise DataError("--copies must be >= 1")
    try:
        lo, hi = (float(v) for v in args.angle.split(":"))
        synth = RainSynthesizer(parse_strength(args.strength), (lo, hi))
    except ValueError as exc:
        raise DataError(f"bad --strength/--angle: {exc}") from None
    rng = np.random.default_rng(args.seed)
    clips = _clips(src)
    if clips:
        for name, source in clips:
            n = render_clip(name, source, out, synth, rng)
            log.info("%s: %d frames", name, n)
        log.info("wrote %d clip(s) to %s", len(clips), out)
        return 0
    images = [src] if src.is_file() and is_image(src) else (
        sorted((p for p in src.iterdir() if p.is_file() and is_image(p)), key=lambda p: natural_key(p.name))
        if src.is_dir() else [])
    if not images:
        raise DataError(f"no clean images or videos in {src}")
    n = render_images(images, out, synth, rng, args.copies)
    log.info("wrote %d rainy images for %d clean images to %s", n, len(images), out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return run(argv)
    except DataError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
