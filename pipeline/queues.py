"""Bounded hand-over between stage threads, measured in frames.

:class:`FrameQueue` is a FIFO whose capacity counts *frames*: copied packets (small) ride
along without taking a frame slot, so audio never stalls video, yet an item cap still bounds
memory when a long run of packets has no frame between them. Every blocking call polls a
``stop`` callable, so cancellation and errors in another stage never leave a thread hanging.
Time spent blocked is recorded for ``--stats-json``.

:class:`InFlight` counts frames alive between decoding and encoding; its maximum proves that
memory stays flat however long the video is.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable


class Stopped(Exception):
    """Raised in a stage thread when the run is stopping (cancel or another stage failed)."""


class _Timeout:
    __slots__ = ()


#: Returned by :meth:`FrameQueue.get` when its timeout passes without an item.
TIMEOUT = _Timeout()


class FrameQueue:
    """FIFO bounded by ``capacity`` frames and ``max_items`` items in total."""

    def __init__(self, name: str, capacity: int, stop: Callable[[], bool],
                 max_items: int = 2048, poll: float = 0.05) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1 frame")
        self.name = name
        self.capacity = capacity
        self.max_items = max(max_items, capacity + 1)
        self._stop = stop
        self._poll = poll
        self._items: collections.deque[tuple[Any, bool]] = collections.deque()
        self._frames = 0
        self._cond = threading.Condition()
        self.put_wait_s = 0.0
        self.get_wait_s = 0.0
        self.max_frames = 0
        self.max_len = 0
        self.frames_through = 0

    def put(self, item: Any, is_frame: bool = False, force: bool = False) -> None:
        """Append ``item``; blocks while the queue is full. ``force`` never blocks (used for
        the end marker). Raises :class:`Stopped` if the run stops while waiting."""
        with self._cond:
            if not force and self._full(is_frame):
                started = time.perf_counter()
                try:
                    while self._full(is_frame):
                        if self._stop():
                            raise Stopped
                        self._cond.wait(self._poll)
                finally:
                    self.put_wait_s += time.perf_counter() - started
            self._items.append((item, is_frame))
            if is_frame:
                self._frames += 1
                self.frames_through += 1
                self.max_frames = max(self.max_frames, self._frames)
            self.max_len = max(self.max_len, len(self._items))
            self._cond.notify_all()

    def _full(self, is_frame: bool) -> bool:
        return len(self._items) >= self.max_items or (is_frame and self._frames >= self.capacity)

    def get(self, timeout: float | None = None) -> Any:
        """Next item; :data:`TIMEOUT` when ``timeout`` seconds pass first. Raises
        :class:`Stopped` if the run stops while waiting."""
        with self._cond:
            if not self._items:
                started = time.perf_counter()
                deadline = None if timeout is None else started + timeout
                try:
                    while not self._items:
                        if self._stop():
                            raise Stopped
                        wait = self._poll
                        if deadline is not None:
                            left = deadline - time.perf_counter()
                            if left <= 0:
                                return TIMEOUT
                            wait = min(wait, left)
                        self._cond.wait(wait)
                finally:
                    self.get_wait_s += time.perf_counter() - started
            item, is_frame = self._items.popleft()
            if is_frame:
                self._frames -= 1
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def frames(self) -> int:
        with self._cond:
            return self._frames

    def stats(self) -> dict[str, Any]:
        return {"capacity_frames": self.capacity, "max_frames": self.max_frames,
                "max_items": self.max_len, "put_wait_s": round(self.put_wait_s, 4),
                "get_wait_s": round(self.get_wait_s, 4)}


class InFlight:
    """Thread-safe count of frames alive between the decoder and the encoder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.current += n
            self.peak = max(self.peak, self.current)

    def done(self, n: int = 1) -> None:
        with self._lock:
            self.current -= n
