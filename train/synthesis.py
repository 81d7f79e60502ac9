"""Rain synthesis: render rain streaks on clean images and clean videos.

The streak layer is built the way rain is photographed: drops (points) are smeared along
their direction of fall by a line kernel (the motion blur of the exposure), widened, and
optionally defocused; the layer is then blended towards white (``rainy = clean + a * (1 -
clean)``, ``a`` = opacity), so streaks are achromatic and faint against bright sky.

* :class:`RainParams` -- one rendering: density, length, width, angle, brightness, blur,
  layers (several directions/depths), fall speed (video) and haze (rain veil);
* :func:`params_for_strength` -- a random :class:`RainParams` of strength ``s`` in [0, 1]:
  0 is light (rainy input about 27-30 dB PSNR, like Rain100L), 1 heavy (about 13-15 dB, like
  Rain100H);
* :class:`RainField` -- drops of a whole image or video; ``layer(t)`` is the streak layer
  of frame ``t``: every drop falls ``speed`` pixels per frame along its streak, so streaks
  move consistently between frames (random access, no state);
* :func:`add_rain` / :func:`render_video` -- rainy versions of an image / a frame sequence;
* :class:`RainSynthesizer` -- random strength in a range, used by the training stream.

All randomness comes from a ``numpy.random.Generator`` passed in, so results are reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np

#: Named strength ranges for ``--rain-strength``.
#: Relative streak lengths of the drops inside one layer.
LENGTH_GROUPS = (0.55, 1.0, 1.45)
STRENGTHS = {"light": (0.0, 0.3), "medium": (0.3, 0.7), "heavy": (0.7, 1.0), "mixed": (0.0, 1.0)}


@dataclass(frozen=True)
class RainParams:
    """How to render rain.

    Attributes:
        density: drops per pixel per layer (0.001 sparse .. 0.03 dense).
        length: streak length in pixels.
        width: streak width in pixels (fractional widths are drawn fainter).
        angle: degrees from vertical; positive leans the top to the left (falls to the right).
        brightness: peak opacity of a streak towards white, 0..1.
        blur: Gaussian sigma (pixels) of the streak layer (defocus); 0 for none.
        layers: number of streak layers; layer k is farther: shorter, fainter, denser, its angle
            turned by up to ``angle_spread`` degrees.
        angle_spread: maximum angle difference of the extra layers.
        speed: fall speed in pixels per frame (video); 0 means ``1.5 * length``.
        haze: opacity of a uniform rain veil (accumulation) towards light grey, 0..1.
    """

    density: float = 0.004
    length: float = 15.0
    width: float = 1.0
    angle: float = 0.0
    brightness: float = 0.45
    blur: float = 0.5
    layers: int = 1
    angle_spread: float = 10.0
    speed: float = 0.0
    haze: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "density": 0.0 <= self.density <= 1.0, "length": self.length >= 1.0, "width": self.width > 0.0,
            "angle": -80.0 <= self.angle <= 80.0, "brightness": 0.0 <= self.brightness <= 1.0,
            "blur": self.blur >= 0.0, "layers": self.layers >= 1, "speed": self.speed >= 0.0,
            "haze": 0.0 <= self.haze <= 1.0, "angle_spread": self.angle_spread >= 0.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid rain parameter(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


def _lerp(a: float, b: float, s: float) -> float:
    return a + (b - a) * s


def params_for_strength(strength: float, rng: np.random.Generator, angle_range: tuple[float, float] = (-25.0, 25.0),
                        **overrides: float) -> RainParams:
    """Random rain of the given strength (0 light .. 1 heavy); keyword overrides fix a parameter."""
    s = float(np.clip(strength, 0.0, 1.0))
    jitter = lambda: float(rng.uniform(0.8, 1.25))  # noqa: E731
    params = dict(
        density=_lerp(0.003, 0.008, s) * jitter(),
        length=_lerp(14.0, 48.0, s) * jitter(),
        width=_lerp(1.0, 1.35, s) * float(rng.uniform(0.85, 1.15)),
        angle=float(rng.uniform(*angle_range)),
        brightness=min(1.0, _lerp(0.55, 0.7, s) * float(rng.uniform(0.85, 1.15))),
        blur=_lerp(0.4, 0.8, s) * float(rng.uniform(0.7, 1.3)),
        layers=int(1 + round(2 * s * float(rng.uniform(0.5, 1.0)))),
        haze=_lerp(0.0, 0.12, s * s) * float(rng.uniform(0.5, 1.2)),
    )
    params.update(overrides)
    return RainParams(**params)


def streak_kernel(length: float, width: float, angle: float) -> np.ndarray:
    """Float32 kernel of one streak: an anti-aliased line of peak 1, centred."""
    theta = math.radians(angle)
    dx, dy = -math.sin(theta), math.cos(theta)  # direction of fall, image coordinates (y down)
    thick = max(1, int(round(width)))
    half = length / 2.0
    size = int(math.ceil(length + thick + 2)) | 1
    c = size // 2
    shift = 4  # sub-pixel precision for cv2.line
    k = np.zeros((size, size), np.float32)
    p0 = (int(round((c - dx * half) * (1 << shift))), int(round((c - dy * half) * (1 << shift))))
    p1 = (int(round((c + dx * half) * (1 << shift))), int(round((c + dy * half) * (1 << shift))))
    cv2.line(k, p0, p1, 1.0, thickness=thick, lineType=cv2.LINE_AA, shift=shift)
    if width < 1.0:
        k *= width
    return k


def _hash_uniform(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniform [0, 1) numbers from integer arrays (a counter-based hash)."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (b.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9))
    x ^= np.uint64(((salt & 0xFFFFFFFF) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xD6E8FEB86CA3D7AD)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class RainField:
    """The drops of one rainy scene of ``height x width`` pixels.

    Drops live on a torus larger than the frame by a margin, fall along their layer's streak
    direction at the layer's speed, and get a new random horizontal position each time they
    wrap around, so the rain never repeats. ``layer(t)`` (float32 in [0, 1]) is the opacity
    of frame ``t``.
    """

    def __init__(self, params: RainParams, height: int, width: int, rng: np.random.Generator) -> None:
        self.params = params
        self.height, self.width = int(height), int(width)
        self.salt = int(rng.integers(1 << 31))
        self.layers = []
        for k in range(params.layers):
            depth = 1.0 / (1.0 + 0.45 * k)  # farther layers: shorter, fainter, slower, denser
            angle = params.angle if k == 0 else float(np.clip(
                params.angle + rng.uniform(-params.angle_spread, params.angle_spread), -80, 80))
            length = max(2.0, params.length * depth * float(rng.uniform(0.85, 1.15)))
            width = max(0.35, params.width * math.sqrt(depth))
            # Drops of a layer come in a few streak lengths (different sizes and distances).
            kernels = [streak_kernel(max(2.0, length * f), width, angle) for f in LENGTH_GROUPS]
            margin = kernels[-1].shape[0]
            dom_h, dom_w = self.height + 2 * margin, self.width + 2 * margin
            count = int(rng.poisson(params.density * (1.0 + 0.3 * k) * dom_h * dom_w))
            theta = math.radians(angle)
            speed = (params.speed or 1.5 * params.length) * depth
            self.layers.append(dict(
                kernels=kernels, group=rng.integers(0, len(kernels), count), margin=margin, dom=(dom_h, dom_w),
                x=rng.uniform(0, dom_w, count), y=rng.uniform(0, dom_h, count),
                value=(params.brightness * depth * rng.uniform(0.55, 1.0, count)).astype(np.float32),
                vx=-math.sin(theta) * speed, vy=math.cos(theta) * speed,
                ids=np.arange(count, dtype=np.uint64), k=k,
            ))

    def drop_positions(self, t: float, layer: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Frame coordinates (x, y) of the drops of one layer at frame ``t``."""
        L = self.layers[layer]
        dom_h, dom_w = L["dom"]
        y_abs = L["y"] + L["vy"] * t
        wraps = np.floor(y_abs / dom_h)
        y = y_abs - wraps * dom_h
        # A new horizontal position after every wrap (wraps == 0 keeps the initial one).
        fresh = _hash_uniform(L["ids"], (wraps.astype(np.int64) + (1 << 20)).astype(np.uint64), self.salt + 7919 * L["k"])
        x0 = np.where(wraps == 0, L["x"], fresh * dom_w)
        x = np.mod(x0 + L["vx"] * t, dom_w)
        return x - L["margin"], y - L["margin"]

    def layer(self, t: float = 0.0) -> np.ndarray:
        """Opacity ``(H, W)`` float32 of the rain in frame ``t``."""
        h, w = self.height, self.width
        total = np.zeros((h, w), np.float32)
        for i, L in enumerate(self.layers):
            m = L["margin"]
            x, y = self.drop_positions(t, i)
            x, y = x + m, y + m  # canvas with the margin around the frame
            ch, cw = h + 2 * m, w + 2 * m
            inside = (x >= 0) & (x < cw - 1) & (y >= 0) & (y < ch - 1)
            x, y, v = x[inside], y[inside], L["value"][inside]
            x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
            fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
            idx = y0 * cw + x0
            group = L["group"][inside]
            weights = (v * (1 - fx) * (1 - fy), v * fx * (1 - fy), v * (1 - fx) * fy, v * fx * fy)
            for g, kernel in enumerate(L["kernels"]):
                sel = group == g
                if not sel.any():
                    continue
                gi = idx[sel]
                canvas = np.zeros(ch * cw, np.float64)
                for offset, wts in zip((0, 1, cw, cw + 1), weights):
                    canvas += np.bincount(gi + offset, wts[sel], ch * cw)
                canvas = canvas.reshape(ch, cw).astype(np.float32)
                streaks = cv2.filter2D(canvas, cv2.CV_32F, kernel, borderType=cv2.BORDER_CONSTANT)
                total += streaks[m:m + h, m:m + w]
        if self.params.blur > 0:
            total = cv2.GaussianBlur(total, (0, 0), self.params.blur)
        return np.clip(total, 0.0, 1.0, out=total)


