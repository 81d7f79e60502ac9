"""Several cameras in one process: one loaded network, isolated failures, one status report.

:func:`run_cameras` runs :func:`~pipeline.live.job.process_live` for each
:class:`Camera` in its own thread. The cameras share one inference engine through
:class:`SharedEngine`, which serialises network calls with a first-come-first-served lock
(no camera can starve the others; each batch is one call). Everything else is per camera:
input, reconnection, queues, encoder and output, so a camera that fails (lost for good,
disk full, a bad output URL) is reported and stops alone while the others go on.

:class:`StatusReporter` prints one status line per camera every ``interval`` seconds and
rewrites ``--stats-json`` at the same time (atomically), so a monitoring job can read the
file of a run that lasts for days.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import DerainError, ExitCode, PipelineError
from ..signals import CancelToken
from .job import CameraState, LiveOptions, LiveResult, process_live
from .stats import LiveStats

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["Camera", "FairLock", "SharedEngine", "StatusReporter", "run_cameras", "camera_exit_code"]


@dataclass(frozen=True)
class Camera:
    name: str
    input: str
    output: str


class FairLock:
    """A lock granted in the order it was requested (``threading.Lock`` lets the thread that
    just released it take it again, which can starve the other cameras)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._held = False

    def acquire(self) -> None:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._held or self._queue[0] is not ticket:
                self._cond.wait()
            self._queue.popleft()
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SharedEngine:
    """One engine used by several runners: each batch is one locked ``infer`` call.
    Other attributes (``name``, ``device``, ``dtype``...) are those of the wrapped engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.lock = FairLock()
        self.calls = 0
        self.wait_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        with self.lock:
            self.wait_s += time.perf_counter() - started
            self.calls += 1
            return self.engine.infer(frames)

    def stream(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[tuple[np.ndarray, T]]:
        for batch, tag in items:
            yield self.infer(batch), tag

    def describe(self) -> str:
        inner = self.engine.describe() if hasattr(self.engine, "describe") else type(self.engine).__name__
        return f"{inner}, shared"


class StatusReporter:
    """Periodic status lines and ``--stats-json`` snapshots for a set of cameras."""

    def __init__(self, cameras: Sequence[CameraState], interval: float, json_path: str | None = None,
                 header: Callable[[], dict[str, Any]] | None = None) -> None:
        self.cameras = list(cameras)
        self.interval = interval
        self.json_path = json_path
        self.header = header or (lambda: {})
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-status", daemon=True)

    def start(self) -> None:
        if self.interval > 0 and (self.json_path or log.isEnabledFor(logging.INFO)):
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for cam in self.cameras:
                log.info("%s", cam.stats.status_line())
            self.write()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for cam in self.cameras:
            cam.stats.rates()  # the last interval's rates for the final report
        self.write()

    def snapshot(self) -> dict[str, Any]:
        cams = [cam.snapshot() for cam in self.cameras]
        data: dict[str, Any] = {"live": True, **self.header(),
                                "wall_s": round(time.monotonic() - self.started, 3)}
        if len(cams) == 1:
            data.update(cams[0])
        data.update({
            "frames_in": sum(c["frames_in"] for c in cams),
            "frames_out": sum(c["frames_out"] for c in cams),
            "dropped": sum(c["dropped"] for c in cams),
            "reconnects": sum(c["reconnects"] for c in cams),
            "cameras": cams,
        })
        return data

    def write(self) -> None:
        if not self.json_path:
            return
        path = Path(self.json_path)
        try:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(self.snapshot(), indent=2, default=str) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write --stats-json %s: %s", path, exc.strerror or exc)


def run_cameras(cameras: Sequence[Camera], engine: Any, options: LiveOptions, cancel: CancelToken, *,
                status_interval: float = 10.0, stats_json: str | None = None,
                header: Callable[[], dict[str, Any]] | None = None,
                poll: float = 0.2) -> list[CameraState]:
    """Run every camera until all have ended (or ``cancel`` stops them); never raises for a
    camera's failure: each :class:`CameraState` says how its camera ended."""
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise PipelineError("camera names must be unique")
    shared = SharedEngine(engine) if len(cameras) > 1 else engine
    states = [CameraState(c.name, LiveStats(c.name), input=c.input, output=c.output) for c in cameras]
    reporter = StatusReporter(states, status_interval, stats_json, header)

    def run(camera: Camera, state: CameraState) -> None:
        try:
            process_live(camera.input, camera.output, shared, options, cancel, name=camera.name, state=state)
        except DerainError as exc:
            state.error = exc
            log.error("%s: %s", camera.name, exc)
        except BaseException as exc:  # noqa: BLE001 - isolate the camera, report one line
            log.debug("%s: traceback", camera.name, exc_info=exc)
            state.error = PipelineError(f"internal error: {type(exc).__name__}: {exc}")
            log.error("%s: %s", camera.name, state.error)
        finally:
            state.stats.set_state("failed" if state.error is not None else "stopped")

    threads = [threading.Thread(target=run, args=(c, s), name=f"camera-{c.name}", daemon=True)
               for c, s in zip(cameras, states)]
    reporter.start()
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            # Short joins keep the main thread responsive to signals.
            for t in threads:
                t.join(poll)
    finally:
        reporter.stop()
    return states


def camera_exit_code(states: Sequence[CameraState]) -> ExitCode | int:
    """0 when every camera ended well; the failure's code when one failed (or all failed the
    same way); 1 when several failed differently."""
    codes = {int(s.error.exit_code) for s in states if s.error is not None}
    if not codes:
        return ExitCode.OK
    return codes.pop() if len(codes) == 1 else ExitCode.FAILURE


def results(states: Sequence[CameraState]) -> list[LiveResult]:
    return [s.result for s in states if s.result is not None]
