"""One input file to one output file: checks, source, sink, runner, atomic commit, report.

:func:`process_file` is what ``derain-video IN OUT`` does for each file; the CLI adds
argument parsing, model loading, folders and signal handling around it. It guarantees that
the target ends up holding the complete result or is left untouched (the temporary file is
removed on every failure), except with ``keep_partial`` after a cancel, where the part
encoded so far is finalised into a playable file.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from .encoders import EncoderSettings
from .errors import Cancelled, PipelineError
from .factory import describe_engine
from .output import AtomicOutput, check_output
from .progress import Progress
from .runner import Runner, RunnerConfig
from .signals import CancelToken
from .sink import VideoSink
from .source import Trim, VideoSource
from .util import format_seconds, is_url, redact_url

log = logging.getLogger(__name__)


@dataclass
class JobOptions:
    """Everything about a run except the model and the paths."""

    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    trim: Trim = field(default_factory=Trim)
    compare: bool = False
    overwrite: bool = False
    keep_partial: bool = False
    drop_incompatible: bool = False
    decoder_threads: int = 0
    input_options: dict[str, str] = field(default_factory=dict)
    progress: bool = False


@dataclass
class JobResult:
    input: str
    output: str
    stats: dict[str, Any]
    warnings: list[str]
    kept_partial: bool = False


def process_file(input_path: "str | os.PathLike[str]", output_path: "str | os.PathLike[str]",
                 engine: Any, options: JobOptions | None = None, cancel: CancelToken | None = None,
                 on_runner: Callable[[Runner], None] | None = None) -> JobResult:
    """Derain ``input_path`` into ``output_path``. Raises a :class:`~pipeline.errors.DerainError`
    (one-line message, exit code) on failure and :class:`Cancelled` when cancelled."""
    options = options or JobOptions()
    cancel = cancel if cancel is not None else CancelToken()
    text_in = os.fspath(input_path)
    shown_in = redact_url(text_in)
    output = Path(output_path)
    check_output(None if is_url(text_in) else Path(text_in), output, options.overwrite)

    source = VideoSource(text_in, options=options.input_options, trim=options.trim,
                         threads=options.decoder_threads)
    info = source.open()
    runner: Runner | None = None
    sink: VideoSink | None = None
    try:
        atomic = AtomicOutput(output)
        try:
            sink = VideoSink(atomic.temp, info, source.copy_streams, options.encoder,
                             compare=options.compare, drop_incompatible=options.drop_incompatible,
                             metadata=dict(source.container.metadata) if source.container else None,
                             chapters=_chapters(source), shown_name=str(output))
            sink.open()
            config = options.runner
            if options.compare:
                config = RunnerConfig(**{**config.__dict__, "keep_input": True})
            runner = Runner(source.items(), engine, sink, config, cancel)
            if on_runner is not None:
                on_runner(runner)
            _log_start(shown_in, output, source, sink, engine, config)
            progress = Progress(_expected_frames(source, options.trim), output.name, options.progress)
            try:
                runner.run(on_tick=lambda r: progress.update(r.frames_out))
            except Cancelled as exc:
                if runner.sink_closed:
                    atomic.commit()
                    raise Cancelled(f"{exc}; {output} was already complete", exc.signum) from None
                if options.keep_partial and runner.frames_out > 0:
                    sink.close()
                    atomic.commit()
                    raise Cancelled(f"{exc}; kept the first {runner.frames_out} frames in {output} "
                                    "(--keep-partial)", exc.signum) from None
                raise Cancelled(f"{exc}; {output} was not written", exc.signum) from None
            finally:
                progress.close()
            atomic.commit()
        finally:
            if not atomic.done:
                # After a forced quit (second Ctrl-C) a stage may still be running: never
                # close what a live thread uses; removing the temporary file is always safe.
                if sink is not None and (runner is None or not runner.alive("encode")):
                    sink.abort()
                atomic.discard()
    finally:
        if runner is None or not runner.alive("decode"):
            source.close()

    assert sink is not None
    warnings = source.warnings + sink.warnings
    for line in warnings:
        log.warning("%s", line)
    stats = _stats(shown_in, output, source, sink, runner, engine, options)
    log.info("%s: %d frames in %s (%.2f fps)", output, stats["frames_out"],
             format_seconds(stats["wall_s"]), stats["fps"])
    return JobResult(shown_in, str(output), stats, warnings)


def _chapters(source: VideoSource) -> list:
    if source.container is None or source.trim.active:
        return []  # chapter times would not match a trimmed output
    try:
        return list(source.container.chapters())
    except (AttributeError, ValueError):
        return []


def _expected_frames(source: VideoSource, trim: Trim) -> int | None:
    info = source.info
    if info is None:
        return None
    if trim.frames is not None:
        return trim.frames
    if trim.duration is not None:
        return max(1, round(float(trim.duration) * float(info.rate)))
    total = info.expected_frames()
    if total is not None and trim.start:
        total = max(1, total - round(float(trim.start) * float(info.rate)))
    return total


def _log_start(shown_in: str, output: Path, source: VideoSource, sink: VideoSink, engine: Any,
               config: RunnerConfig) -> None:
    info = source.info
    assert info is not None
    others = ", ".join(f"{s.type} #{s.index}" for s in source.copy_streams) or "no other streams"
    e = describe_engine(engine)
    log.info("%s: %dx%d %s, %s fps, %s -> %s: %s (%s); model on %s %s (%s), batch %d",
             shown_in, info.width, info.height, info.codec, _rate(info.rate), others, output,
             sink.describe, ", ".join(f"{k}={v}" for k, v in sink.options.items()) or "defaults",
             e["device"], e["precision"], e["backend"], config.batch)


def _rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.3f}"


def _stats(shown_in: str, output: Path, source: VideoSource, sink: VideoSink, runner: Runner | None,
           engine: Any, options: JobOptions) -> dict[str, Any]:
    if runner is None:
        raise PipelineError("internal error: the run produced no statistics")
    stats = runner.stats()
    info = source.info
    assert info is not None
    stats.update({
        "input": shown_in,
        "output": str(output),
        "video": {"width": info.width, "height": info.height, "codec": info.codec,
                  "time_base": str(info.time_base), "average_rate": str(info.average_rate),
                  "rotation": info.rotation, "colour": info.colour.__dict__},
        "encoder": {"name": sink.encoder, "pix_fmt": sink.pix_fmt, "size": list(sink.encoded_size),
                    "options": sink.options},
        **describe_engine(engine),
        "batch": options.runner.batch,
        "compare": options.compare,
        "source": {k: v for k, v in source.stats.__dict__.items() if k != "packets_copied"},
        "packets_copied_by_stream": {str(k): v for k, v in sink.stats.packets_copied.items()},
        "warnings": source.warnings + sink.warnings,
        "peak_rss_mib": _peak_rss_mib(),
    })
    return stats


def _peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far (MiB), where the OS reports it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