def composite(clean: np.ndarray, opacity: np.ndarray, haze: float = 0.0) -> np.ndarray:
    """Blend the rain layer into a clean uint8 RGB image: streaks towards white, then the veil."""
    c = clean.astype(np.float32) * (1.0 / 255.0)
    a = opacity[..., None]
    out = c + a * (1.0 - c)
    if haze > 0:
        out = out * (1.0 - haze) + haze * 0.85
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def add_rain(clean: np.ndarray, params: RainParams, rng: np.random.Generator) -> np.ndarray:
    """A rainy version of one clean ``(H, W, 3)`` uint8 RGB image."""
    if clean.dtype != np.uint8 or clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {clean.shape} {clean.dtype}")
    field = RainField(params, clean.shape[0], clean.shape[1], rng)
    return composite(clean, field.layer(0.0), params.haze)


def render_video(frames: Iterable[np.ndarray], params: RainParams, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Rainy versions of consecutive clean frames (all the same size); streaks move
    ``params.speed`` pixels per frame along their direction."""
    field: RainField | None = None
    for t, frame in enumerate(frames):
        if field is None:
            field = RainField(params, frame.shape[0], frame.shape[1], rng)
        elif frame.shape[:2] != (field.height, field.width):
            raise ValueError(f"frame {t} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the first was {field.width}x{field.height}")
        yield composite(frame, field.layer(float(t)), params.haze)


def parse_strength(text: str) -> tuple[float, float]:
    """``light``/``medium``/``heavy``/``mixed`` or ``A:B`` / ``A`` with 0 <= A <= B <= 1."""
    key = text.strip().lower()
    if key in STRENGTHS:
        return STRENGTHS[key]
    try:
        parts = [float(v) for v in key.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 0.0 <= parts[0] <= parts[1] <= 1.0:
        raise ValueError(f"rain strength must be one of {', '.join(STRENGTHS)} or A:B with 0 <= A <= B <= 1, got {text!r}")
    return parts[0], parts[1]


class RainSynthesizer:
    """Renders rain of a random strength in ``strength`` (and angle in ``angle``) on patches."""

    def __init__(self, strength: tuple[float, float] = STRENGTHS["mixed"],
                 angle: tuple[float, float] = (-25.0, 25.0), **overrides: float) -> None:
        self.strength = (float(strength[0]), float(strength[1]))
        self.angle = (float(angle[0]), float(angle[1]))
        self.overrides = overrides
        params_for_strength(0.5, np.random.default_rng(0), self.angle, **overrides)  # validate early

    def random_params(self, rng: np.random.Generator) -> RainParams:
        s = float(rng.uniform(*self.strength))
        return params_for_strength(s, rng, self.angle, **self.overrides)

    def render(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return add_rain(clean, self.random_params(rng), rng)

    def describe(self) -> dict:
        return {"strength": list(self.strength), "angle": list(self.angle), **self.overrides}

