"""The source stage: open the input, demux it, decode its video, pass the other packets on.

:class:`VideoSource` opens a file or URL (container options such as ``rtsp_transport`` go to
FFmpeg unchanged), decodes the derained video stream with FFmpeg's threaded decoding and
yields, in demux order, :class:`~pipeline.frames.FrameItem` objects (RGB frames with their
original timestamps) and the ``av.Packet`` objects of every stream that is copied (audio,
subtitles, data, other video).

Trimming (``--start/--duration/--frames``): the input is seeked to the keyframe before
``start`` and decoded from there; frames before ``start`` are dropped, so the cut is
frame-accurate. Timestamps of everything written are *rebased to the start point*: a
trimmed output starts at 0 (like ``ffmpeg -ss`` before ``-i``); an untrimmed output keeps
the input's timestamps exactly. Copied packets are kept when they *start* inside the kept
range ``[start, end)``, so audio is cut at packet granularity (about 21 ms for AAC).

Damaged input is handled the way ffmpeg handles it: a packet the decoder rejects is counted
and skipped, a read error stops reading at that point, and a file that ends early is
processed up to its end. :attr:`VideoSource.warnings` says what happened, with counts.
"""
from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Union

import av

from .errors import InputError
from .frames import FrameItem, to_rgb
from .media import Colour, VideoInfo, describe_video, display_matrix, open_input, pick_video_stream
from .util import format_seconds, redact_url

log = logging.getLogger(__name__)

Item = Union[FrameItem, av.Packet]

#: Stream types copied packet for packet beside the derained video.
COPIED_TYPES = ("audio", "subtitle", "data", "attachment", "video")


