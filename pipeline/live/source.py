"""A source for cameras: watched reads, reconnection with backoff, monotonic timestamps.

:class:`LiveSource` opens its input in *sessions*. Each session is one
:class:`~pipeline.source.VideoSource` (the file pipeline's demuxer and decoder) read by its own
thread, which hands every decoded frame to a :class:`~pipeline.live.latest.DropQueue` the
moment it arrives; the pipeline takes frames from that queue through :meth:`LiveSource.items`.
A supervisor thread watches the session:

- **stall watchdog**: FFmpeg's socket timeouts and PyAV's read timeout end a read that waits
  longer than ``timeout``; independently, the supervisor gives up on a session that has not
  produced a *video frame* for ``1.5 * timeout + 0.5`` seconds (a camera that keeps the
  connection alive, or sends only audio or undecodable data, is caught too). An abandoned
  session's thread is left to finish its blocked read; its frames are ignored;
- **reconnection**: a stalled, dropped or ended stream is reopened after an exponential
  backoff (``reconnect_delay`` doubling up to ``reconnect_delay_max``), reset once frames flow
  again; ``max_reconnects`` consecutive attempts without a frame give up (None: never give
  up). Every loss is logged with its cause, every recovery with its downtime;
- **monotonic timestamps**: output timestamps start at 0 and use the first session's time
  base; each new session is rebased so that it continues the output clock after a gap equal
  to the real time the input was away. Jumps inside a live session (a camera whose clock
  resets) are rebased the same way, so the output clock never goes backwards.

A first connection that fails is an error at once (:class:`~pipeline.errors.InputError`, the
input is unusable now), unless ``wait`` is set: then it is retried like a lost connection,
except for errors retrying cannot fix (bad credentials, unknown path or protocol:
:func:`~pipeline.live.inputs.is_permanent`). Inputs that cannot be reopened (standard input, files) or that have a known
duration (a file served over HTTP) end at their end of file.

Files and standard input have no watchdog and end at their end of file. In live mode
(``--live``) they are read at their real frame rate, like a camera (``ffmpeg -re``).

Frame limits (``frames``/``duration``) count what is handed to the pipeline, so the output
holds exactly that much. Audio and other streams of the first session are copied (their
packets rebased like the video); streams that appear only later are left out.
"""
from __future__ import annotations

import io
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

import av
import cv2

from ..errors import Cancelled, DerainError, ExitCode, InputError, PipelineError
from ..frames import FrameItem
from ..media import VideoInfo
from ..queues import TIMEOUT, Stopped
from ..signals import CancelToken
from ..source import VideoSource
from ..util import redact_url
from .backoff import Backoff
from .inputs import InputSpec, classify_input, is_permanent, open_options
from .latest import CLOSED, DropQueue
from .pacing import Pacer
from .stats import LiveStats

log = logging.getLogger(__name__)

__all__ = ["LiveInputConfig", "LiveSource", "SourceLost"]

class SourceLost(PipelineError):
    """A live input could not be (re)connected within ``max_reconnects`` attempts."""

    exit_code = ExitCode.SOURCE_LOST


@dataclass
class LiveInputConfig:
    """How to read one live input (see ``derain-video --help``)."""

    live: bool | None = None             # None: automatic (network streams are live)
    max_latency: float = 2.0             # seconds, live mode only
    transport: str = "tcp"               # RTSP transport
    timeout: float = 10.0                # open/read timeout, seconds
    max_reconnects: int | None = None    # consecutive attempts; None = unlimited, 0 = never
    wait: bool = False                   # retry a failing first connection like a lost one
    reconnect_delay: float = 0.5
    reconnect_delay_max: float = 10.0
    frames: int | None = None            # stop after handing this many frames on
    duration: float | None = None        # stop at this output time (seconds)
    threads: int = 0                     # decoder slice threads (0: automatic; never frame threads)
    queue_frames: int | None = None      # hand-over queue; default from fps and max_latency
    options: dict[str, str] = field(default_factory=dict)  # extra FFmpeg input options

    def __post_init__(self) -> None:
        if self.max_latency <= 0:
            raise ValueError("--max-latency must be positive")
        if self.timeout <= 0:
            raise ValueError("--timeout must be positive")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("--max-reconnects must not be negative")
        if self.reconnect_delay <= 0 or self.reconnect_delay_max <= 0:
            raise ValueError("reconnect delays must be positive")

    @property
    def watchdog_s(self) -> float:
        """How long a session may go without a video frame before it is abandoned."""
        return 1.5 * self.timeout + 0.5


