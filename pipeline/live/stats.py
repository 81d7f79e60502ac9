"""Live counters of one camera: fps in/out, latency, drops, reconnects, and the status line.

Latency is measured per frame, inside this process: from the moment the frame has been
received and decoded (its *arrival*) to the moment its encoded picture is handed to the
output muxer. That is the delay the pipeline adds on top of the camera and the network
(:mod:`benchmarks.live_latency` measures the full glass-to-glass delay with a camera that
stamps its capture time into the picture).

Everything is thread-safe: the reader, the encoder and the status printer update and read
the same :class:`LiveStats`.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..util import format_seconds, redact_url

__all__ = ["LiveStats", "Reconnect", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Reconnect:
    """One lost connection: when, why, and how long until frames flowed again."""

    at: float          # wall clock (time.time()) when the loss was detected
    cause: str
    downtime_s: float | None = None  # None while still reconnecting
    attempts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.at)) + f".{int(self.at % 1 * 1000):03d}",
                "cause": redact_url(self.cause),
                "downtime_s": None if self.downtime_s is None else round(self.downtime_s, 3),
                "attempts": self.attempts}


class LiveStats:
    """Counters and latency samples of one camera."""

    def __init__(self, name: str, window: int = 4096, history: int = 100) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_late = 0
        self.dropped_overflow = 0
        self.timestamps_fixed = 0
        self.sessions = 0
        self.state = "connecting"
        self.reconnects: list[Reconnect] = []
        self._history = history
        self.reconnect_count = 0
        self.connect_attempts = 0
        self._lost_at: float | None = None
        self._latency: collections.deque[float] = collections.deque(maxlen=window)
        self.latency_max = 0.0
        self._latency_sum = 0.0
        self._latency_n = 0
        self._last_tick = (self.started, 0, 0)
        self._rates = (0.0, 0.0)
        self.output_errors = 0
        self.segments: list[str] = []

    # -- updates -----------------------------------------------------------------------
    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1

    def frame_out(self, latency: float | None) -> None:
        with self._lock:
            self.frames_out += 1
            if latency is not None:
                self._latency.append(latency)
                self.latency_max = max(self.latency_max, latency)
                self._latency_sum += latency
                self._latency_n += 1

    def connected(self) -> float | None:
        """A session delivered its first frame; returns the downtime if it was a reconnect."""
        with self._lock:
            self.sessions += 1
            self.state = "streaming"
            if self._lost_at is None or not self.reconnects:
                return None
            downtime = time.monotonic() - self._lost_at
            self.reconnects[-1].downtime_s = downtime
            self._lost_at = None
            self.reconnect_count += 1
            return downtime

    def lost(self, cause: str) -> None:
        """The source stalled or dropped (the first event of an outage is recorded)."""
        with self._lock:
            if self.sessions == 0:  # not connected yet: a failed first connection
                self.connect_attempts += 1
                self.state = "connecting"
                return
            self.state = "reconnecting"
            if self._lost_at is None:
                self._lost_at = time.monotonic()
                self.reconnects.append(Reconnect(time.time(), cause))
                del self.reconnects[:-self._history]
            self.reconnects[-1].attempts += 1

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    # -- reading -----------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self.dropped_late + self.dropped_overflow

    def rates(self) -> tuple[float, float]:
        """(fps in, fps out) since the previous call (the status interval)."""
        with self._lock:
            now = time.monotonic()
            t0, fin, fout = self._last_tick
            dt = now - t0
            if dt >= 0.5:
                self._rates = ((self.frames_in - fin) / dt, (self.frames_out - fout) / dt)
                self._last_tick = (now, self.frames_in, self.frames_out)
            return self._rates

    def latency(self) -> dict[str, float]:
        with self._lock:
            values = list(self._latency)
            mean = self._latency_sum / self._latency_n if self._latency_n else 0.0
            return {"p50_s": round(percentile(values, 50), 4), "p95_s": round(percentile(values, 95), 4),
                    "max_s": round(self.latency_max, 4), "mean_s": round(mean, 4)}

    def snapshot(self) -> dict[str, Any]:
        """Everything, for ``--stats-json`` (rates are those of the last status interval)."""
        fps_in, fps_out = self._rates
        up = time.monotonic() - self.started
        with self._lock:
            downtimes = [r.downtime_s for r in self.reconnects if r.downtime_s is not None]
            data = {
                "name": self.name,
                "state": self.state,
                "uptime_s": round(up, 3),
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "fps_in": round(fps_in, 3),
                "fps_out": round(fps_out, 3),
                "fps_in_avg": round(self.frames_in / up, 3) if up > 0 else 0.0,
                "fps_out_avg": round(self.frames_out / up, 3) if up > 0 else 0.0,
                "dropped": self.dropped_late + self.dropped_overflow,
                "dropped_late": self.dropped_late,
                "dropped_overflow": self.dropped_overflow,
                "reconnects": self.reconnect_count,
                "failed_first_connections": self.connect_attempts,
                "reconnect_time_s": {"last": round(downtimes[-1], 3) if downtimes else None,
                                     "max": round(max(downtimes), 3) if downtimes else None},
                "reconnect_log": [r.as_dict() for r in self.reconnects],
                "timestamps_fixed": self.timestamps_fixed,
                "output_errors": self.output_errors,
                "segments": list(self.segments),
            }
        data["latency"] = self.latency()
        return data

    def status_line(self) -> str:
        """``cam1: streaming, in 25.0 fps, out 8.1 fps, latency 0.41s (p95 0.52s, max 0.61s),
        dropped 170, reconnects 1, up 1:02.00``."""
        fps_in, fps_out = self.rates()
        lat = self.latency()
        return (f"{self.name}: {self.state}, in {fps_in:.1f} fps, out {fps_out:.1f} fps, "
                f"latency {lat['p50_s']:.2f}s (p95 {lat['p95_s']:.2f}s, max {lat['max_s']:.2f}s), "
                f"dropped {self.dropped}, reconnects {self.reconnect_count}, "
                f"up {format_seconds(time.monotonic() - self.started)}")
