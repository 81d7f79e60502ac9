"""The runner: decode, inference and encode stages in three threads joined by bounded queues.

::

    source.items() --[decode thread]--> FrameQueue --[inference thread]--> FrameQueue --[encode thread]--> sink
                     frames + packets   (frames)     engine.stream()       (frames)     write_frame/packet

Decoding (FFmpeg, GIL released), inference (PyTorch, GIL released) and encoding (FFmpeg)
overlap; each queue holds at most ``queue_frames`` frames (default two batches), so memory
is flat for any video length (:attr:`Runner.in_flight` counts frames between decode and
encode). Copied packets travel in demux order beside the frames. The inference stage forms
batches of ``batch`` frames; a partial batch is sent when the input ends, when
``batch_timeout`` passes without a new frame (live sources), or when too many packets wait
behind it.

Stopping: a :class:`~pipeline.signals.CancelToken` or an error in any stage stops all
three within a poll interval (a batch already inside the network finishes first).
:meth:`Runner.wait` then raises :class:`~pipeline.errors.Cancelled` or the stage's error.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from .errors import Cancelled, DerainError, PipelineError
from .frames import END, FrameItem
from .queues import TIMEOUT, FrameQueue, InFlight, Stopped
from .signals import CancelToken

log = logging.getLogger(__name__)


class InferenceEngine(Protocol):
    """What the runner needs from :class:`pipeline.engine.Engine` (or a backend)."""

    def stream(self, items: Iterable[tuple[np.ndarray, Any]]) -> Iterator[tuple[np.ndarray, Any]]: ...


class FrameSink(Protocol):
    def write_frame(self, item: FrameItem) -> None: ...
    def write_packet(self, packet: Any) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunnerConfig:
    batch: int = 4
    queue_frames: int | None = None      # per queue; default 2 x batch
    batch_timeout: float | None = None   # seconds; None waits for a full batch (files)
    max_waiting_packets: int = 256       # flush a partial batch when this many packets wait
    keep_input: bool = False             # keep FrameItem.rgb after inference (--compare)
    join_grace_s: float = 5.0            # how long a stop waits for a batch inside the network

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("--batch must be at least 1")
        if self.queue_frames is not None and self.queue_frames < 1:
            raise ValueError("--queue-frames must be at least 1")

    @property
    def capacity(self) -> int:
        return self.queue_frames or 2 * self.batch


@dataclass
class StageTimes:
    busy_s: float = 0.0
    wait_in_s: float = 0.0
    wait_out_s: float = 0.0
    items: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {"busy_s": round(self.busy_s, 4), "wait_in_s": round(self.wait_in_s, 4),
                "wait_out_s": round(self.wait_out_s, 4), "items": self.items}


class Runner:
    """Runs one source through one engine into one sink. ``start()`` then ``wait()``."""

    def __init__(self, items: Iterable[Any], engine: InferenceEngine, sink: FrameSink,
                 config: RunnerConfig | None = None, cancel: CancelToken | None = None,
                 close_sink: bool = True) -> None:
        self.config = config or RunnerConfig()
        self.cancel = cancel if cancel is not None else CancelToken()
        self._items = items
        self.engine = engine
        self.sink = sink
        self.close_sink = close_sink
        self.errors: list[tuple[str, BaseException]] = []
        self._stopping = threading.Event()
        cap = self.config.capacity
        self.decoded = FrameQueue("decoded", cap, self._should_stop)
        self.derained = FrameQueue("derained", cap, self._should_stop)
        self.in_flight = InFlight()
        self.times = {name: StageTimes() for name in ("decode", "infer", "encode")}
        self.frames_in = 0
        self.frames_out = 0
        self.packets_out = 0
        self.batches = 0
        self.sink_closed = False
        self.started_at = 0.0
        self.finished_at = 0.0
        self._threads: list[threading.Thread] = []
        # Inference-thread state: batches handed to the engine and received back, the tag
        # (item list) of the newest batch handed over, packets left after the last frame.
        self._yielded = 0
        self._returned = 0
        self._in_engine: list[Any] | None = None
        self._tail: list[Any] = []

    # -- control -----------------------------------------------------------------------
    def _should_stop(self) -> bool:
        return self._stopping.is_set() or self.cancel.is_set()

    def _fail(self, stage: str, exc: BaseException) -> None:
        self.errors.append((stage, exc))
        self._stopping.set()

    def start(self) -> None:
        self.started_at = time.perf_counter()
        for name, target in (("decode", self._decode), ("infer", self._infer), ("encode", self._encode)):
            thread = threading.Thread(target=self._guard, args=(name, target), name=f"derain-{name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _guard(self, name: str, target: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            target()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self._fail(name, exc)
        finally:
            t = self.times[name]
            total = time.perf_counter() - started
            t.busy_s = max(0.0, total - t.wait_in_s - t.wait_out_s)

    def wait(self, poll: float = 0.1, on_tick: Callable[["Runner"], None] | None = None) -> None:
        """Wait for the stages; raise the first stage error, or :class:`Cancelled`."""
        deadline: float | None = None
        while True:
            alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                break
            if on_tick is not None:
                on_tick(self)
            if self._should_stop():
                # Decode and encode stop within a poll; a batch inside the network may take
                # longer: give it a grace period, then leave it behind (daemon thread).
                if not any(t.is_alive() for t in self._threads if t.name != "derain-infer"):
                    if deadline is None:
                        deadline = time.perf_counter() + self.config.join_grace_s
                    elif time.perf_counter() > deadline:
                        log.debug("inference thread still busy after stop; not waiting for it")
                        break
            alive[0].join(poll)
        self.finished_at = time.perf_counter()
        if on_tick is not None:
            on_tick(self)
        if self.cancel.is_set():  # errors after a cancel are its consequences
            raise Cancelled(self.cancel.reason or "cancelled", self.cancel.signum)
        if self.errors:
            stage, exc = self.errors[0]
            if isinstance(exc, DerainError):
                raise exc
            if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
                raise PipelineError(f"out of memory in the {stage} stage (try a smaller --batch or --tile)") from exc
            raise PipelineError(f"{stage} stage failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from exc

    def alive(self, stage: str) -> bool:
        """Whether a stage's thread (``decode``, ``infer``, ``encode``) is still running."""
        return any(t.is_alive() for t in self._threads if t.name == f"derain-{stage}")

    def run(self, **kwargs: Any) -> None:
        self.start()
        self.wait(**kwargs)

    @property
    def wall_s(self) -> float:
        end = self.finished_at or time.perf_counter()
        return max(0.0, end - self.started_at) if self.started_at else 0.0

    # -- stages ------------------------------------------------------------------------
    def _decode(self) -> None:
        t = self.times["decode"]
        iterator = iter(self._items)
        try:
            while not self._should_stop():
                item = next(iterator, END)
                if item is END:
                    break
                is_frame = isinstance(item, FrameItem)
                if is_frame:
                    self.in_flight.add()
                    self.frames_in += 1
                t.items += 1
                before = time.perf_counter()
                self.decoded.put(item, is_frame)
                t.wait_out_s += time.perf_counter() - before
        finally:
            self.decoded.put(END, force=True)
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _batches(self) -> Iterator[tuple[np.ndarray, list[Any]]]:
        """Group decoded frames into batches; the tag of a batch is the list of items
        (frames and the packets between them) in their original order."""
        cfg, t = self.config, self.times["infer"]
        pending: list[Any] = []
        frames: list[FrameItem] = []
        waiting_packets = 0
        while True:
            timeout = cfg.batch_timeout if frames else None
            before = time.perf_counter()
            item = self.decoded.get(timeout)
            t.wait_in_s += time.perf_counter() - before
            if item is END or item is TIMEOUT:
                if frames:
                    yield from self._emit_batch(frames, pending)
                    pending, frames, waiting_packets = [], [], 0
                if item is END:
                    self._tail = pending
                    return
                continue
            if isinstance(item, FrameItem):
                pending.append(item)
                frames.append(item)
                if len(frames) >= cfg.batch:
                    yield from self._emit_batch(frames, pending)
                    pending, frames, waiting_packets = [], [], 0
            elif not frames:
                # Keep every packet behind the frames demuxed before it: attach it to the
                # newest batch still inside the engine, or pass it on if none is.
                if self._in_engine is not None and self._yielded > self._returned:
                    self._in_engine.append(item)
                else:
                    self._forward(item, is_frame=False)
            else:
                pending.append(item)
                waiting_packets += 1
                if waiting_packets >= cfg.max_waiting_packets:
                    yield from self._emit_batch(frames, pending)
                    pending, frames, waiting_packets = [], [], 0

    def _emit_batch(self, frames: list[FrameItem], tag: list[Any]) -> Iterator[tuple[np.ndarray, list[Any]]]:
        self._in_engine = tag
        self._yielded += 1
        yield np.stack([f.rgb for f in frames]), tag

    def _forward(self, item: Any, is_frame: bool) -> None:
        before = time.perf_counter()
        self.derained.put(item, is_frame)
        self.times["infer"].wait_out_s += time.perf_counter() - before

    def _infer(self) -> None:
        t = self.times["infer"]
        try:
            for out, tag in self.engine.stream(self._batches()):
                self._returned += 1
                if self._should_stop():
                    raise Stopped
                self.batches += 1
                k = 0
                for item in tag:
                    if isinstance(item, FrameItem):
                        item.out = out[k]
                        k += 1
                        if not self.config.keep_input:
                            item.rgb = None
                        t.items += 1
                        self._forward(item, is_frame=True)
                    else:
                        self._forward(item, is_frame=False)
                if k != len(out):
                    raise PipelineError(f"the engine returned {len(out)} frames for a batch of {k}")
            for item in self._tail:
                self._forward(item, is_frame=False)
        finally:
            self.derained.put(END, force=True)

    def _encode(self) -> None:
        t = self.times["encode"]
        while True:
            before = time.perf_counter()
            item = self.derained.get()
            t.wait_in_s += time.perf_counter() - before
            if item is END:
                break
            if self._should_stop():
                return
            if isinstance(item, FrameItem):
                self.sink.write_frame(item)
                item.out = item.rgb = None
                self.in_flight.done()
                self.frames_out += 1
            else:
                self.sink.write_packet(item)
                self.packets_out += 1
            t.items += 1
        if self._should_stop():
            return
        if self.close_sink:
            self.sink.close()
            self.sink_closed = True

    # -- report ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        wall = self.wall_s
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "packets_copied": self.packets_out,
            "batches": self.batches,
            "wall_s": round(wall, 4),
            "fps": round(self.frames_out / wall, 3) if wall > 0 else 0.0,
            "stages": {name: times.as_dict() for name, times in self.times.items()},
            "queues": {q.name: q.stats() for q in (self.decoded, self.derained)},
            "max_frames_in_flight": self.in_flight.peak,
            "dropped": 0,
        }
