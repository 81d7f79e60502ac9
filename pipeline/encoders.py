"""Choosing and configuring the video encoder.

``--codec auto`` (the default) means H.264: ``h264_nvenc`` when it really opens on this
machine (a tiny encoder is opened once to find out), else ``libx264``. ``h264``/``hevc``/
``av1``/``vp9`` pick the best available encoder of that format the same way; any other name
is used as an FFmpeg encoder name (``libx264``, ``libx265``, ``ffv1``, ``h264_nvenc``...).
``--crf`` and ``--preset`` are translated for each encoder family (NVENC has no CRF: it gets
``rc=vbr`` with ``cq``).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av

from .errors import UsageError

log = logging.getLogger(__name__)

#: Format -> encoders to try, best first.
FAMILIES: dict[str, tuple[str, ...]] = {
    "h264": ("h264_nvenc", "libx264"),
    "hevc": ("hevc_nvenc", "libx265"),
    "av1": ("av1_nvenc", "libsvtav1", "libaom-av1"),
    "vp9": ("libvpx-vp9",),
}
ALIASES = {"auto": "h264", "avc": "h264", "h265": "hevc", "x264": "libx264", "x265": "libx265"}
#: Encoders a ``--codec auto`` output falls back to when the container cannot hold H.264.
AUTO_FALLBACKS = ("vp9", "av1")

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
_CRF_DEFAULT = {"libx264": 18, "libx265": 20, "libvpx-vp9": 30, "libaom-av1": 30, "libsvtav1": 30}
_NVENC_CQ_DEFAULT = 19
_PRESET_DEFAULT = {"libx264": "medium", "libx265": "medium", "h264_nvenc": "p5",
                   "hevc_nvenc": "p5", "av1_nvenc": "p5"}


@dataclass
class EncoderSettings:
    """What the user asked for (``None`` = the encoder family's default)."""

    codec: str = "auto"
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # raw encoder options (-x KEY=VALUE)


def is_nvenc(name: str) -> bool:
    return name.endswith("_nvenc")


@functools.lru_cache(maxsize=None)
def encoder_opens(name: str) -> bool:
    """True when encoder ``name`` exists in this FFmpeg build *and* opens here (NVENC needs
    an NVIDIA GPU and driver; being compiled in is not enough)."""
    if name not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = 256, 256
        ctx.pix_fmt = "yuv420p" if _supports(name, "yuv420p") else _formats(name)[0]
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25)
        if name == "libx265":
            ctx.options = {"x265-params": "log-level=error"}
        ctx.open()
        return True
    except (av.error.FFmpegError, ValueError, TypeError, OSError, IndexError):
        return False


def _formats(name: str) -> list[str]:
    codec = av.codec.Codec(name, "w")
    return [f.name for f in (codec.video_formats or ())]


def _supports(name: str, pix_fmt: str) -> bool:
    formats = _formats(name)
    return not formats or pix_fmt in formats


def candidates(codec: str) -> list[str]:
    """Encoders to try for a ``--codec`` value, best first (``UsageError`` if unknown)."""
    key = ALIASES.get(codec, codec)
    if key in FAMILIES:
        names = [n for n in FAMILIES[key] if n in av.codecs_available]
        if not names:
            raise UsageError(f"no {key} encoder is available in this FFmpeg build")
        return names
    try:
        found = av.codec.Codec(key, "w")
    except (av.error.FFmpegError, ValueError):
        raise UsageError(f"unknown video encoder {codec!r} (try h264, hevc, libx264, libx265, "
                         "h264_nvenc, ffv1)") from None
    if found.type != "video":
        raise UsageError(f"--codec {codec!r} is not a video encoder")
    return [found.name]


_HARDWARE = ("_nvenc", "_qsv", "_vaapi", "_amf", "_videotoolbox", "_v4l2m2m", "_mf")


def is_hardware(name: str) -> bool:
    return name.endswith(_HARDWARE)


def pick_encoder(codec: str, software_only: bool = False) -> str:
    """The first encoder for ``codec`` that opens here (only hardware encoders are tried out:
    a software encoder in the build always opens)."""
    names = candidates(codec)
    if software_only and len(names) > 1:
        names = [n for n in names if not is_hardware(n)] or names
    for name in names:
        if len(names) == 1 or not is_hardware(name) or encoder_opens(name):
            if name != names[0]:
                log.info("encoder: %s (%s cannot be opened on this machine)", name, names[0])
            return name
    return names[-1]


def pixel_format(encoder: str, requested: str | None) -> str:
    """``--pix-fmt`` validated against the encoder, or its default (yuv420p when possible)."""
    formats = _formats(encoder)
    if requested:
        try:
            av.VideoFormat(requested)
        except (ValueError, av.error.FFmpegError):
            raise UsageError(f"unknown pixel format {requested!r}") from None
        if formats and requested not in formats:
            raise UsageError(f"{encoder} cannot encode {requested} (it takes: {', '.join(formats)})")
        return requested
    if not formats or "yuv420p" in formats:
        return "yuv420p"
    return formats[0]


def encoder_options(encoder: str, settings: EncoderSettings) -> dict[str, str]:
    """FFmpeg options for ``encoder`` from ``--crf``/``--preset`` and raw ``-x`` options."""
    opts: dict[str, str] = {}
    crf = settings.crf
    if is_nvenc(encoder):
        opts.update({"rc": "vbr", "cq": _num(crf if crf is not None else _NVENC_CQ_DEFAULT), "b": "0"})
    elif encoder in _CRF_DEFAULT:
        opts["crf"] = _num(crf if crf is not None else _CRF_DEFAULT[encoder])
        if encoder == "libvpx-vp9":
            opts["b"] = "0"
    elif crf is not None:
        log.warning("--crf is ignored by the %s encoder (use -x to pass its own options)", encoder)
    preset = settings.preset if settings.preset is not None else _PRESET_DEFAULT.get(encoder)
    if encoder in ("libx264", "libx265") and preset is not None and preset not in X26X_PRESETS:
        raise UsageError(f"unknown --preset {preset!r} for {encoder} (use one of: {', '.join(X26X_PRESETS)})")
    if preset is not None:
        if encoder in _PRESET_DEFAULT or encoder in ("libsvtav1",):
            opts["preset"] = str(preset)
        elif encoder == "libvpx-vp9":
            opts["deadline"] = str(preset)
        elif settings.preset is not None:
            log.warning("--preset is ignored by the %s encoder", encoder)
    if encoder == "libx265":
        opts.setdefault("x265-params", "log-level=error")
    opts.update(settings.options)
    return opts


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
