"""``derain-video``: remove rain from a video file (or every video in a folder), or from live
cameras and streams.

Parses the command line, sets up logging, loads the model once, builds the inference engine
and runs :func:`pipeline.job.process_file` for each input under SIGINT/SIGTERM handling.
Live inputs (network URLs, stdin, ``--camera``) go to :func:`pipeline.live.cli.run_live`.
Every failure ends in one ``derain-video: error: ...`` line and a documented exit code.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from typing import TYPE_CHECKING

# Only light modules here: PyTorch, PyAV and the pipeline load inside main(), after the
# signal handlers are installed, so an early Ctrl-C still ends with one line, not a traceback.
from .errors import Cancelled, DerainError, ExitCode, ModelError, UsageError
from .live.options import LIVE_EPILOG, add_live_arguments, is_live_run
from .signals import CancelToken, handle_signals
from .util import is_url, parse_time, redact_url

if TYPE_CHECKING:
    from .job import JobOptions, JobResult

log = logging.getLogger("pipeline")
PROG = "derain-video"

EPILOG = """\
examples:
  derain-video rainy.mp4 clean.mp4
  derain-video --model runs/video/best.pt --device cuda --batch 8 in.mkv out.mkv
  derain-video --compare --start 1:00 --duration 10 in.mp4 side_by_side.mp4
  derain-video --tile 512 --tile-overlap 32 --crf 16 4k.mov out.mov
  derain-video --overwrite videos/ derained/          (every video in a folder)

folders:
  every video file of INPUT (by extension, or by probing files with other extensions) is
  written under the same name into OUTPUT (created if needed; a name without a known video
  extension gets .mkv). A file that fails is reported and the others still run.

what is kept:
  every video frame with its original timestamp (variable frame rate included), the
  video time base and frame rate, audio/subtitle/data streams (copied packet for packet,
  never re-encoded), rotation, colour range/matrix/primaries/transfer, aspect ratio,
  metadata and chapters. With --start/--duration/--frames the cut is frame-accurate and
  the output's timestamps start at 0 (copied packets are kept when they start inside
  the range).

odd frame sizes:
  4:2:0 formats (the default yuv420p) need even sizes: an odd width/height is encoded
  one pixel larger, repeating the last column/row (no scaling; plays everywhere). Use
  --pix-fmt yuv444p to keep the exact odd size.

damaged input:
  undecodable packets are skipped and counted, a file that ends early is processed up
  to its end; both give a warning with counts and a complete, playable output (exit 0).

safety:
  the output is written to a hidden .NAME.*.partial.EXT file beside it and renamed when
  complete; on any error or Ctrl-C it is deleted (with --keep-partial, Ctrl-C keeps the
  part done so far as a playable file). The input is never overwritten; an existing
  output is replaced only with --overwrite.

exit codes:
  0    success (warnings about damaged input included)
  1    runtime failure (encoder or disk error, internal error; some files of a folder failed)
  2    usage error or unusable input (missing, not a video, no video stream,
       unsupported codec, output exists, output is the input)
  3    the model/checkpoint cannot be loaded
  4    a live input was lost for good (could not reconnect within --max-reconnects)
  130  interrupted (Ctrl-C / SIGINT)
  143  terminated (SIGTERM)

