"""Make the project's sample rainy clip: synthetic rain over a slow pan across a still image.

The shipped ``pipeline/samples/rain-sample.mp4`` was made with::

    pip install scikit-image          # only for its bundled public-domain photo
    python -m train.sample_clip pipeline/samples/rain-sample.mp4

It pans across scikit-image's ``rocket.jpg`` (NASA, public domain) or any ``--image`` you
give, renders moving rain with :mod:`train.synthesis` (the same renderer that makes training
pairs) and adds a synthetic rain-noise AAC soundtrack, so that a demo shows audio surviving
the pipeline too. ``--clean-out`` also writes the rain-free clip for scoring.
"""
from __future__ import annotations

import argparse
import logging
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .synthesis import params_for_strength, render_video

log = logging.getLogger(__name__)


def default_image() -> Path:
    try:
        import skimage.data  # noqa: F401  (only used to locate its bundled photo)
    except ImportError:
        raise SystemExit("error: no --image given and scikit-image is not installed "
                         "(pip install scikit-image, or pass --image PHOTO)") from None
    return Path(sys.modules["skimage.data"].__file__).with_name("rocket.jpg")


def pan_frames(image: np.ndarray, width: int, height: int, count: int, zoom: float = 1.25):
    """``count`` RGB frames of a slow diagonal pan with a gentle zoom across ``image``."""
    ih, iw = image.shape[:2]
    base = max(width / iw, height / ih) * zoom
    for i in range(count):
        t = i / max(count - 1, 1)
        scale = base * (1.0 + 0.08 * t)
        sw, sh = width / scale, height / scale           # source window size
        x0 = (iw - sw) * (0.15 + 0.7 * t)
        y0 = (ih - sh) * (0.6 - 0.4 * t)
        m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
        yield cv2.warpAffine(image, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def rain_noise(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Stereo float32 rain-like noise: low-passed hiss plus random drop clicks."""
    n = int(seconds * rate)
    hiss = rng.standard_normal((2, n)).astype(np.float32)
    kernel = np.ones(8, np.float32) / 8
    hiss = np.stack([np.convolve(ch, kernel, mode="same") for ch in hiss]) * 0.12
    drops = np.zeros((2, n), np.float32)
    for pos in rng.integers(0, n - 400, size=int(seconds * 40)):
        decay = np.exp(-np.arange(400) / 60.0).astype(np.float32) * rng.uniform(0.05, 0.3)
        drops[rng.integers(0, 2), pos:pos + 400] += decay * rng.standard_normal(400).astype(np.float32)
    return np.clip(hiss + drops, -1, 1)


def write_clip(path: Path, frames, fps: int, width: int, height: int, audio: np.ndarray | None,
               rate: int, crf: int) -> int:
    count = 0
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(crf), "preset": "slow"}
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "stereo"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
            count += 1
        out.mux(video.encode())
        if sound is not None:
            step = 1024
            for start in range(0, audio.shape[1], step):
                chunk = np.ascontiguousarray(audio[:, start:start + step])
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = rate, start, Fraction(1, rate)
                out.mux(sound.encode(aframe))
            out.mux(sound.encode())
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.sample_clip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path, help="rainy clip to write (.mp4)")
    ap.add_argument("--image", type=Path, help="photo to pan across (default: scikit-image's rocket.jpg)")
    ap.add_argument("--clean-out", type=Path, help="also write the rain-free clip here")
    ap.add_argument("--size", default="640x360", help="frame size WxH (default 640x360)")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--strength", type=float, default=0.3, help="rain strength 0 (light) .. 1 (heavy)")
    ap.add_argument("--crf", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    image_path = args.image or default_image()
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"error: cannot read image {image_path}")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    width, height = (int(v) for v in args.size.lower().split("x"))
    count = int(round(args.seconds * args.fps))
    rng = np.random.default_rng(args.seed)
    params = params_for_strength(args.strength, rng, angle_range=(-14.0, -10.0))
    clean = list(pan_frames(image, width, height, count))
    rainy = list(render_video(clean, params, rng))
    audio = rain_noise(args.seconds, 48000, rng)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    n = write_clip(args.output, rainy, args.fps, width, height, audio, 48000, args.crf)
    if args.clean_out:
        write_clip(args.clean_out, clean, args.fps, width, height, None, 48000, args.crf)
    log.info("wrote %s: %d frames %dx%d at %d fps with AAC audio, rain %s (%.0f kB)", args.output, n, width,
             height, args.fps, params, args.output.stat().st_size / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
