"""The hand-over between a live reader and the pipeline: keep every frame, or only fresh ones.

:class:`DropQueue` sits between the thread that reads the network and the pipeline's decode
stage. Without live mode it is a bounded FIFO whose ``put`` blocks (every frame is kept; a
slow pipeline slows the reader down). In live mode ``put`` never blocks, so the reader always
keeps up with the camera, and frames are dropped instead of delayed:

- *late*: when the pipeline takes a frame whose age (now minus its arrival) is more than the
  latency budget, it is dropped as long as a newer frame is waiting. The budget is
  ``max_latency`` minus the time the rest of the pipeline needs (measured, see
  :meth:`DropQueue.set_processing_time`), so end-to-end latency stays near ``max_latency``;
- *overflow*: a full queue drops its oldest frame (a memory bound only; with a sensible
  capacity the latency rule acts first).

When the pipeline is *persistently* slower than the camera (its service time per frame,
measured while frames are waiting, exceeds the camera's frame interval by 10%), waiting frames
can never all be processed, and keeping them only adds delay: the queue then hands out the
newest frame and drops the older ones, so latency stays near the processing time instead of
near ``max_latency``. Short hiccups of a pipeline that is fast enough on average are absorbed
by the queue without drops (up to the latency budget).

The newest frame is never dropped for lateness: if inference alone is slower than
``max_latency``, frames still come out (one per inference) and the caller warns. Non-frame
items (copied audio packets) are never dropped for lateness; they are bounded by ``max_items``.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from ..queues import TIMEOUT, Stopped

__all__ = ["DropQueue", "CLOSED", "TIMEOUT"]


class _Closed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSED"


#: Returned by :meth:`DropQueue.get` once the queue is closed and empty.
CLOSED = _Closed()


class DropQueue:
    """Items with their arrival time (``time.monotonic()``); see the module docstring."""

    def __init__(self, capacity: int, *, live: bool, max_latency: float | None = None,
                 max_items: int = 4096, stop: Callable[[], bool] = lambda: False,
                 poll: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1 frame")
        self.capacity = capacity
        self.live = live
        self.max_latency = max_latency
        self.max_items = max(max_items, capacity + 1)
        self._stop = stop
        self._poll = poll
        self._clock = clock
        self._items: collections.deque[tuple[Any, float, bool]] = collections.deque()
        self._frames = 0
        self._closed = False
        self._cond = threading.Condition()
        self._processing = 0.0
        self._arrival_ema: float | None = None   # seconds between frames put
        self._service_ema: float | None = None   # seconds between frames taken while some wait
        self._last_put: float | None = None
        self._last_get: float | None = None
        self._samples = 0
        self.overloaded = False
        self.dropped_late = 0
        self.dropped_overflow = 0
        self.dropped_packets = 0
        self.max_frames = 0

    @property
    def dropped(self) -> int:
        """Frames dropped so far (late + overflow)."""
        return self.dropped_late + self.dropped_overflow

    @property
    def budget(self) -> float | None:
        """How old a frame may be when the pipeline takes it (None: no bound)."""
        if not self.live or self.max_latency is None:
            return None
        return max(0.0, self.max_latency - self._processing)

    def set_processing_time(self, seconds: float) -> None:
        """Time from taking a frame to writing it out (measured by the caller, smoothed)."""
        with self._cond:
            self._processing = max(0.0, seconds)

    # -- producer ----------------------------------------------------------------------
    def put(self, item: Any, arrival: float, is_frame: bool) -> None:
        """Add an item. Live: never blocks (drops the oldest frame when full). Otherwise blocks
        while full; raises :class:`~pipeline.queues.Stopped` if ``stop()`` becomes true or the
        queue is closed meanwhile. (``get`` never raises: a stopping reader closes the queue and
        the consumer drains what is left.)"""
        with self._cond:
            if self._closed:
                return
            if self.live:
                if is_frame and self._frames >= self.capacity:
                    self._drop_oldest_frame()
                if len(self._items) >= self.max_items:
                    self._drop_oldest_packet_or_frame()
            else:
                while (is_frame and self._frames >= self.capacity) or len(self._items) >= self.max_items:
                    if self._stop() or self._closed:
                        raise Stopped
                    self._cond.wait(self._poll)
            self._items.append((item, arrival, is_frame))
            if is_frame:
                if self._last_put is not None:
                    self._arrival_ema = _ema(self._arrival_ema, arrival - self._last_put)
                self._last_put = arrival
                self._frames += 1
                self.max_frames = max(self.max_frames, self._frames)
            self._cond.notify_all()

    def _drop_oldest_frame(self) -> None:
        for i, (_, _, is_frame) in enumerate(self._items):
            if is_frame:
                del self._items[i]
                self._frames -= 1
                self.dropped_overflow += 1
                return

    def _drop_oldest_packet_or_frame(self) -> None:
        _, _, is_frame = self._items.popleft()
        if is_frame:
            self._frames -= 1
            self.dropped_overflow += 1
        else:
            self.dropped_packets += 1

    def close(self) -> None:
        """No more items will come; ``get`` returns what is left, then :data:`CLOSED`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Forget every waiting item; returns how many frames were forgotten."""
        with self._cond:
            frames = self._frames
            self._items.clear()
            self._frames = 0
            self._cond.notify_all()
            return frames

    # -- consumer ----------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Any:
        """``(item, arrival, is_frame)``, or :data:`TIMEOUT`, or :data:`CLOSED`."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            self._measure_service()
            while True:
                if self._items:
                    self._drop_late()
                    item = self._items.popleft()
                    if item[2]:
                        self._frames -= 1
                        self._last_get = self._clock()
                    self._cond.notify_all()
                    return item
                if self._closed:
                    return CLOSED
                wait = self._poll
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return TIMEOUT
                    wait = min(wait, left)
                self._cond.wait(wait)

    def _measure_service(self) -> None:
        """Is the consumer the bottleneck? Sampled only when frames are already waiting."""
        if not self.live:
            return
        if self._frames == 0:
            self.overloaded = False  # the consumer waits for the camera: it keeps up
            return
        if self._last_get is None:
            return
        self._service_ema = _ema(self._service_ema, self._clock() - self._last_get)
        self._samples += 1
        if self._samples >= 4 and self._arrival_ema and self._service_ema:
            self.overloaded = self._service_ema > 1.1 * self._arrival_ema

    def _drop_late(self) -> None:
        budget = self.budget
        if budget is None:
            return
        if self.overloaded:
            # Hand out the newest frame: the older ones could only be processed later still.
            while self._items and self._frames > 1:
                if not self._items[0][2]:
                    return
                self._items.popleft()
                self._frames -= 1
                self.dropped_late += 1
            return
        now = self._clock()
        # Drop late frames at the head while a newer frame waits behind them; packets in
        # front of a frame go out first (they are never late).
        while self._items and self._frames > 1:
            item, arrival, is_frame = self._items[0]
            if not is_frame:
                return
            if now - arrival <= budget:
                return
            self._items.popleft()
            self._frames -= 1
            self.dropped_late += 1

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def frames(self) -> int:
        with self._cond:
            return self._frames


def _ema(previous: float | None, sample: float, alpha: float = 0.1) -> float:
    return sample if previous is None else (1 - alpha) * previous + alpha * sample
