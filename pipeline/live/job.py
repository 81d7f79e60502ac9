"""One camera from input to output: :func:`process_live`.

The live counterpart of :func:`pipeline.job.process_file`: a
:class:`~pipeline.live.source.LiveSource` feeds the file pipeline's
:class:`~pipeline.runner.Runner` (decode, inference and encode threads) into a live output
(:mod:`pipeline.live.outputs`). Between the runner and the output a small tap reports each
written frame back to the source, which measures its latency and adjusts the drop budget.

Stopping is graceful: when ``cancel`` is set (SIGINT/SIGTERM) the input stops, the frames
already received go through, and the output is finalised (the current segment is closed
with its index, a restream is ended properly). If that takes longer than ``drain_timeout``
the runner is stopped hard and the output finalised with what was written. The output is
also finalised when the run fails, so whatever was recorded stays playable.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..encoders import EncoderSettings
from ..errors import Cancelled, DerainError
from ..factory import describe_engine
from ..frames import FrameItem
from ..runner import Runner, RunnerConfig
from ..signals import CancelToken
from ..util import is_url
from .outputs import OutputSpec, classify_output, make_live_sink
from .pacing import Pacer
from .source import LiveInputConfig, LiveSource
from .stats import LiveStats

log = logging.getLogger(__name__)

__all__ = ["LiveOptions", "LiveResult", "CameraState", "process_live"]


@dataclass
class LiveOptions:
    """Everything about a live run except the model, the input and the output."""

    input: LiveInputConfig = field(default_factory=LiveInputConfig)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    batch: int = 1
    queue_frames: int | None = None
    segment_time: float | None = None
    overwrite: bool = False
    compare: bool = False
    drain_timeout: float = 10.0


@dataclass
class LiveResult:
    name: str
    input: str
    output: str
    stopped_by: str
    files: list[str]
    warnings: list[str]


@dataclass
class CameraState:
    """What a running camera exposes to the status reporter."""

    name: str
    stats: LiveStats
    input: str = ""
    output: str = ""
    runner: Runner | None = None
    source: LiveSource | None = None
    sink: Any = None
    live: bool | None = None
    error: DerainError | None = None
    result: LiveResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        data = {"input": self.input, "output": self.output, "live": self.live}
        data.update(self.stats.snapshot())
        if self.runner is not None:
            r = self.runner.stats()
            data["pipeline"] = {k: r[k] for k in ("batches", "stages", "queues", "max_frames_in_flight")}
        if self.source is not None and self.source.info is not None:
            info = self.source.info
            data["video"] = {"width": info.width, "height": info.height, "codec": info.codec,
                             "rate": str(info.rate)}
            data["decode_errors"] = self.source.decode_errors
            data["resized_frames"] = self.source.resized_frames
        sink = self.sink
        if sink is not None:
            data["encoder"] = {"name": getattr(sink, "encoder", ""), "options": getattr(sink, "options", {})}
            if hasattr(sink, "frames_skipped"):
                data["output_frames_skipped"] = sink.frames_skipped
                data["output_reopens"] = sink.reopens
        data.update(self.extra)
        data["error"] = str(self.error) if self.error is not None else None
        data["exit_code"] = int(self.error.exit_code) if self.error is not None else 0
        return data


class _Tap:
    """Passes frames to the output and reports each written frame to the source."""

    def __init__(self, sink: Any, source: LiveSource) -> None:
        self.sink = sink
        self.source = source

    def write_frame(self, item: FrameItem) -> None:
        pts = item.pts
        self.sink.write_frame(item)
        self.source.frame_written(pts)

    def write_packet(self, packet: Any) -> None:
        self.sink.write_packet(packet)

    def close(self) -> None:
        self.sink.close()


def process_live(input_text: str, output_text: str, engine: Any, options: LiveOptions | None = None,
                 cancel: CancelToken | None = None, *, name: str | None = None,
                 state: CameraState | None = None) -> LiveResult:
    """Derain a live input into ``output_text`` until it ends, is stopped through ``cancel``
    (a graceful stop, not an error: it returns normally) or fails (raises a
    :class:`~pipeline.errors.DerainError` after finalising the output)."""
    options = options or LiveOptions()
    cancel = cancel or CancelToken()
    from .inputs import classify_input
    shown_in = classify_input(input_text).shown
    name = name or shown_in
    state = state or CameraState(name, LiveStats(name))
    state.input = shown_in
    stream = is_url(output_text) and not output_text.lower().startswith("file:")
    # --segment-time is for file outputs (a multi-camera run may mix files and streams).
    out_spec: OutputSpec = classify_output(output_text, segment_time=None if stream else options.segment_time,
                                           name=name, overwrite=options.overwrite)
    state.output = out_spec.shown
    source = LiveSource(input_text, options.input, stats=state.stats, name=name)
    state.source = source
    try:
        info = source.open(cancel)
        state.live = source.live

        def output_error(reason: str) -> None:
            state.stats.output_errors += 1

        sink = make_live_sink(out_spec, info, source.copy_streams, options.encoder, compare=options.compare,
                              on_segment=state.stats.segments.append, on_output_error=output_error)
        sink.open()
        state.sink = sink
        config = RunnerConfig(batch=options.batch, queue_frames=options.queue_frames or options.batch,
                              batch_timeout=0.05, keep_input=options.compare)
        private = CancelToken()
        # Live: frames are taken from the camera just when the network is ready for them.
        pacer = Pacer(engine, options.batch) if source.live else None
        runner = Runner(source.items(pacer), pacer or engine, _Tap(sink, source), config, private)
        state.runner = runner
        _log_start(name, shown_in, out_spec, source, sink, engine, options)
        stopped_by = _run(runner, source, sink, cancel, private, options)
    finally:
        source.close()
    warnings = list(dict.fromkeys(source.warnings + list(getattr(sink, "warnings", []))))
    for line in warnings:
        log.warning("%s: %s", name, line)
    files = list(getattr(sink, "files", [])) or ([out_spec.target] if out_spec.kind != "stream" else [])
    result = LiveResult(name, shown_in, out_spec.shown, stopped_by, files, warnings)
    state.result = result
    if source.failure is not None:
        raise source.failure
    s = state.stats
    log.info("%s: %s; %d frames in, %d out, %d dropped, %d reconnects", name, stopped_by, s.frames_in,
             s.frames_out, s.dropped, s.reconnect_count)
    return result


def _run(runner: Runner, source: LiveSource, sink: Any, cancel: CancelToken, private: CancelToken,
         options: LiveOptions) -> str:
    """Run until the input ends; returns why it ended. Finalises the output in every case."""
    drain_deadline: list[float] = []

    def tick(r: Runner) -> None:
        if cancel.is_set() and not source.stopping:
            log.info("%s: %s: finishing the output", source.name, cancel.reason or "stopping")
            source.stop(cancel.reason or "stopped")
        if (r.errors or private.is_set()) and not source.stopping:
            source.stop("error")
        if source.stopping and not drain_deadline:
            drain_deadline.append(time.monotonic() + options.drain_timeout)
        if drain_deadline and time.monotonic() > drain_deadline[0] and not private.is_set():
            log.warning("%s: the pipeline did not finish within %.0fs of the stop; closing the output now",
                        source.name, options.drain_timeout)
            private.cancel("drain timeout")

    runner.start()
    try:
        runner.wait(on_tick=tick)
    except Cancelled:
        _finalise(sink)  # hard stop after the drain timeout: the encode thread has ended
    except BaseException:
        source.stop("error")
        _finalise(sink)
        raise
    source._sync_drops()
    if cancel.is_set():
        return f"stopped by {cancel.reason or 'request'}"
    return source.ended_by or "end of input"


def _finalise(sink: Any) -> None:
    try:
        sink.close()
    except Exception as exc:  # noqa: BLE001 - the run already failed or was stopped
        log.debug("closing the output after a stop failed: %s", exc)
        try:
            sink.abort()
        except Exception:  # noqa: BLE001
            pass


def _log_start(name: str, shown_in: str, out: OutputSpec, source: LiveSource, sink: Any, engine: Any,
               options: LiveOptions) -> None:
    info = source.info
    assert info is not None
    e = describe_engine(engine)
    mode = (f"live (max latency {options.input.max_latency:g}s)" if source.live
            else "every frame kept (not live)")
    where = {"file": "recording", "segments": f"segments of {out.segment_time or 0:g}s",
             "stream": "restream"}[out.kind]
    log.info("%s: %s: %dx%d %s, %s fps, %s -> %s %s: %s; model on %s %s (%s), batch %d",
             name, shown_in, info.width, info.height, info.codec, f"{float(info.rate):g}" if info.rate else "?",
             mode, where, out.shown, getattr(sink, "describe", ""), e["device"], e["precision"], e["backend"],
             options.batch)