""" + LIVE_EPILOG


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Remove rain from a video with the iterative ResLSTM network: decode, derain "
                    "and encode in a streaming pipeline that keeps every frame, timestamp and "
                    "audio track.")
    p.add_argument("input", nargs="?", help="input video file, a folder of videos, a camera or "
                                            "stream URL (rtsp://...), or - for stdin")
    p.add_argument("output", nargs="?", help="output video file (its extension picks the container), "
                                             "a folder when INPUT is a folder, or a stream URL")

    m = p.add_argument_group("model and device")
    m.add_argument("--model", metavar="SPEC",
                   help="checkpoint path or preset name with shipped weights (default: the shipped "
                        "'tiny' model, model/weights/tiny.pt)")
    m.add_argument("--device", default="auto", type=_device,
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    m.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="inference precision; auto = fp16 on CUDA, fp32 on CPU (default: auto)")
    m.add_argument("--backend", default="auto", metavar="NAME",
                   help="inference backend: auto, eager, or those pipeline.backends provides "
                        "(default: auto)")
    m.add_argument("--batch", type=_positive_int, metavar="N",
                   help="frames per network call (default: 4; 1 for live inputs)")
    m.add_argument("--tile", type=_positive_int, metavar="N",
                   help="process frames in N x N tiles (for frames too large for memory)")
    m.add_argument("--tile-overlap", type=_non_negative_int, default=32, metavar="M",
                   help="overlap between tiles in pixels, blended smoothly (default: 32)")

    e = p.add_argument_group("output encoding")
    e.add_argument("--codec", default="auto", metavar="NAME",
                   help="video encoder: auto (h264_nvenc when it works here, else libx264), h264, "
                        "hevc, av1, vp9, or an FFmpeg encoder name such as libx265 or ffv1")
    e.add_argument("--crf", type=float, metavar="Q",
                   help="constant quality, lower is better (default: 18 for libx264, 20 for "
                        "libx265, cq 19 for NVENC)")
    e.add_argument("--preset", metavar="NAME",
                   help="encoder speed preset (default: medium for x264/x265, p5 for NVENC)")
    e.add_argument("--pix-fmt", metavar="FMT",
                   help="output pixel format (default: yuv420p, which plays everywhere)")
    e.add_argument("-x", "--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra encoder option passed to FFmpeg (repeatable), e.g. -x tune=film")
    e.add_argument("--compare", action="store_true",
                   help="write rainy | derained side by side (double width) to see the effect")
    e.add_argument("--drop-incompatible", action="store_true",
                   help="leave out streams the output container cannot hold (e.g. SubRip "
                        "subtitles in .mp4) instead of stopping with an error")

    r = p.add_argument_group("range")
    r.add_argument("--start", type=_time, metavar="TIME",
                   help="start at TIME (seconds or [HH:]MM:SS[.ms]); the output starts at 0")
    span = r.add_mutually_exclusive_group()
    span.add_argument("--duration", type=_time, metavar="TIME", help="process this much video")
    span.add_argument("--frames", type=_positive_int, metavar="N", help="process N frames")

    o = p.add_argument_group("files and reporting")
    o.add_argument("-y", "--overwrite", action="store_true", help="replace an existing output")
    o.add_argument("--keep-partial", action="store_true",
                   help="on Ctrl-C/SIGTERM keep the part done so far as a playable file")
    o.add_argument("--stats-json", metavar="PATH",
                   help="write run statistics (frames, fps, per-stage time, queue waits, dropped, "
                        "encoder, device) as JSON")
    o.add_argument("--threads", type=_non_negative_int, default=0, metavar="N",
                   help="decoder threads (default: 0 = automatic)")
    o.add_argument("--queue-frames", type=_positive_int, metavar="N",
                   help="frames each stage queue holds (default: 2 x --batch)")
    o.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")
    o.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks)")
    o.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    add_live_arguments(p)
    return p


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("derain-video")
    except Exception:  # noqa: BLE001 - not installed: the source tree's version
        return "0.1.0"


# -- argument types ---------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _time(text: str) -> Any:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(text: str) -> str:
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


# -- logging ----------------------------------------------------------------------------
class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = redact_url(record.getMessage())
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"{PROG}: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"{PROG}: warning: {message}"
        return message


def _setup_logging(quiet: bool, verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler.setLevel(level)
    for name in ("pipeline", "model"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)
    return handler


def _teardown_logging(handler: logging.Handler) -> None:
    for name in ("pipeline", "model"):
        logging.getLogger(name).removeHandler(handler)
    handler.flush()


# -- main -------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``derain-video``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0) if isinstance(exc.code, int) else ExitCode.USAGE
    if args.batch is None:
        args.batch = 1 if is_live_run(args) else 4
    handler = _setup_logging(args.quiet, args.verbose)
    cancel = CancelToken()
    try:
        with handle_signals(cancel):
            return int(_run(args, cancel))
    except DerainError as exc:
        if args.verbose and exc.__cause__ is not None:
            log.debug("cause:", exc_info=exc.__cause__)
        log.error("%s", exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        signum = cancel.signum
        err = Cancelled(cancel.reason or "interrupted", signum)
        log.error("%s", err)
        return int(err.exit_code)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (unless -v)
        log.debug("traceback:", exc_info=exc)
        first = str(exc).splitlines()[0] if str(exc) else ""
        log.error("internal error: %s%s (run with -v for details)", type(exc).__name__,
                  f": {first}" if first else "")
        return int(ExitCode.FAILURE)
    finally:
        _teardown_logging(handler)


def _run(args: argparse.Namespace, cancel: CancelToken) -> ExitCode:
    if is_live_run(args):
        from .live.cli import run_live

        return ExitCode(run_live(args, cancel, _job_options(args).encoder, lambda: _build_engine(args)))
    from .job import process_file

    if args.input is None or args.output is None:
        raise UsageError("give INPUT and OUTPUT (see --help)")
    inputs = _plan(args)
    options = _job_options(args)
    engine = _build_engine(args)
    results: list["JobResult"] = []
    failures: list[tuple[str, DerainError]] = []
    folder = len(inputs) != 1 or Path(args.input).is_dir()
    started = time.perf_counter()
    for source, target in inputs:
        if cancel.is_set():
            _write_stats(args, results, failures, started)
            raise Cancelled(cancel.reason or "interrupted", cancel.signum)
        try:
            results.append(process_file(source, target, engine, options, cancel))
        except Cancelled as exc:
            _write_stats(args, results, failures, started)
            raise exc
        except DerainError as exc:
            if not folder:
                _write_stats(args, results, [(source, exc)], started)
                raise
            failures.append((source, exc))
            log.error("%s: %s", source, exc)
    _write_stats(args, results, failures, started)
    if folder:
        log.info("%d of %d videos done%s", len(results), len(inputs),
                 f", {len(failures)} failed: " + ", ".join(Path(s).name for s, _ in failures)
                 if failures else "")
        if failures:
            codes = {exc.exit_code for _, exc in failures}
            return codes.pop() if len(codes) == 1 else ExitCode.FAILURE
    return ExitCode.OK


def _plan(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(input, output) pairs: one file, or every video of a folder into a folder."""
    from .media import VIDEO_EXTENSIONS, looks_like_video
    from .output import PARTIAL_MARK, same_file

    source, target = args.input, Path(args.output)
    if is_url(source) or not Path(source).is_dir():
        if not is_url(source) and not Path(source).exists():
            raise UsageError(f"input not found: {source}")
        return [(source, target)]
    folder = Path(source)
    if target.exists() and not target.is_dir():
        raise UsageError(f"the input is a folder, so the output must be a folder too: {target} is a file")
    if target.exists() and same_file(folder, target):
        raise UsageError("the output folder is the input folder; choose another output folder")
    videos = sorted(p for p in folder.iterdir()
                    if p.is_file() and PARTIAL_MARK not in p.name and looks_like_video(p))
    if not videos:
        raise UsageError(f"no video files in {folder}")
    target.mkdir(parents=True, exist_ok=True)
    # Same name in the output folder; a name FFmpeg cannot pick a muxer from becomes .mkv.
    return [(str(p), target / (p.name if p.suffix.lower() in VIDEO_EXTENSIONS else p.stem + ".mkv"))
            for p in videos]


