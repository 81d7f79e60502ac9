"""Outputs for live work: crash-safe recordings, time-named segments, restreaming.

:func:`classify_output` reads OUTPUT:

- a URL (``rtsp://``, ``rtmp://``, ``udp://``, ``srt://``, ``tcp://``) is a **restream**: RTSP
  is published with ANNOUNCE/RECORD over TCP (``format='rtsp'``), RTMP as FLV, UDP/SRT/TCP as
  MPEG-TS (UDP in 1316-byte datagrams). A restream that fails after it has worked (the server
  went away) is reopened with backoff while frames are dropped, never killing the camera;
- with ``--segment-time N``, a **segment pattern**: one file per N seconds of video, named by
  the wall-clock time its recording started (``strftime`` codes, local time). A folder gives
  ``FOLDER/NAME-%Y%m%d-%H%M%S.mkv``; a file name without ``%`` codes gets
  ``-%Y%m%d-%H%M%S`` before its extension. Every segment is a complete file starting at
  timestamp 0 and at a keyframe (each has its own encoder);
- otherwise a **recording** in one file, written in place (not renamed at the end) so that it
  can be watched while it grows and stays playable if the process is killed (losing at most
  about the last second): MP4/MOV are written fragmented
  (``movflags=frag_keyframe+empty_moov+default_base_moof``, ``frag_duration`` 1 s), Matroska
  in clusters of at most 1 s, MPEG-TS as it is; every packet is flushed to the OS as it is
  written.

Live encoding favours delay over compression: x264/x265 get ``tune=zerolatency`` and the
``veryfast`` preset, NVENC ``zerolatency``; a keyframe every 2 seconds. ``--preset``/``-x``
override all of it.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import av

from ..encoders import EncoderSettings, candidates, encoder_opens, is_nvenc
from ..errors import PipelineError, UsageError
from ..frames import FrameItem
from ..media import VideoInfo
from ..output import check_output
from ..sink import VideoSink
from ..util import is_url, redact_url
from .backoff import Backoff

log = logging.getLogger(__name__)

__all__ = ["OutputSpec", "classify_output", "live_encoder_settings", "make_live_sink", "SegmentedSink",
           "ReconnectingSink", "STREAM_FORMATS"]

#: Restream URL scheme -> FFmpeg muxer.
STREAM_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "udp": "mpegts",
                  "srt": "mpegts", "tcp": "mpegts"}
DEFAULT_SEGMENT_NAME = "-%Y%m%d-%H%M%S"
_CRASH_SAFE = {".mkv", ".mka", ".webm", ".ts", ".mts", ".m2ts", ".mp4", ".m4v", ".mov", ".flv", ".nut"}
_FRAGMENTED = {".mp4", ".m4v", ".mov"}
KEYFRAME_SECONDS = 2.0


@dataclass(frozen=True)
class OutputSpec:
    """One OUTPUT, classified."""

    text: str
    kind: str                    # "file", "segments" or "stream"
    target: str                  # path, strftime pattern or URL
    shown: str                   # safe to log
    format: str | None = None    # muxer of a stream
    options: dict[str, str] = field(default_factory=dict)  # container options
    segment_time: float | None = None

    @property
    def suffix(self) -> str:
        return Path(self.target).suffix.lower() if self.kind != "stream" else ""


def classify_output(text: str, *, segment_time: float | None = None, name: str = "derain",
                    overwrite: bool = False) -> OutputSpec:
    """Classify and check OUTPUT (raises :class:`UsageError` with one line)."""
    value = str(text)
    if is_url(value):
        scheme = urlsplit(value).scheme.lower()
        if scheme == "file":
            value = urlsplit(value).path
        elif scheme not in STREAM_FORMATS:
            raise UsageError(f"cannot send video to {redact_url(value)}: restream outputs are "
                             f"{', '.join(sorted(STREAM_FORMATS))} URLs")
        else:
            if segment_time is not None:
                raise UsageError("--segment-time needs a file or folder OUTPUT, not a stream URL")
            fmt = STREAM_FORMATS[scheme]
            url = value
            # Every packet goes out at once (not when the 1316-byte datagram or 32 kB
            # buffer happens to fill up).
            options = {"max_interleave_delta": "1000000", "flush_packets": "1"}
            if fmt == "rtsp":
                options["rtsp_transport"] = "tcp"
            elif fmt == "flv":
                options["flvflags"] = "no_duration_filesize"
            if scheme == "udp" and "pkt_size=" not in value:
                url = f"{value}{'&' if '?' in value else '?'}pkt_size=1316"
            return OutputSpec(text, "stream", url, redact_url(url), fmt, options)
    if value == "-":
        raise UsageError("writing video to stdout is not supported; give a file, folder or stream URL")
    if segment_time is not None:
        if segment_time <= 0:
            raise UsageError("--segment-time must be positive")
        pattern = _segment_pattern(value, name)
        folder = Path(pattern).parent if str(Path(pattern).parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"output folder does not exist: {folder}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"output folder is not writable: {folder}")
        suffix = Path(pattern).suffix.lower()
        return OutputSpec(text, "segments", pattern, pattern, None, _file_options(suffix), segment_time)
    path = Path(value)
    check_output(None, path, overwrite)
    suffix = path.suffix.lower()
    if suffix not in _CRASH_SAFE:
        log.warning("%s: %s files are unreadable if the process is killed; .mkv, .mp4 or .ts "
                    "recordings stay playable", path, suffix)
    return OutputSpec(text, "file", str(path), str(path), None, _file_options(suffix))


def _segment_pattern(value: str, name: str) -> str:
    path = Path(value)
    if value.endswith(("/", os.sep)) or path.is_dir():
        return str(path / f"{_safe(name)}{DEFAULT_SEGMENT_NAME}.mkv")
    if not path.suffix:
        raise UsageError(f"segment pattern {value} has no extension; add one (.mkv, .mp4, .ts)")
    if "%" not in path.name:
        return str(path.with_name(f"{path.stem}{DEFAULT_SEGMENT_NAME}{path.suffix}"))
    try:
        time.strftime(path.name)
    except ValueError as exc:
        raise UsageError(f"bad time pattern in {value}: {exc}") from None
    return value


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "derain"


def _file_options(suffix: str) -> dict[str, str]:
    """Container options that keep a recording readable up to its last second or so when the
    process is killed: MP4/MOV fragmented at every keyframe and at least every second,
    Matroska clusters of at most a second (the default, 5 s, would leave nothing readable
    in a file killed early), and every packet flushed to the OS."""
    options = {"flush_packets": "1", "max_interleave_delta": "1000000"}
    if suffix in _FRAGMENTED:
        options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        options["frag_duration"] = "1000000"
    elif suffix in (".mkv", ".mka", ".webm"):
        options["cluster_time_limit"] = "1000"
    return options


def live_encoder_settings(settings: EncoderSettings, fps: float) -> EncoderSettings:
    """Low-delay defaults for the encoder ``settings`` will pick (user choices win)."""
    try:
        names = candidates(settings.codec)
    except UsageError:
        return settings  # the sink reports the problem with its usual message
    # The encoder the sink will pick (pick_encoder's choice, without logging it twice).
    encoder = next((n for n in names if len(names) == 1 or encoder_opens(n)), names[-1])
    options = dict(settings.options)
    preset = settings.preset
    if encoder in ("libx264", "libx265"):
        options.setdefault("tune", "zerolatency")
        preset = preset or "veryfast"
    elif is_nvenc(encoder):
        options.setdefault("zerolatency", "1")
        options.setdefault("bf", "0")
    options.setdefault("g", str(max(1, round(KEYFRAME_SECONDS * (fps or 25.0)))))
    return replace(settings, preset=preset, options=options)


class SegmentedSink:
    """One file per ``segment_time`` seconds of output video, named by wall-clock time."""

    def __init__(self, spec: OutputSpec, make: Callable[[str], VideoSink],
                 clock: Callable[[], float] = time.time,
                 on_segment: Callable[[str], None] | None = None) -> None:
        assert spec.segment_time is not None
        self.spec = spec
        self.segment_time = Fraction(spec.segment_time).limit_denominator(1000)
        self._make = make
        self._clock = clock
        self._on_segment = on_segment
        self.current: VideoSink | None = None
        self.current_path: str | None = None
        self.files: list[str] = []
        self.warnings: list[str] = []
        self.frames = 0
        self._index = -1
        self._first: Fraction | None = None
        self._offset = Fraction(0)   # seconds subtracted in the current segment
        self._describe = ""
        self.encoder = ""
        self.options: dict[str, str] = {}

    # -- FrameSink ---------------------------------------------------------------------
    def open(self) -> None:
        """Open the first segment now: bad encoder settings fail before any work."""
        self._start_segment()

    def write_frame(self, item: FrameItem) -> None:
        t = item.pts * item.time_base
        if self._first is None:
            self._first = t
            self._index = 0
            self._offset = t
        else:
            index = math.floor((t - self._first) / self.segment_time)
            if index > self._index:
                self._finish_segment()
                self._start_segment()
                self._index = index
                self._offset = t
        assert self.current is not None
        item.pts -= round(self._offset / item.time_base)
        self.current.write_frame(item)
        self.frames += 1

    def write_packet(self, packet: av.Packet) -> None:
        if self.current is None or self._first is None or not packet.time_base:
            return
        shift = round(self._offset / packet.time_base)
        for name in ("pts", "dts"):
            value = getattr(packet, name)
            if value is not None:
                setattr(packet, name, value - shift)
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None or ts < 0:
            return  # belongs to the previous segment
        self.current.write_packet(packet)

    def close(self) -> None:
        self._finish_segment()

    def abort(self) -> None:
        if self.current is not None:
            self.current.abort()
            self._record(self.current_path)
            self.current = None

    @property
    def describe(self) -> str:
        return self._describe

    # -- segments ----------------------------------------------------------------------
    def _name(self) -> str:
        name = time.strftime(self.spec.target, time.localtime(self._clock()))
        path = Path(name)
        n = 1
        while path.exists() or str(path) in self.files:
            path = Path(name).with_name(f"{Path(name).stem}-{n}{Path(name).suffix}")
            n += 1
        return str(path)

    def _start_segment(self) -> None:
        path = self._name()
        sink = self._make(path)
        sink.open()
        self.current, self.current_path = sink, path
        self._describe = sink.describe
        self.encoder, self.options = sink.encoder, sink.options
        log.info("segment %s started", path)

    def _finish_segment(self) -> None:
        sink, path = self.current, self.current_path
        if sink is None:
            return
        self.current = None
        try:
            sink.close()
        finally:
            self.warnings.extend(w for w in sink.warnings if w not in self.warnings)
            self._record(path)
        log.info("segment %s done: %d frames", path, sink.stats.frames)

    def _record(self, path: str | None) -> None:
        if path is not None and path not in self.files:
            self.files.append(path)
            if self._on_segment is not None:
                self._on_segment(path)


class ReconnectingSink:
    """Wraps a restream sink: once it has worked, a failing write closes it, frames are
    dropped while it is down, and it is reopened with backoff (a new encoder, so the new
    connection starts with a keyframe). A failure before the first write is an error."""

    def __init__(self, make: Callable[[], VideoSink], shown: str, *, delay: float = 0.5,
                 delay_max: float = 10.0, on_error: Callable[[str], None] | None = None) -> None:
        self._make = make
        self.shown = shown
        self._backoff = Backoff(delay, delay_max)
        self._on_error = on_error
        self.inner: VideoSink | None = None
        self.worked = False
        self.frames_skipped = 0
        self.reopens = 0
        self.warnings: list[str] = []
        self._retry_at = 0.0
        self.encoder = ""
        self.options: dict[str, str] = {}
        self._describe = ""

    def open(self) -> None:
        self.inner = self._make()
        self.inner.open()
        self.encoder, self.options, self._describe = self.inner.encoder, self.inner.options, self.inner.describe

    @property
    def describe(self) -> str:
        return self._describe

    def _ready(self) -> bool:
        if self.inner is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        sink = self._make()
        try:
            sink.open()
        except PipelineError as exc:
            self._down(str(exc))
            return False
        self.inner = sink
        self.reopens += 1
        return True

    def _down(self, reason: str) -> None:
        if self.inner is not None:
            self.inner.abort()
            self.inner = None
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        log.warning("output %s: %s; retrying in %.1fs", self.shown, redact_url(reason), delay)
        if self._on_error is not None:
            self._on_error(reason)

    def write_frame(self, item: FrameItem) -> None:
        if not self._ready():
            self.frames_skipped += 1
            return
        assert self.inner is not None
        try:
            self.inner.write_frame(item)
        except PipelineError as exc:
            if not self.worked:
                raise
            self._down(str(exc))
            self.frames_skipped += 1
            return
        if not self.worked or self._backoff.attempts:
            if self._backoff.attempts:
                log.info("output %s: sending again", self.shown)
            self.worked = True
            self._backoff.reset()

    def write_packet(self, packet: av.Packet) -> None:
        if self.inner is None:
            return
        try:
            self.inner.write_packet(packet)
        except PipelineError as exc:
            if not self.worked:
                raise
            self._down(str(exc))

    def close(self) -> None:
        if self.inner is not None:
            sink, self.inner = self.inner, None
            try:
                sink.close()
            except PipelineError as exc:
                if not self.worked:
                    raise
                self.warnings.append(f"output {self.shown}: {exc}")
            self.warnings.extend(sink.warnings)

    def abort(self) -> None:
        if self.inner is not None:
            self.inner.abort()
            self.inner = None


def make_live_sink(spec: OutputSpec, info: VideoInfo, copy_streams: Sequence[av.stream.Stream],
                   settings: EncoderSettings, *, compare: bool = False,
                   on_segment: Callable[[str], None] | None = None,
                   on_output_error: Callable[[str], None] | None = None) -> Any:
    """The sink for ``spec`` (not opened yet)."""
    fps = float(info.rate) if info.rate else 25.0
    live_settings = live_encoder_settings(settings, fps)
    common = dict(compare=compare, drop_incompatible=True)
    if spec.kind == "stream":
        assert spec.format is not None

        def make_stream() -> VideoSink:
            return VideoSink(spec.target, info, copy_streams, live_settings, format=spec.format,
                             container_options=dict(spec.options), shown_name=spec.shown, **common)
        return ReconnectingSink(make_stream, spec.shown, on_error=on_output_error)
    if spec.kind == "segments":
        def make_file(path: str) -> VideoSink:
            return VideoSink(path, info, copy_streams, live_settings, container_options=dict(spec.options),
                             **common)
        return SegmentedSink(spec, make_file, on_segment=on_segment)
    return VideoSink(spec.target, info, copy_streams, live_settings, container_options=dict(spec.options),
                     **common)