class _Session:
    """One connection to the input, read by its own thread."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started = time.monotonic()
        self.frame_at = self.started       # last video frame (or the start)
        self.blocked = False               # waiting for room in the queue (not a stall)
        self.abandoned = False
        self.opened = False
        self.eof = False
        self.error: BaseException | None = None
        self.frames = 0
        self.anchor: tuple[int, Fraction, int] | None = None  # (input pts, input tb, output pts)
        self.prev: tuple[int, Fraction, float] | None = None  # last (pts, tb, arrival)
        self.stream_map: dict[int, av.stream.Stream] = {}
        self.done = threading.Event()
        self.ended = 0.0
        self.thread: threading.Thread | None = None

    def cause(self, timeout: float | None = None) -> str:
        if self.error is not None:
            text = (str(self.error) or type(self.error).__name__).splitlines()[0]
            waited = (self.ended or time.monotonic()) - self.started
            if not self.opened and timeout and waited >= 0.9 * timeout:
                # FFmpeg reports a read that timed out while opening as bad data or an
                # interrupted call: say what really happened.
                text = f"no answer within {timeout:g}s (--timeout) while opening the stream"
            return redact_url(text)
        if self.eof:
            return "the stream ended (the server closed it)" if self.frames else "the stream ended before any frame"
        return "the session ended"


class LiveSource:
    """A reconnecting source for one input. ``open()``, then ``items()`` (from one thread),
    ``stop()`` from any thread, ``close()`` at the end."""

    def __init__(self, text: str, config: LiveInputConfig | None = None, *,
                 stats: LiveStats | None = None, name: str | None = None) -> None:
        self.spec: InputSpec = classify_input(text)
        self.config = config or LiveInputConfig()
        self.name = name or self.spec.shown
        self.stats = stats or LiveStats(self.name)
        self.live: bool = bool(self.config.live)
        self.info: VideoInfo | None = None
        self.copy_streams: list[av.stream.Stream] = []
        self.failure: DerainError | None = None
        self.warnings: list[str] = []
        self.queue: DropQueue | None = None
        self.ended_by = ""
        self.decode_errors = 0
        self.resized_frames = 0
        self.timing: dict[int, tuple[float, float]] = {}  # output pts -> (arrival, taken)
        self._finite = False
        self._size: tuple[int, int] | None = None
        self._out_tb: Fraction | None = None
        self._last_out: int | None = None
        self._last_dur = 1
        self._last_arrival = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._opened = threading.Event()
        self._holder: Any = None      # keeps copies of the copied streams' parameters alive
        self._templates: list[av.stream.Stream] = []
        self._session: _Session | None = None
        self._sessions = 0
        self._supervisor = threading.Thread(target=self._supervise, name=f"live-{self.name}", daemon=True)
        self._warned_slow = False
        self._processing: float | None = None
        #: When a list: (output pts, arrival, written) per written frame, wall-clock seconds
        #: (for latency measurements, see benchmarks/live_latency.py).
        self.trace: list[tuple[int, float, float]] | None = None

    # -- control -----------------------------------------------------------------------
    def open(self, cancel: CancelToken | None = None) -> VideoInfo:
        """Connect (retrying as configured) and return the first session's video info."""
        self._supervisor.start()
        while not self._opened.wait(0.05):
            if cancel is not None and cancel.is_set():
                self.stop(cancel.reason or "cancelled")
                raise Cancelled(cancel.reason or "cancelled", cancel.signum)
        if self.info is None:
            raise self.failure or InputError(f"{self.spec.shown}: no video could be read")
        return self.info

    def stop(self, reason: str = "stopped") -> None:
        """End the input: frames already received still go through, then ``items()`` ends."""
        if not self._stopping.is_set():
            self.ended_by = self.ended_by or reason
            self._stopping.set()
        session = self._session
        if session is not None:
            session.abandoned = True
        if self.queue is not None:
            self.queue.close()
        self._opened.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def close(self) -> None:
        self.stop("closed")
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=2.0)
        if self._holder is not None:
            try:
                self._holder.close()
            except Exception:  # noqa: BLE001 - only parameters live there
                pass
            self._holder = None

    # -- supervisor --------------------------------------------------------------------
    def _supervise(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_delay, cfg.reconnect_delay_max)
        failures = 0
        try:
            while not self._stopping.is_set():
                session = self._start_session()
                cause = self._watch(session)
                if self._stopping.is_set():
                    break
                if session.frames:
                    failures = 0
                    backoff.reset()
                if self.info is None and (not cfg.wait or not self.spec.can_reconnect or is_permanent(cause)):
                    # The first connection failed: an error at once, unless asked to wait for
                    # the input (and retrying could help).
                    plain = isinstance(session.error, DerainError) and not cause.startswith("no answer")
                    self._fail(session.error if plain  # type: ignore[arg-type]
                               else InputError(f"cannot open {self.spec.shown}: {cause}"))
                    break
                if not self.spec.can_reconnect or (self._finite and session.eof):
                    if session.error is not None:
                        self.warnings.append(f"input: {cause}; stopped there")
                    self.ended_by = self.ended_by or "end of input"
                    break
                failures += 1
                self.stats.lost(cause)
                if cfg.max_reconnects is not None and failures > cfg.max_reconnects:
                    tries = ("no reconnection attempts (--max-reconnects 0)" if cfg.max_reconnects == 0
                             else f"{cfg.max_reconnects} reconnection attempt"
                                  f"{'s' if cfg.max_reconnects != 1 else ''}")
                    self._fail(SourceLost(f"{self.name}: {cause}; gave up after {tries}"))
                    break
                delay = backoff.next_delay()
                limit = "" if cfg.max_reconnects is None else f" of {cfg.max_reconnects}"
                log.warning("%s: %s; reconnecting in %.1fs (attempt %d%s)", self.name, cause, delay,
                            failures, limit)
                self.stats.set_state("reconnecting")
                if self._stopping.wait(delay):
                    break
        except BaseException as exc:  # noqa: BLE001 - reported through items()/open()
            self._fail(exc if isinstance(exc, DerainError)
                       else PipelineError(f"{self.name}: live input failed: {type(exc).__name__}: {exc}"))
        finally:
            self.stats.set_state("stopped" if self.failure is None else "failed")
            if self.queue is not None:
                self.queue.close()
            self._opened.set()

    def _fail(self, exc: DerainError) -> None:
        self.failure = exc
        self.ended_by = self.ended_by or "input lost"

    def _start_session(self) -> _Session:
        self._sessions += 1
        session = _Session(self._sessions)
        self._session = session
        session.thread = threading.Thread(target=self._read, args=(session,), daemon=True,
                                          name=f"live-read-{self.name}-{session.number}")
        session.thread.start()
        return session

    def _watch(self, session: _Session) -> str:
        limit = self.config.watchdog_s
        while not session.done.wait(0.05):
            if self._stopping.is_set():
                session.abandoned = True
                return "stopped"
            if not self.spec.is_network:
                continue  # files and stdin end at their end of file; a slow pipe is not a stall
            idle = time.monotonic() - session.frame_at
            if not session.blocked and idle > limit:
                session.abandoned = True
                what = "no video frame" if session.opened else "no answer from the source"
                return f"{what} for {idle:.1f}s (watchdog, --timeout {self.config.timeout:g}s)"
        return session.cause(self.config.timeout if self.spec.is_network else None)

    # -- reader (one thread per session) -----------------------------------------------
    def _read(self, session: _Session) -> None:
        cfg = self.config
        live_guess = self.live if self.info is not None else (
            cfg.live if cfg.live is not None else self.spec.is_stream_protocol)
        options = open_options(self.spec, live=live_guess, timeout=cfg.timeout if self.spec.is_network else None,
                               transport=cfg.transport, extra=cfg.options)
        source = VideoSource(self.spec.url, options=options,
                             timeout=cfg.timeout if self.spec.is_network else None, threads=cfg.threads,
                             thread_type="SLICE", stop=lambda: session.abandoned or self._stopping.is_set())
        try:
            source.open()
            if session.abandoned:
                return
            self._session_opened(session, source)
            session.opened = True
            pace = self.live and not self.spec.is_network
            clock: tuple[float, float] | None = None  # (wall, media) at the first frame
            for item in source.items():
                if session.abandoned:
                    return
                if isinstance(item, FrameItem):
                    if pace:
                        clock = self._pace(item, clock, session)
                    arrival = time.monotonic()
                    session.frame_at = arrival
                    self._on_frame(session, item, arrival)
                else:
                    self._on_packet(session, item, time.monotonic())
            session.eof = True
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - the supervisor decides what it means
            session.error = exc
        finally:
            self.decode_errors += source.stats.decode_errors
            if not self.spec.is_network:
                self.warnings.extend(source.warnings)  # damage in a file or pipe
            source.close()
            session.ended = time.monotonic()
            session.done.set()

    def _pace(self, item: FrameItem, clock: tuple[float, float] | None,
              session: _Session) -> tuple[float, float]:
        """Live mode on a file or stdin: hand frames on at their real rate, like a camera
        (``ffmpeg -re``), so that drops and latency behave as they would live."""
        media = float(item.pts * item.time_base)
        now = time.monotonic()
        if clock is None:
            return now, media
        wait = (media - clock[1]) - (now - clock[0])
        while wait > 0 and not session.abandoned and not self._stopping.is_set():
            time.sleep(min(wait, 0.1))
            wait = (media - clock[1]) - (time.monotonic() - clock[0])
        return clock

    def _session_opened(self, session: _Session, source: VideoSource) -> None:
        info = source.info
        assert info is not None
        with self._lock:
            if self.info is None:
                self._first_session(source, info)
            else:
                self._map_streams(session, source)

    def _first_session(self, source: VideoSource, info: VideoInfo) -> None:
        cfg = self.config
        self._finite = bool(info.duration) and not self.spec.is_stream_protocol
        if cfg.live is not None:
            self.live = cfg.live
        else:
            self.live = self.spec.is_stream_protocol or (self.spec.is_network and not self._finite)
        self._size = (info.width, info.height)
        self._out_tb = info.time_base
        fps = float(info.rate) if info.rate else 25.0
        frame_bytes = max(1, info.width * info.height * 3)
        memory_cap = max(2, (512 << 20) // frame_bytes)
        if cfg.queue_frames:
            capacity = cfg.queue_frames
        elif self.live:
            capacity = max(4, math.ceil(fps * cfg.max_latency) + 2)
        else:
            capacity = 8
        self.queue = DropQueue(min(capacity, memory_cap), live=self.live, max_latency=cfg.max_latency,
                               stop=lambda: self._stopping.is_set() or bool(self._session and self._session.abandoned))
        if self._stopping.is_set():
            self.queue.close()
        self._keep_templates(source)
        self.info = info
        self._opened.set()

    def _keep_templates(self, source: VideoSource) -> None:
        """Copies of the copied streams' parameters that outlive the session's container."""
        if not source.copy_streams:
            return
        self._holder = av.open(io.BytesIO(), "w", format="matroska")
        session = self._session
        for src in source.copy_streams:
            try:
                template = self._holder.add_stream_from_template(src)
            except (ValueError, av.error.FFmpegError) as exc:
                self.warnings.append(f"input: {src.type} stream #{src.index} is not copied ({exc})")
                continue
            self._templates.append(template)
            if session is not None:
                session.stream_map[src.index] = template
        self.copy_streams = list(self._templates)

    def _map_streams(self, session: _Session, source: VideoSource) -> None:
        """A later session's streams -> the first session's (same type and codec, in order)."""
        free = list(self._templates)
        for src in source.copy_streams:
            codec = src.codec_context.name if src.codec_context else None
            for template in free:
                tcodec = template.codec_context.name if template.codec_context else None
                if template.type == src.type and tcodec == codec:
                    session.stream_map[src.index] = template
                    free.remove(template)
                    break

    def _on_frame(self, session: _Session, item: FrameItem, arrival: float) -> None:
        if session.abandoned or self._stopping.is_set():
            return
        first = session.frames == 0
        session.frames += 1
        with self._lock:
            self._rebase(session, item, arrival)
            if self._size is not None and item.rgb is not None and \
                    (item.rgb.shape[1], item.rgb.shape[0]) != self._size:
                item.rgb = cv2.resize(item.rgb, self._size, interpolation=cv2.INTER_AREA)
                self.resized_frames += 1
        if first:
            downtime = self.stats.connected()
            if downtime is not None:
                log.info("%s: reconnected after %.1fs", self.name, downtime)
        self.stats.frame_in()
        assert self.queue is not None
        session.blocked = True
        try:
            self.queue.put(item, arrival, True)
        finally:
            session.blocked = False
            session.frame_at = time.monotonic()

    def _rebase(self, session: _Session, item: FrameItem, arrival: float) -> None:
        """Input timestamps -> the output clock (see the module docstring)."""
        out_tb = self._out_tb
        assert out_tb is not None
        tb = item.time_base
        pts = item.pts
        if session.anchor is None or self._jumped(session, pts, tb, arrival):
            if self._last_out is None:
                start = 0
            else:
                gap = max(0.0, arrival - self._last_arrival)
                start = self._last_out + max(self._last_dur, int(gap / out_tb))
            if session.anchor is not None:
                log.info("%s: the input's clock jumped; output timestamps continue smoothly", self.name)
            session.anchor = (pts, tb, start)
        in0, tb0, start = session.anchor
        out = start + _rescale(pts * tb - in0 * tb0, out_tb)
        if self._last_out is not None and out <= self._last_out:
            out = self._last_out + 1
            self.stats.timestamps_fixed += 1
        duration = max(1, _rescale(item.duration * tb, out_tb))
        session.prev = (pts, tb, arrival)
        item.pts, item.time_base, item.duration = out, out_tb, duration
        self._last_out, self._last_dur, self._last_arrival = out, duration, arrival

    def _jumped(self, session: _Session, pts: int, tb: Fraction, arrival: float) -> bool:
        """A live input's clock went back, or forward far more than real time passed."""
        if not self.live or session.prev is None or not self.spec.is_network:
            return False
        ppts, ptb, parrival = session.prev
        dp = float(pts * tb - ppts * ptb)
        dw = arrival - parrival
        return dp < -1.0 or dp > dw + 10.0

    def _on_packet(self, session: _Session, packet: av.Packet, arrival: float) -> None:
        if session.abandoned or self._stopping.is_set():
            return
        template = session.stream_map.get(packet.stream_index)
        tb = packet.time_base
        if template is None or session.anchor is None or not tb:
            return  # a stream not in the output, or audio before the first video frame
        in0, tb0, start = session.anchor
        assert self._out_tb is not None
        offset = start * self._out_tb - in0 * tb0  # seconds added to this session's timestamps
        shift = _rescale(offset, tb)
        for name in ("pts", "dts"):
            value = getattr(packet, name)
            if value is not None:
                setattr(packet, name, value + shift)
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None or ts < 0:
            return
        packet.stream = template
        assert self.queue is not None
        session.blocked = True
        try:
            self.queue.put(packet, arrival, False)
        finally:
            session.blocked = False

    # -- consumer ----------------------------------------------------------------------
    def items(self, pacer: Pacer | None = None) -> Iterator[Any]:
        """Frames (output timestamps) and copied packets, until the input ends, is stopped or
        is lost. Call from one thread; a loss is reported by :attr:`failure` after the end.
        With a ``pacer`` (live mode), each frame is taken when the engine is ready for it."""
        if self.queue is None:
            raise RuntimeError("LiveSource.open() must succeed before items()")
        cfg = self.config
        handed = 0
        end_time = Fraction(cfg.duration).limit_denominator(10**6) if cfg.duration is not None else None
        stopping = self._stopping.is_set
        while True:
            if pacer is not None:
                pacer.wait_turn(stopping)
            got = self.queue.get(timeout=0.25)
            if got is TIMEOUT:
                continue
            if got is CLOSED:
                break
            item, arrival, is_frame = got
            self._sync_drops()
            if not is_frame:
                yield item
                continue
            if end_time is not None and item.pts * item.time_base >= end_time:
                self.stop("--duration reached")
                break
            item.index = handed
            handed += 1
            self.timing[item.pts] = (arrival, time.monotonic())
            if pacer is not None:
                pacer.handed_frame()
            yield item
            if cfg.frames is not None and handed >= cfg.frames:
                self.stop("--frames reached")
                break
        self._sync_drops()

    def _sync_drops(self) -> None:
        q = self.queue
        if q is not None:
            self.stats.dropped_late = q.dropped_late
            self.stats.dropped_overflow = q.dropped_overflow

    def frame_written(self, pts: int, now: float | None = None) -> float | None:
        """Called by the output when the frame with output timestamp ``pts`` has been written:
        records its latency and feeds the latency budget. Returns the latency (seconds)."""
        times = self.timing.pop(pts, None)
        if times is None:
            self.stats.frame_out(None)
            return None
        now = time.monotonic() if now is None else now
        arrival, taken = times
        latency = now - arrival
        self.stats.frame_out(latency)
        if self.trace is not None:
            wall = time.time() - (time.monotonic() - now)
            self.trace.append((pts, wall - latency, wall))
        q = self.queue
        if q is not None and self.live:
            # Smoothed time the pipeline needs after taking a frame: the budget for waiting.
            prev = self._processing
            processing = now - taken if prev is None else 0.8 * prev + 0.2 * (now - taken)
            self._processing = processing
            q.set_processing_time(processing)
            if processing > self.config.max_latency and not self._warned_slow and self.stats.frames_out > 5:
                self._warned_slow = True
                log.warning("%s: processing one frame takes %.2fs, more than --max-latency %.2fs; "
                            "latency cannot stay under the bound (use a faster model or device, or a "
                            "larger --max-latency)", self.name, processing, self.config.max_latency)
        return latency


def _rescale(seconds: Fraction, tb: Fraction) -> int:
    """Seconds -> ticks of ``tb`` (rounded to nearest)."""
    return round(Fraction(seconds) / tb)