def _job_options(args: argparse.Namespace) -> "JobOptions":
    from .encoders import EncoderSettings
    from .job import JobOptions
    from .progress import progress_wanted
    from .runner import RunnerConfig
    from .source import Trim

    extra: dict[str, str] = {}
    for item in args.encoder_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-x expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()
    try:
        trim = Trim(start=args.start, duration=args.duration, frames=args.frames)
        runner = RunnerConfig(batch=args.batch, queue_frames=args.queue_frames)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return JobOptions(
        encoder=EncoderSettings(codec=args.codec, crf=args.crf, preset=args.preset,
                                pix_fmt=args.pix_fmt, options=extra),
        runner=runner, trim=trim, compare=args.compare, overwrite=args.overwrite,
        keep_partial=args.keep_partial, drop_incompatible=args.drop_incompatible,
        decoder_threads=args.threads, progress=progress_wanted(args.quiet))


def _build_engine(args: argparse.Namespace) -> Any:
    import model

    from .factory import make_engine

    try:
        net = model.load(args.model)
    except model.CheckpointError as exc:
        raise ModelError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a file torch.load chokes on in other ways
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot load model {args.model or model.DEFAULT_MODEL!r}: "
                         f"not a readable checkpoint ({first})") from None
    return make_engine(net, device=args.device, backend=args.backend, precision=args.precision,
                       tile=args.tile, tile_overlap=args.tile_overlap, batch=args.batch)


def _write_stats(args: argparse.Namespace, results: list["JobResult"],
                 failures: list[tuple[str, DerainError]], started: float) -> None:
    if not args.stats_json:
        return
    if len(results) == 1 and not failures and not Path(args.input).is_dir():
        data: dict[str, Any] = results[0].stats
    else:
        data = {"files": [r.stats for r in results],
                "failed": [{"input": s, "error": str(e), "exit_code": int(e.exit_code)} for s, e in failures],
                "wall_s": round(time.perf_counter() - started, 4),
                "frames_out": sum(r.stats["frames_out"] for r in results),
                "dropped": 0}
    path = Path(args.stats_json)
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write --stats-json %s: %s", path, exc.strerror or exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
