"""What the pipeline needs to know about an input: its video stream, the streams it copies,
colour and rotation tags, and one-line errors for inputs it cannot use.

:func:`open_input` opens a file or URL with PyAV and turns every failure into an
:class:`~pipeline.errors.InputError`; :func:`describe_video` reads a video stream's
geometry, timing and colour; :func:`display_matrix` reads the rotation/flip matrix a
decoded frame carries. :data:`VIDEO_EXTENSIONS` and :func:`looks_like_video` pick the
files of a folder.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .errors import InputError
from .util import is_url, redact_url

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".mxf", ".dv", ".vob", ".y4m", ".h264",
    ".264", ".hevc", ".265", ".ivf",
})
# Files a folder scan never probes (cheap to rule out, and images would open as 1-frame video).
_NOT_VIDEO = frozenset({
    ".txt", ".json", ".md", ".csv", ".xml", ".srt", ".ass", ".vtt", ".nfo", ".log", ".jpg",
    ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pt", ".pth", ".zip", ".tar",
    ".gz", ".py", ".partial",
})
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe",
                  "gif", "gif_pipe")


@dataclass(frozen=True)
class Colour:
    """AVCOL_* tags of a video stream (0/2 mean unspecified, as in FFmpeg)."""

    range: int = 0
    space: int = 2
    primaries: int = 2
    trc: int = 2

    @classmethod
    def of(cls, obj: Any) -> "Colour":
        """From a decoded frame or a codec context."""
        return cls(int(obj.color_range or 0), int(obj.colorspace if obj.colorspace is not None else 2),
                   int(obj.color_primaries if obj.color_primaries is not None else 2),
                   int(obj.color_trc if obj.color_trc is not None else 2))

    def merged(self, fallback: "Colour") -> "Colour":
        """Fill unspecified fields from ``fallback`` (frame tags first, stream tags second)."""
        return Colour(self.range or fallback.range,
                      self.space if self.space != 2 else fallback.space,
                      self.primaries if self.primaries != 2 else fallback.primaries,
                      self.trc if self.trc != 2 else fallback.trc)


@dataclass
class VideoInfo:
    """The video stream that gets derained."""

    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction
    average_rate: Fraction | None
    base_rate: Fraction | None
    frames: int                      # declared frame count, 0 when the container does not say
    duration: float | None           # seconds, from the stream or the container
    start_time: int | None           # first pts in time_base
    sample_aspect_ratio: Fraction | None
    colour: Colour = field(default_factory=Colour)
    display_matrix: tuple[int, ...] | None = None  # 9 int32 (AV_FRAME_DATA_DISPLAYMATRIX)
    rotation: int = 0                # counter-clockwise degrees, from the matrix
    metadata: dict[str, str] = field(default_factory=dict)
    duration_is_video: bool = True   # False when ``duration`` is the whole container's

    @property
    def rate(self) -> Fraction:
        """Nominal frame rate (average, else base, else 25)."""
        for rate in (self.average_rate, self.base_rate):
            if rate and rate > 0:
                return rate
        return Fraction(25)

    @property
    def frame_ticks(self) -> int:
        """Nominal frame duration in ``time_base`` units (at least 1)."""
        return max(1, round(1 / (self.rate * self.time_base)))

    def expected_frames(self) -> int | None:
        """Frames to expect: declared count, else duration x rate; None when unknown."""
        if self.frames > 0:
            return self.frames
        if self.duration:
            return max(1, round(self.duration * float(self.rate)))
        return None


def open_input(url: "str | os.PathLike[str]", options: dict[str, str] | None = None,
               timeout: float | None = None) -> av.container.InputContainer:
    """Open a media file or URL for reading, or raise :class:`InputError` with one line."""
    text = os.fspath(url)
    shown = redact_url(text)
    if not is_url(text) and not text.startswith("pipe:"):  # pipe:0 is stdin (live inputs)
        path = Path(text)
        if not path.exists():
            raise InputError(f"input not found: {shown}")
        if path.is_dir():
            raise InputError(f"input is a folder, not a video file: {shown}")
        if not os.access(path, os.R_OK):
            raise InputError(f"input is not readable (permission denied): {shown}")
        if path.stat().st_size == 0:
            raise InputError(f"input is empty (0 bytes): {shown}")
    try:
        return av.open(text, "r", options=dict(options or {}), timeout=timeout)
    except av.error.InvalidDataError:
        raise InputError(f"{shown} is not a readable video (unknown format, or a damaged or "
                         "truncated file)") from None
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open {shown}: {_reason(exc)}") from None
    except OSError as exc:
        raise InputError(f"cannot open {shown}: {exc.strerror or exc}") from None


def _reason(exc: BaseException) -> str:
    """A short reason from an FFmpeg/OS error without repeating the (possibly secret) URL."""
    if isinstance(exc, av.error.FFmpegError):
        text = exc.strerror or str(exc)
        if exc.errno in (errno.ENOENT,):
            text = "not found"
        return redact_url(text)
    return redact_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def pick_video_stream(container: av.container.InputContainer, shown: str) -> av.video.stream.VideoStream:
    """The video stream to derain: the first real (not cover-art) video stream."""
    candidates = [s for s in container.streams.video
                  if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not candidates:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        raise InputError(f"{shown} has no video stream ({kinds})")
    if container.format.name in _IMAGE_FORMATS:
        raise InputError(f"{shown} is an image ({container.format.name}), not a video")
    stream = candidates[0]
    if stream.codec_context is None:
        raise InputError(f"{shown}: video stream #{stream.index} uses a codec this FFmpeg build "
                         "cannot decode")
    return stream


def describe_video(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    """Geometry, timing and tags of ``stream`` from the container (before decoding)."""
    cc = stream.codec_context
    duration: float | None = None
    of_video = True
    if stream.duration is not None and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif _tag_seconds(stream.metadata.get("DURATION")) is not None:  # Matroska track tag
        duration = _tag_seconds(stream.metadata.get("DURATION"))
    elif container.duration:
        duration = container.duration / av.time_base
        of_video = False
    sar = cc.sample_aspect_ratio
    return VideoInfo(
        index=stream.index, codec=cc.name, width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt,
        time_base=stream.time_base or Fraction(1, 90000),
        average_rate=stream.average_rate, base_rate=stream.base_rate,
        frames=stream.frames or 0, duration=duration, start_time=stream.start_time,
        sample_aspect_ratio=sar if sar and sar > 0 else None, colour=Colour.of(cc),
        metadata=dict(stream.metadata), duration_is_video=of_video)


def _tag_seconds(text: str | None) -> float | None:
    """``"00:00:02.400000000"`` -> 2.4 (the DURATION tag FFmpeg writes in Matroska)."""
    if not text:
        return None
    try:
        seconds = 0.0
        for part in text.strip().split(":"):
            seconds = seconds * 60 + float(part)
        return seconds
    except ValueError:
        return None


def display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The 3x3 display matrix (9 int32, FFmpeg layout) a decoded frame carries, if any."""
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            values = np.frombuffer(bytes(side), dtype="<i4")
            if values.size >= 9:
                return tuple(int(v) for v in values[:9])
    return None


def looks_like_video(path: Path) -> bool:
    """For folder scans: a known video extension, or (unknown extension) a probe that finds
    a video stream in a container that is not an image format."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix in _NOT_VIDEO or path.name.startswith("."):
        return False
    try:
        with av.open(str(path), "r") as container:
            return (container.format.name not in _IMAGE_FORMATS
                    and any(not (s.disposition & av.stream.Disposition.attached_pic)
                            for s in container.streams.video))
    except (av.error.FFmpegError, OSError, ValueError):
        return False