@dataclass(frozen=True)
class Trim:
    """Part of the input to process: ``start`` seconds in, for ``duration`` seconds or
    ``frames`` frames (at most one of the two)."""

    start: Fraction | None = None
    duration: Fraction | None = None
    frames: int | None = None

    def __post_init__(self) -> None:
        if self.duration is not None and self.frames is not None:
            raise ValueError("give --duration or --frames, not both")
        if self.frames is not None and self.frames < 1:
            raise ValueError("--frames must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("--duration must be positive")

    @property
    def active(self) -> bool:
        return bool(self.start) or self.duration is not None or self.frames is not None


@dataclass
class SourceStats:
    """Counters of the source stage (reported in ``--stats-json``)."""

    packets_read: int = 0
    video_packets: int = 0
    frames_decoded: int = 0
    frames_out: int = 0
    frames_trimmed: int = 0
    decode_errors: int = 0      # packets the decoder rejected
    undecodable_packets: int = 0  # video packets that produced no picture (untrimmed runs)
    concealed_frames: int = 0   # pictures the decoder flagged as damaged (errors concealed)
    corrupt_packets: int = 0    # packets the demuxer flagged as damaged
    read_errors: int = 0
    fixed_timestamps: int = 0   # missing or non-increasing video timestamps repaired
    resized_frames: int = 0     # frames scaled back to the first frame's size
    packets_copied: dict[int, int] = field(default_factory=dict)  # by input stream index
    packets_trimmed: int = 0


class VideoSource:
    """Reads one input. ``open()`` probes it and decodes up to its first kept frame (so
    :attr:`info` has the frame's real size, colour and rotation); ``items()`` then yields
    everything in demux order. Not thread-safe: one thread drives it at a time."""

    def __init__(self, url: "str | os.PathLike[str]", *, options: dict[str, str] | None = None,
                 timeout: float | None = None, trim: Trim | None = None, threads: int = 0,
                 copy_streams: bool = True, thread_type: str = "AUTO",
                 stop: Callable[[], bool] | None = None) -> None:
        self.url = os.fspath(url)
        self.shown = redact_url(self.url)
        self.options = dict(options or {})
        self.timeout = timeout
        self.trim = trim or Trim()
        self.threads = threads
        # Live inputs decode with "SLICE" threads: frame threads hold frames back (delay).
        self.thread_type = thread_type
        self._stop = stop  # when it returns True, reading ends (no retries after read errors)
        self.copy = copy_streams
        self.stats = SourceStats()
        self.warnings: list[str] = []
        self.container: av.container.InputContainer | None = None
        self.video: av.video.stream.VideoStream | None = None
        self.info: VideoInfo | None = None
        self.copy_streams: list[av.stream.Stream] = []
        self._gen: Iterator[Item] | None = None
        self._buffered: collections.deque[Item] = collections.deque()
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None      # last decoded pts (input timeline)
        self._last_out_pts: int | None = None  # last emitted pts (output timeline)
        self._video_done = False
        self._end_time: Fraction | None = None
        self._finished_streams: set[int] = set()
        self._held: collections.deque[tuple[Fraction, av.Packet]] = collections.deque()
        self._video_time: Fraction | None = None
        self._eof = False
        self._origin = Fraction(0)  # the container's start time: trim times count from it
        self._last_decode_error = ""
        self._last_read_error = ""

    # -- setup -------------------------------------------------------------------------
    def open(self) -> VideoInfo:
        """Open and probe the input; raises :class:`InputError` with a one-line reason."""
        self.container = open_input(self.url, self.options, self.timeout)
        try:
            self.video = pick_video_stream(self.container, self.shown)
            self.info = describe_video(self.container, self.video)
            cc = self.video.codec_context
            cc.thread_type = self.thread_type
            cc.thread_count = self.threads
            if self.copy:
                self.copy_streams = [s for s in self.container.streams
                                     if s.index != self.video.index and s.type in COPIED_TYPES]
            for s in self.copy_streams:
                self.stats.packets_copied[s.index] = 0
            if self.trim.active and self.container.start_time:
                self._origin = Fraction(self.container.start_time, av.time_base)
            if self.trim.duration is not None:
                self._end_time = (self.trim.start or Fraction(0)) + self.trim.duration
            if self.trim.start:
                self._seek(self.trim.start)
            self._gen = self._produce()
            # Decode up to the first kept frame: its tags are the truth about the stream.
            for item in self._gen:
                self._buffered.append(item)
                if isinstance(item, FrameItem):
                    break
            else:
                self._no_frames()
        except BaseException:
            self.close()
            raise
        return self.info

    def _seek(self, start: Fraction) -> None:
        assert self.container is not None and self.video is not None
        if self.info and self.info.duration and start >= Fraction(self.info.duration):
            raise InputError(f"--start {float(start):.3f}s is past the end of {self.shown} "
                             f"({format_seconds(self.info.duration)})")
        target = int((start + self._origin) / self.video.time_base)
        try:
            self.container.seek(target, stream=self.video, backward=True, any_frame=False)
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot seek in {self.shown} for --start: {exc}") from None

    def _no_frames(self) -> None:
        if self.trim.active and self.stats.frames_decoded:
            raise InputError(f"no video frame of {self.shown} falls in the requested range")
        detail = f" ({self._last_decode_error})" if self._last_decode_error else ""
        raise InputError(f"{self.shown}: no video frame could be decoded{detail}")

    # -- reading -----------------------------------------------------------------------
    def items(self) -> Iterator[Item]:
        """Frames and copied packets in demux order, starting with what ``open()`` read."""
        if self._gen is None:
            raise RuntimeError("VideoSource.open() must be called first")
        while self._buffered:
            yield self._buffered.popleft()
        yield from self._gen
        self._finish_report()

    def _demux(self) -> Iterator[av.Packet]:
        """Packets until EOF; a read error is counted and reading resumes after it (a file
        whose end is missing stops after a few consecutive errors)."""
        assert self.container is not None
        consecutive = 0
        while True:
            try:
                for packet in self.container.demux():
                    consecutive = 0
                    yield packet
                    if self._stop is not None and self._stop():
                        return
                self._eof = True
                return
            except av.error.EOFError:
                self._eof = True
                return
            except av.error.FFmpegError as exc:
                self.stats.read_errors += 1
                consecutive += 1
                self._last_read_error = redact_url(exc.strerror or str(exc))
                if self._stop is not None and self._stop():
                    raise
                if consecutive >= 8:
                    self._eof = True
                    return

    def _produce(self) -> Iterator[Item]:
        assert self.video is not None
        vindex = self.video.index
        copied = {s.index for s in self.copy_streams}
        for packet in self._demux():
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # PyAV's end-of-stream marker; the decoder is flushed below
            self.stats.packets_read += 1
            if packet.is_corrupt:
                self.stats.corrupt_packets += 1
            if packet.stream_index == vindex:
                if self._video_done:
                    continue
                self.stats.video_packets += 1
                for frame in self._decode(packet):
                    yield from self._on_frame(frame)
                if self._video_done:
                    self._drain_decoder()
                    yield from self._release_held()
            elif packet.stream_index in copied:
                yield from self._on_packet(packet)
            if self._video_done and self._copies_done(copied):
                break
        if not self._video_done:
            for frame in self._decode(None):
                yield from self._on_frame(frame)
            self._video_done = True
        yield from self._release_held(final=True)

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        assert self.video is not None
        try:
            frames = self.video.decode(packet)
        except av.error.EOFError:
            return []
        except av.error.FFmpegError as exc:
            self.stats.decode_errors += 1
            self._last_decode_error = redact_url(exc.strerror or str(exc))
            if self.stats.frames_decoded == 0 and self.stats.decode_errors >= 50:
                raise InputError(f"{self.shown}: the video cannot be decoded "
                                 f"({self._last_decode_error})") from None
            return []
        for frame in frames:
            self.stats.frames_decoded += 1
            if frame.is_corrupt:
                self.stats.concealed_frames += 1
        return frames

    def _drain_decoder(self) -> None:
        """After the end of a trimmed range: flush the decoder so every packet it was given
        is accounted for (the frames are past the range and dropped)."""
        self._decode(None)

    def _on_frame(self, frame: av.VideoFrame) -> Iterator[Item]:
        assert self.info is not None
        if self._video_done:
            return
        info, trim = self.info, self.trim
        tb = info.time_base
        step = info.frame_ticks
        pts = frame.pts
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + step
            self.stats.fixed_timestamps += 1
        self._last_pts = pts
        t = pts * tb - self._origin
        if trim.start and t < trim.start:
            self.stats.frames_trimmed += 1
            return
        if self._end_time is not None and t >= self._end_time:
            self._video_done = True
            return
        out_pts = pts - self._offset(tb)
        if self._last_out_pts is not None and out_pts <= self._last_out_pts:
            out_pts = self._last_out_pts + 1
            self.stats.fixed_timestamps += 1
        self._last_out_pts = out_pts
        duration = int(frame.duration or 0) or step
        if self._size is None:
            self._size = (frame.width, frame.height)
            self._adopt_frame_tags(frame)
        elif (frame.width, frame.height) != self._size:
            self.stats.resized_frames += 1
        item = FrameItem(index=self.stats.frames_out, pts=out_pts, duration=duration,
                         time_base=tb, rgb=to_rgb(frame, self._size))
        self.stats.frames_out += 1
        self._video_time = t
        if trim.frames is not None and self.stats.frames_out >= trim.frames:
            self._end_time = t + Fraction(duration) * tb
            self._video_done = True
        yield item
        if self._held:
            yield from self._release_held()

    def _adopt_frame_tags(self, frame: av.VideoFrame) -> None:
        """The first kept frame fixes the size, colour tags and display matrix."""
        assert self.info is not None
        self.info.width, self.info.height = frame.width, frame.height
        self.info.colour = Colour.of(frame).merged(self.info.colour)
        matrix = display_matrix(frame)
        if matrix is not None and matrix != (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30):
            self.info.display_matrix = matrix
            self.info.rotation = frame.rotation

    def _on_packet(self, packet: av.Packet) -> Iterator[Item]:
        trim = self.trim
        index = packet.stream_index
        if index in self._finished_streams:
            self.stats.packets_trimmed += 1
            return
        tb = packet.time_base
        ts = packet.pts if packet.pts is not None else packet.dts
        if trim.active and ts is not None and tb:
            t = ts * tb - self._origin
            if trim.start and t < trim.start:
                self.stats.packets_trimmed += 1
                return
            if self._end_time is not None and t >= self._end_time:
                self._finished_streams.add(index)
                self.stats.packets_trimmed += 1
                return
            if self._end_time is None and trim.frames is not None:
                # The end is known only when the last frame is decoded: hold packets that
                # lie beyond the video decoded so far.
                if self._video_time is None or t > self._video_time:
                    self._held.append((t, packet))
                    return
        yield self._emit_packet(packet)

    def _release_held(self, final: bool = False) -> Iterator[Item]:
        while self._held:
            t, packet = self._held[0]
            if self._end_time is not None and t >= self._end_time:
                self._held.popleft()
                self.stats.packets_trimmed += 1
                continue
            if not final and self._end_time is None and (self._video_time is None or t > self._video_time):
                break
            self._held.popleft()
            yield self._emit_packet(packet)

    def _emit_packet(self, packet: av.Packet) -> av.Packet:
        if self.trim.start and packet.time_base:
            offset = self._offset(packet.time_base)
            if packet.pts is not None:
                packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
        self.stats.packets_copied[packet.stream_index] = self.stats.packets_copied.get(packet.stream_index, 0) + 1
        return packet

    def _offset(self, tb: Fraction) -> int:
        """Ticks subtracted from every timestamp of a trimmed run (its output starts at 0)."""
        return round((self.trim.start + self._origin) / tb) if self.trim.start else 0

    def _copies_done(self, copied: set[int]) -> bool:
        if self._end_time is None:
            return False  # untrimmed: read to the end for the other streams
        return not copied or copied <= self._finished_streams

    # -- report ------------------------------------------------------------------------
    def _finish_report(self) -> None:
        s, info = self.stats, self.info
        if self._eof and not self.trim.active:
            # Every packet went through the decoder and it was flushed: a packet that gave no
            # picture was damaged (the decoder skips what it cannot decode).
            s.undecodable_packets = max(0, s.video_packets - s.frames_decoded)
        bad = max(s.decode_errors, s.undecodable_packets)
        if bad:
            detail = f": {self._last_decode_error}" if self._last_decode_error else ""
            self.warnings.append(f"input: {bad} of {s.video_packets} video packets could not be "
                                 f"decoded (damaged data{detail}); every decodable frame was processed")
        if s.concealed_frames:
            self.warnings.append(f"input: {s.concealed_frames} frames were decoded with errors concealed")
        if s.corrupt_packets:
            self.warnings.append(f"input: {s.corrupt_packets} packets are marked as damaged by the demuxer")
        if s.read_errors:
            self.warnings.append(f"input: {s.read_errors} read errors ({self._last_read_error}); "
                                 "the input was processed up to the damage")
        if s.fixed_timestamps:
            self.warnings.append(f"input: {s.fixed_timestamps} missing or non-increasing video "
                                 "timestamps were repaired")
        if s.resized_frames:
            self.warnings.append(f"input: the video changed size mid-stream; {s.resized_frames} "
                                 f"frames were scaled to the first frame's {self._size[0]}x{self._size[1]}"
                                 if self._size else "")
        if info is not None and not self.trim.active and self._eof:
            self._check_truncation(info)

    def _check_truncation(self, info: VideoInfo) -> None:
        s = self.stats
        if info.frames > 0 and s.video_packets < info.frames:
            self.warnings.append(f"input ended early: {s.frames_out} of the {info.frames} frames "
                                 "its header declares (truncated file?); processed what is there")
            return
        if info.duration and self._video_time is not None:
            frame = info.frame_ticks * float(info.time_base)
            start = float((info.start_time or 0) * info.time_base)
            end = float(self._video_time) - start + frame  # from the stream's first frame
            # The container's duration may include a longer audio track: be lenient then.
            slack = max(0.5, 3 * frame) if info.duration_is_video else max(1.0, 3 * frame)
            if end < info.duration - slack:
                self.warnings.append(f"input ended early: video stops at {format_seconds(end)} of "
                                     f"{format_seconds(info.duration)} (truncated file?); processed what is there")

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        if self.container is not None:
            try:
                self.container.close()
            except (av.error.FFmpegError, OSError):
                pass
            self.container = None
        self._buffered.clear()
        self._held.clear()
