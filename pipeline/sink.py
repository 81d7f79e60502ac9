"""The sink stage: the output container, the video encoder and stream copy of everything else.

:class:`VideoSink` writes derained frames with their original timestamps (the encoder and
the output stream use the input's video time base and frame rate), copies the input's
audio, subtitle, data and other streams packet for packet (timestamps rescaled by the
muxer, never re-encoded), and carries over rotation (display matrix), colour tags
(range, matrix, primaries, transfer), sample aspect ratio, stream and container metadata
and chapters. Interleaving is done by FFmpeg's muxer (``av_interleaved_write_frame``),
which buffers each stream until the others catch up, so packets can arrive in demux order.

Odd frame sizes: 4:2:0/4:2:2 pixel formats cannot hold an odd width or height, so such
frames are encoded one column/row larger, the extra column/row repeating the last one (the
picture is not scaled; every player shows it). Pixel formats without chroma subsampling
(``--pix-fmt yuv444p``, RGB codecs) keep the exact odd size.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import av
import numpy as np

from .encoders import (AUTO_FALLBACKS, EncoderSettings, candidates, encoder_options, is_hardware,
                       pick_encoder, pixel_format)
from .errors import PipelineError, UsageError
from .frames import FrameItem, encoded_size, from_rgb, pad_edge
from .media import VideoInfo

log = logging.getLogger(__name__)


class _HardwareEncoderFailed(Exception):
    """A hardware encoder refused to open; the sink retries with a software one."""


@dataclass
class SinkStats:
    frames: int = 0
    video_packets: int = 0
    video_bytes: int = 0
    packets_copied: dict[int, int] = field(default_factory=dict)  # by input stream index
    fixed_timestamps: int = 0


class VideoSink:
    """Writes one output file. ``open()`` creates every stream and opens the encoder (so bad
    settings fail before any work); ``write_frame``/``write_packet`` may then be called in
    any interleaving from one thread; ``close()`` flushes and finalises; ``abort()`` stops
    without caring about the file (the caller deletes it)."""

    def __init__(self, path: "str | os.PathLike[str]", video: VideoInfo,
                 copy_streams: Sequence[av.stream.Stream], settings: EncoderSettings | None = None,
                 *, compare: bool = False, drop_incompatible: bool = False,
                 metadata: dict[str, str] | None = None, chapters: list | None = None,
                 container_options: dict[str, str] | None = None, shown_name: str | None = None,
                 format: str | None = None) -> None:
        self.path = os.fspath(path)
        self.format = format  # muxer name; None: from the file name (streams need one: rtsp, flv...)
        self.shown = shown_name or self.path
        self.info = video
        self.copy_streams = list(copy_streams)
        self.settings = settings or EncoderSettings()
        self.compare = compare
        self.drop_incompatible = drop_incompatible
        self.metadata = dict(metadata or {})
        self.chapters = chapters or []
        self.container_options = dict(container_options or {})
        self.stats = SinkStats()
        self.warnings: list[str] = []
        self.container: av.container.OutputContainer | None = None
        self.stream: av.video.stream.VideoStream | None = None
        self.encoder = ""
        self.options: dict[str, str] = {}
        self.pix_fmt = ""
        self.frame_size = (0, 0)    # (width, height) of the composed picture
        self.encoded_size = (0, 0)  # after padding odd sizes
        self._out_for: dict[int, av.stream.Stream] = {}
        self._last_dts: dict[int, int] = {}
        self._closed = False
        self._software_only = False

    # -- setup -------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.container = av.open(self.path, "w", format=self.format, options=self.container_options)
        except ValueError as exc:  # PyAV: "Could not determine output format"
            raise UsageError(f"cannot tell the container format from the output name {self.shown} "
                             "(use an extension such as .mp4, .mkv or .mov)") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise PipelineError(f"cannot create {self.shown}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            self._add_video_stream()
            self._add_copy_streams()
            self._copy_container_tags()
        except _HardwareEncoderFailed as exc:
            # A GPU encoder that opened in the probe can still refuse this size or these
            # settings: start the file again with the software encoder of the same format.
            self.abort()
            log.warning("%s; using the software encoder instead", exc)
            self._closed = False
            self._software_only = True
            self.warnings, self._out_for, self.stats = [], {}, SinkStats()
            self.open()
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self) -> None:
        assert self.container is not None
        info, settings = self.info, self.settings
        width = info.width * (2 if self.compare else 1)
        height = info.height
        self.frame_size = (width, height)
        last_error: Exception | None = None
        families = [settings.codec] + (list(AUTO_FALLBACKS) if settings.codec == "auto" else [])
        for attempt, family in enumerate(families):
            try:
                encoder = pick_encoder(family, software_only=self._software_only)
            except UsageError:
                if attempt == 0:
                    raise
                continue
            try:
                stream = self.container.add_stream(encoder, rate=info.rate)
            except ValueError as exc:  # the container cannot hold this codec
                last_error = exc
                continue
            if attempt:
                log.info("encoder: %s (the %s format cannot hold H.264)", encoder,
                         self.container.format.name)
            break
        else:
            fmt = self.container.format.name
            wanted = settings.codec if settings.codec != "auto" else "H.264, VP9 or AV1"
            raise UsageError(f"the {fmt} format of {self.shown} cannot hold {wanted} video "
                             f"({last_error}); choose another --codec or output extension")
        self.encoder = encoder
        self.pix_fmt = pixel_format(encoder, settings.pix_fmt)
        self.encoded_size = encoded_size(width, height, self.pix_fmt)
        if self.encoded_size != (width, height):
            self.warnings.append(
                f"output: {width}x{height} is odd and {self.pix_fmt} needs even sizes, so the video is "
                f"encoded at {self.encoded_size[0]}x{self.encoded_size[1]} (last column/row repeated; "
                "use --pix-fmt yuv444p to keep the exact size)")
        stream.width, stream.height = self.encoded_size
        stream.pix_fmt = self.pix_fmt
        cc = stream.codec_context
        cc.time_base = info.time_base
        stream.time_base = info.time_base
        cc.framerate = info.rate
        cc.thread_count = 0
        colour = info.colour
        cc.color_range, cc.colorspace = colour.range, colour.space
        cc.color_primaries, cc.color_trc = colour.primaries, colour.trc
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        if info.display_matrix is not None:
            stream.set_display_matrix(info.display_matrix)
        stream.metadata.update({k: v for k, v in info.metadata.items()
                                if k.lower() not in ("encoder", "duration", "rotate")})
        options = encoder_options(encoder, settings)
        cc.options = dict(options)
        try:
            cc.open()
        except (av.error.FFmpegError, ValueError) as exc:
            if is_hardware(encoder) and len(candidates(settings.codec)) > 1 and not self._software_only:
                raise _HardwareEncoderFailed(f"the {encoder} encoder cannot encode {width}x{height} "
                                             f"{self.pix_fmt} here ({getattr(exc, 'strerror', None) or exc})") from None
            raise UsageError(f"the {encoder} encoder rejected the settings (pix_fmt={self.pix_fmt}, "
                             f"{', '.join(f'{k}={v}' for k, v in options.items()) or 'defaults'}, "
                             f"{width}x{height}): {getattr(exc, 'strerror', None) or exc}") from None
        unused = sorted(cc.options)  # what avcodec_open2 did not consume
        if unused:
            raise UsageError(f"the {encoder} encoder has no option {', '.join(unused)}")
        self.options = options
        self.stream = stream

    def _add_copy_streams(self) -> None:
        assert self.container is not None
        for src in self.copy_streams:
            try:
                out = self.container.add_stream_from_template(src)
            except (ValueError, av.error.FFmpegError) as exc:
                codec = src.codec_context.name if src.codec_context else getattr(src, "name", None) or "unknown"
                what = f"{src.type} stream #{src.index} ({codec})"
                if not self.drop_incompatible:
                    raise UsageError(f"the {self.container.format.name} format of {self.shown} cannot hold "
                                     f"{what}; use an .mkv output, or --drop-incompatible to leave it out") from None
                self.warnings.append(f"output: {what} left out: the {self.container.format.name} "
                                     f"format cannot hold it (--drop-incompatible)")
                continue
            out.metadata.update({k: v for k, v in src.metadata.items() if k.lower() != "duration"})
            try:
                out.disposition = src.disposition
            except (AttributeError, TypeError, ValueError):
                pass
            self._out_for[src.index] = out
            self.stats.packets_copied[src.index] = 0

    def _copy_container_tags(self) -> None:
        assert self.container is not None
        self.container.metadata.update({k: v for k, v in self.metadata.items()
                                        if k.lower() not in ("encoder", "duration")})
        if self.chapters:
            try:
                self.container.set_chapters(self.chapters)
            except (ValueError, TypeError, av.error.FFmpegError) as exc:
                self.warnings.append(f"output: chapters could not be written ({exc})")

    # -- writing -----------------------------------------------------------------------
    def write_frame(self, item: FrameItem) -> None:
        """Encode one derained frame (side by side with the input in ``--compare`` mode)."""
        assert self.stream is not None and self.container is not None and item.out is not None
        picture = item.out
        if self.compare:
            assert item.rgb is not None
            picture = np.concatenate([item.rgb, item.out], axis=1)
        picture = pad_edge(picture, *self.encoded_size)
        frame = from_rgb(picture, self.pix_fmt, self.info.colour)
        frame.pts = item.pts
        frame.time_base = item.time_base
        frame.duration = item.duration
        try:
            packets = self.stream.encode(frame)
            self._mux_video(packets)
        except av.error.FFmpegError as exc:
            raise PipelineError(f"encoding frame {item.index} failed: {exc.strerror or exc}") from None
        self.stats.frames += 1

    def _mux_video(self, packets: list[av.Packet]) -> None:
        assert self.container is not None
        for packet in packets:
            self.stats.video_packets += 1
            self.stats.video_bytes += packet.size
            self._mux(packet)

    def write_packet(self, packet: av.Packet) -> None:
        """Copy one packet of a copied stream (in its input time base)."""
        out = self._out_for.get(packet.stream_index)
        if out is None:
            return
        index = packet.stream_index
        if packet.dts is None and packet.pts is None:
            if index in self._last_dts and packet.time_base:
                packet.dts = self._last_dts[index] + 1
            else:
                self.stats.fixed_timestamps += 1
                return
        if packet.dts is not None:
            last = self._last_dts.get(index)
            if last is not None and packet.dts <= last:
                # Muxers refuse non-increasing DTS: nudge it like ffmpeg does.
                self.stats.fixed_timestamps += 1
                packet.dts = last + 1
                if packet.pts is not None and packet.pts < packet.dts:
                    packet.pts = packet.dts
            self._last_dts[index] = packet.dts
        packet.stream = out
        self._mux(packet)
        self.stats.packets_copied[index] += 1

    def _mux(self, packet: av.Packet) -> None:
        assert self.container is not None
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise PipelineError(f"writing {self.shown} failed: {exc.strerror or exc}") from None
        except OSError as exc:
            raise PipelineError(f"writing {self.shown} failed: {exc.strerror or exc}") from None

    # -- finishing ---------------------------------------------------------------------
    def close(self) -> None:
        """Flush the encoder and write the trailer: the file is complete and playable."""
        if self._closed or self.container is None:
            return
        try:
            if self.stream is not None:
                self._mux_video(self.stream.encode(None))
            self.container.close()
        except av.error.FFmpegError as exc:
            raise PipelineError(f"finishing {self.shown} failed: {exc.strerror or exc}") from None
        except OSError as exc:
            raise PipelineError(f"finishing {self.shown} failed: {exc.strerror or exc}") from None
        finally:
            self._closed = True
        if self.stats.fixed_timestamps:
            self.warnings.append(f"output: {self.stats.fixed_timestamps} copied packets had missing or "
                                 "non-increasing timestamps that were repaired")

    def abort(self) -> None:
        """Release everything; the file's contents no longer matter."""
        if self._closed or self.container is None:
            self._closed = True
            return
        self._closed = True
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass

    @property
    def describe(self) -> str:
        w, h = self.encoded_size
        return f"{self.encoder} {self.pix_fmt} {w}x{h}"
