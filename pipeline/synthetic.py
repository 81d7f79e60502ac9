"""Synthetic rainy clips written with PyAV, and a read-back summary of any media file.

Used by the tests, the benchmarks and the live-camera tests: every clip is real encoded media
(H.264/HEVC/FFV1... in MP4/MKV/MOV/TS) with optional AAC audio, subtitles, a KLV data stream,
variable frame rate timestamps, rotation and colour tags, corrupt packets and a fast-start
index, so a test can check that the pipeline keeps all of it::

    from pipeline.synthetic import make_clip, summarize
    clip = make_clip(tmp / "in.mp4", width=96, height=64, frames=30, audio=True)
    info = summarize(clip.path)          # frame pts, packet counts, tags, durations

Frames show a moving gradient scene with bright diagonal rain streaks (deterministic per
``seed``), so they compress like video and the network has something to remove.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from av.video.reformatter import Interpolation

_SWS_FLAGS = (Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
              | Interpolation.FULL_CHR_H_INP)

__all__ = ["ClipInfo", "MediaSummary", "StreamSummary", "make_clip", "rainy_frames", "summarize"]


def rainy_frames(width: int, height: int, frames: int, seed: int = 0,
                 streaks: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``frames`` ``(height, width, 3)`` uint8 RGB frames of a moving scene with rain."""
    rng = np.random.default_rng(seed)
    n = streaks if streaks is not None else max(8, width * height // 400)
    length = max(3, height // 10)
    x0 = rng.uniform(0, width, n)
    y0 = rng.uniform(0, height, n)
    speed = rng.uniform(0.08, 0.2, n) * height
    level = rng.uniform(60, 140, n)
    k = np.arange(length)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(frames):
        phase = 2 * math.pi * i / max(frames, 8)
        base = np.empty((height, width, 3), np.float32)
        base[..., 0] = 90 + 60 * np.sin(xx / max(width, 1) * 3 + phase)
        base[..., 1] = 100 + 50 * np.cos(yy / max(height, 1) * 2 - phase)
        base[..., 2] = 120 + 40 * np.sin((xx + yy) / max(width + height, 1) * 4 + phase / 2)
        # A moving dark box gives the encoder (and the eye) real motion.
        bx = int((i * 3) % max(width - width // 4, 1))
        by = height // 3
        base[by:by + height // 4, bx:bx + width // 4] *= 0.4
        # Rain: short bright diagonal streaks falling with per-streak speed.
        sy = (y0 + speed * i) % height
        py = (sy[:, None] + k[None, :]).astype(np.int64) % height
        px = (x0[:, None] + 0.3 * k[None, :]).astype(np.int64) % width
        np.add.at(base, (py.ravel(), px.ravel()), np.repeat(level, length)[:, None])
        yield np.clip(base, 0, 255).astype(np.uint8)


@dataclass
class ClipInfo:
    """What :func:`make_clip` wrote (as requested; use :func:`summarize` for what is on disk)."""

    path: Path
    width: int
    height: int
    frames: int
    time_base: Fraction
    pts: list[int]
    audio_packets: int = 0
    subtitle_packets: int = 0
    data_packets: int = 0
    corrupted: list[int] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one (nominal frame duration)."""
        if not self.pts:
            return 0.0
        step = self.pts[1] - self.pts[0] if len(self.pts) > 1 else 1
        return float((self.pts[-1] - self.pts[0] + step) * self.time_base)


def make_clip(path: "str | Path", *, width: int = 96, height: int = 64, frames: int = 30,
              fps: "int | Fraction" = 25, time_base: Fraction | None = None,
              pts: Sequence[int] | None = None, codec: str = "libx264",
              pix_fmt: str = "yuv420p", video_options: dict[str, str] | None = None,
              audio: "bool | str" = False, sample_rate: int = 48000,
              subtitles: bool = False, data: bool = False, rotation: int | None = None,
              color_range: int | None = None, colorspace: int | None = None,
              color_primaries: int | None = None, color_trc: int | None = None,
              corrupt: Sequence[int] = (), faststart: bool = False, seed: int = 0,
              content: Sequence[np.ndarray] | None = None) -> ClipInfo:
    """Encode a synthetic rainy clip to ``path`` (container chosen by the extension).

    Args:
        fps: nominal frame rate (the stream's average rate for CFR clips).
        time_base: video time base; default ``1/(fps*512)`` (like FFmpeg's MP4 muxer).
            Matroska always stores 1/1000, MPEG-TS 1/90000: use ``pts`` in those units.
        pts: explicit presentation timestamps in ``time_base`` units (variable frame rate).
        audio: ``True`` for AAC, or an encoder name (``"aac"``, ``"libopus"``, ``"mp2"``...).
        subtitles: add a text subtitle stream (SubRip in MKV, mov_text in MP4/MOV), one cue
            per second of video.
        data: add a KLV data stream (MPEG-TS only), one packet every 5 frames.
        rotation: counter-clockwise display rotation written as a display matrix.
        color_*: AVCOL_* values tagged on the stream and frames.
        corrupt: indices (in encode order) of video packets whose payload (after the first
            8 bytes) is replaced by random bytes (damaged media the demuxer still reads).
        faststart: MP4/MOV with the index at the front (a truncated copy stays readable).
        content: frames to encode instead of the synthetic scene.
    """
    path = Path(path)
    fps = Fraction(fps)
    if pts is None:
        tb = time_base or Fraction(1, 1) / (fps * 512)
        step = 1 / (fps * tb)
        if step.denominator != 1:
            raise ValueError(f"time base {tb} cannot express {fps} fps exactly; pass pts")
        pts = [i * int(step) for i in range(frames)]
    else:
        tb = time_base or Fraction(1, 1000)
        if len(pts) != frames:
            raise ValueError("pts must have one entry per frame")
    options = {"movflags": "+faststart"} if faststart else {}
    container = av.open(str(path), "w", options=options)
    try:
        vopts = {"preset": "veryfast"} if codec in ("libx264", "libx265") else {}
        vopts.update(video_options or {})
        if codec == "libx265":
            vopts.setdefault("x265-params", "log-level=error")
        vstream = container.add_stream(codec, rate=fps, options=vopts)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, pix_fmt
        vstream.codec_context.time_base = tb
        vstream.time_base = tb
        colour = {"color_range": color_range, "colorspace": colorspace,
                  "color_primaries": color_primaries, "color_trc": color_trc}
        for name, value in colour.items():
            if value is not None:
                setattr(vstream.codec_context, name, value)
        if rotation:
            vstream.set_display_rotation(rotation)
        duration = Fraction(pts[-1] - pts[0], 1) * tb + 1 / fps if frames else Fraction(0)

        astream = None
        if audio:
            astream = container.add_stream("aac" if audio is True else audio, rate=sample_rate)
            astream.layout = "stereo"
        sstream, sub_codec = None, None
        if subtitles:
            sub_codec = "subrip" if path.suffix.lower() in (".mkv", ".webm") else "mov_text"
            sstream = container.add_mux_stream(sub_codec)
            sstream.time_base = Fraction(1, 1000)
        dstream = container.add_data_stream("klv") if data else None

        info = ClipInfo(path=path, width=width, height=height, frames=frames, time_base=tb,
                        pts=list(pts), corrupted=sorted(set(corrupt)))
        audio_queue = _audio_packets(astream, sample_rate, duration) if astream else iter(())
        pending_audio = next(audio_queue, None)
        rng = np.random.default_rng(seed + 1)
        source = iter(content) if content is not None else rainy_frames(width, height, frames, seed)
        packet_index = 0

        def mux_video(packets: list[av.Packet]) -> None:
            nonlocal packet_index
            for packet in packets:
                if packet_index in info.corrupted:
                    packet = _garbage_like(packet, rng)
                container.mux(packet)
                packet_index += 1

        for i, (rgb, ts) in enumerate(zip(source, pts)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if colorspace is not None:
                frame.colorspace = colorspace
            frame = frame.reformat(format=pix_fmt, dst_color_range=color_range or None,
                                   interpolation=_SWS_FLAGS)
            for name, value in colour.items():
                if value is not None:
                    setattr(frame, name, value)
            frame.pts = ts
            frame.time_base = tb
            mux_video(vstream.encode(frame))
            now = Fraction(ts - pts[0], 1) * tb
            while pending_audio is not None and pending_audio[0] <= now + 1 / fps:
                container.mux(pending_audio[1])
                info.audio_packets += 1
                pending_audio = next(audio_queue, None)
            if sstream is not None and (i == 0 or int(now) != int(now - 1 / fps)):
                _mux_subtitle(container, sstream, sub_codec, now, i)
                info.subtitle_packets += 1
            if dstream is not None and i % 5 == 0:
                packet = av.Packet(b"\x06\x0e\x2b\x34" + bytes([i % 256]) * 12)
                packet.stream = dstream
                packet.time_base = Fraction(1, 90000)
                packet.pts = packet.dts = int((now + Fraction(1, 10)) * 90000)
                container.mux(packet)
                info.data_packets += 1
        mux_video(vstream.encode(None))
        while pending_audio is not None:
            container.mux(pending_audio[1])
            info.audio_packets += 1
            pending_audio = next(audio_queue, None)
    finally:
        container.close()
    if sub_codec == "mov_text":
        info.subtitle_packets = -1  # the MP4 muxer adds gap packets; count them with summarize()
    return info


def _audio_packets(stream: av.audio.stream.AudioStream, rate: int,
                   duration: Fraction) -> Iterator[tuple[Fraction, av.Packet]]:
    """Encode a two-tone sine covering ``duration`` seconds; yield (time, packet)."""
    total = int(math.ceil(duration * rate))
    chunk = 1024
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        wave = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)])
        frame = av.AudioFrame.from_ndarray(wave.astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            yield Fraction(start, rate), packet
    for packet in stream.encode(None):
        yield duration, packet


def _mux_subtitle(container: av.container.OutputContainer, stream: av.stream.Stream,
                  codec: str, now: Fraction, index: int) -> None:
    text = f"cue at frame {index}".encode()
    payload = len(text).to_bytes(2, "big") + text if codec == "mov_text" else text
    packet = av.Packet(payload)
    packet.stream = stream
    packet.time_base = Fraction(1, 1000)
    packet.pts = packet.dts = int(now * 1000)
    packet.duration = 500
    container.mux(packet)


def _garbage_like(packet: av.Packet, rng: np.random.Generator, keep: int = 8) -> av.Packet:
    """The packet with its payload after the first ``keep`` bytes (NAL length and header)
    randomised: the container and parsers still see a packet, the decoder sees damage."""
    data = bytearray(bytes(packet))
    data[keep:] = rng.integers(0, 256, max(0, len(data) - keep), dtype=np.uint8).tobytes()
    bad = av.Packet(bytes(data))
    bad.stream = packet.stream
    bad.time_base = packet.time_base
    bad.pts, bad.dts, bad.duration = packet.pts, packet.dts, packet.duration
    bad.is_keyframe = packet.is_keyframe
    return bad


@dataclass
class StreamSummary:
    """One stream of a file, as read back by :func:`summarize`."""

    index: int
    type: str
    codec: str | None
    time_base: Fraction | None
    packets: int = 0
    bytes: int = 0
    first_pts: int | None = None
    end_pts: int | None = None  # max(pts + duration) over packets
    packet_pts: list[int | None] = field(default_factory=list)

    @property
    def duration(self) -> float:
        if self.first_pts is None or self.end_pts is None or not self.time_base:
            return 0.0
        return float((self.end_pts - self.first_pts) * self.time_base)


@dataclass
class MediaSummary:
    """A file read back completely: streams, packets, decoded video frame timestamps, tags."""

    path: Path
    format: str
    streams: list[StreamSummary]
    video_index: int | None = None
    width: int = 0
    height: int = 0
    frame_pts: list[int] = field(default_factory=list)
    frame_time_base: Fraction | None = None
    average_rate: Fraction | None = None
    rotation: int = 0
    color_range: int = 0
    colorspace: int = 0
    color_primaries: int = 0
    color_trc: int = 0
    pix_fmt: str | None = None
    codec: str | None = None
    first_frame: np.ndarray | None = None
    decode_errors: int = 0

    def of_type(self, kind: str) -> list[StreamSummary]:
        return [s for s in self.streams if s.type == kind]

    @property
    def frames(self) -> int:
        return len(self.frame_pts)

    @property
    def video(self) -> StreamSummary:
        assert self.video_index is not None, f"{self.path} has no video stream"
        return self.streams[self.video_index]


def summarize(path: "str | Path", keep_first_frame: bool = False) -> MediaSummary:
    """Read ``path`` completely: packet counts per stream, decoded video pts, tags, durations."""
    path = Path(path)
    with av.open(str(path)) as container:
        streams = [StreamSummary(index=s.index, type=s.type,
                                 codec=s.codec_context.name if s.codec_context else getattr(s, "name", None),
                                 time_base=s.time_base) for s in container.streams]
        summary = MediaSummary(path=path, format=container.format.name, streams=streams)
        video = container.streams.video[0] if container.streams.video else None
        if video is not None:
            summary.video_index = video.index
            summary.average_rate = video.average_rate
            cc = video.codec_context
            summary.width, summary.height, summary.pix_fmt = cc.width, cc.height, cc.pix_fmt
            summary.codec = cc.name
            summary.color_range, summary.colorspace = cc.color_range, cc.colorspace
            summary.color_primaries, summary.color_trc = cc.color_primaries, cc.color_trc
            summary.frame_time_base = video.time_base
        got_frame = False

        def take(frames: list[av.VideoFrame]) -> None:
            nonlocal got_frame
            for frame in frames:
                summary.frame_pts.append(frame.pts)
                if not got_frame:
                    got_frame = True
                    summary.rotation = frame.rotation
                    summary.width, summary.height = frame.width, frame.height
                    if keep_first_frame:
                        summary.first_frame = frame.to_ndarray(format="rgb24", interpolation=_SWS_FLAGS)

        for packet in container.demux():
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            s = streams[packet.stream_index]
            s.packets += 1
            s.bytes += packet.size
            s.packet_pts.append(packet.pts)
            if packet.pts is not None:
                s.first_pts = packet.pts if s.first_pts is None else min(s.first_pts, packet.pts)
                end = packet.pts + (packet.duration or 0)
                s.end_pts = end if s.end_pts is None else max(s.end_pts, end)
            if video is not None and packet.stream_index == video.index:
                try:
                    take(video.decode(packet))
                except av.error.FFmpegError:
                    summary.decode_errors += 1
        if video is not None:
            try:
                take(video.decode(None))
            except av.error.FFmpegError:
                summary.decode_errors += 1
    return summary
