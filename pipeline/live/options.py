"""The live options of ``derain-video`` and their ``--help`` section (light: no PyAV, no
PyTorch, so the command line is parsed before anything heavy loads).

:func:`add_live_arguments` adds the "live cameras and streams" options to the parser;
:func:`is_live_run` tells whether a command line is a live run (a network or stdin INPUT, a
stream OUTPUT, ``--camera``, ``--live`` or ``--segment-time``). The run itself is
:func:`pipeline.live.cli.run_live`.
"""
from __future__ import annotations

import argparse

from ..errors import ExitCode
from ..util import is_url

__all__ = ["LIVE_EPILOG", "add_live_arguments", "is_live_run", "TRANSPORTS"]

TRANSPORTS = ("tcp", "udp")
EXIT_SOURCE_LOST = int(ExitCode.SOURCE_LOST)

LIVE_EPILOG = f"""\
live cameras and streams:
  INPUT may be a network URL (rtsp://, rtmp://, srt://, udp://, http(s)://) or - (stdin).
  Network streams are read live: a stalled or dropped camera is detected (--timeout) and
  reopened with exponential backoff (0.5s doubling to --reconnect-delay-max), forever unless
  --max-reconnects is given (a camera unreachable at start is an error unless
  --wait-for-input); output timestamps stay monotonic across reconnects (a gap
  shows the time the camera was away). When inference is slower than the camera, stale
  frames are dropped so that latency stays under --max-latency (--no-live keeps every
  frame; files and stdin keep every frame unless --live, which reads them at their frame
  rate like a camera). The run ends with Ctrl-C/SIGTERM (outputs are finalised; exit 0),
  at the end of a finite input, after --frames N (N frames written) or --duration T (the
  output reaches T seconds, gaps included). Live runs use --batch 1 (unless --batch is
  given) and decode with slice threads only, for the lowest delay.
  OUTPUT is a file written in place that stays playable if the process is killed (.mkv,
  .ts, or .mp4/.mov written fragmented); with --segment-time N a new file every N seconds,
  named by wall-clock time with strftime codes (default NAME-%Y%m%d-%H%M%S.mkv in a
  folder OUTPUT); or a restream URL: rtsp:// (RTSP RECORD), rtmp:// (FLV), udp://, srt://,
  tcp:// (MPEG-TS). A status line per camera is logged every --status-interval seconds;
  --stats-json is rewritten at the same time (fps in/out, latency p50/p95/max, drops,
  reconnects per camera).

  derain-video rtsp://user:pass@10.0.0.5/stream1 cam1.mkv
  derain-video --segment-time 600 rtsp://10.0.0.5/stream1 recordings/
  derain-video --segment-time 300 rtsp://10.0.0.5/s rec/cam1-%Y%m%d-%H%M%S.mp4
  derain-video rtsp://10.0.0.5/stream1 rtsp://127.0.0.1:8554/derained
  derain-video --camera front rtsp://10.0.0.5/s rec/front.mkv \\
               --camera gate rtsp://10.0.0.6/s udp://239.0.0.1:5000 --stats-json live.json
  ffmpeg -i in.mp4 -f mpegts - | derain-video - out.mkv

  exit codes of live runs: 0 when stopped by a signal or at the end (every output
  finalised), {EXIT_SOURCE_LOST} when an input was lost for good (--max-reconnects exhausted); with
  several cameras, the code of the failure when all failures agree, else 1.
"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _reconnects(text: str) -> int | None:
    if text.strip().lower() in ("unlimited", "inf", "-1"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'unlimited', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("live cameras and streams")
    g.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="drop stale frames to bound latency (default: on for network streams, off "
                        "for files and stdin)")
    g.add_argument("--max-latency", type=_seconds, default=2.0, metavar="SECONDS",
                   help="live mode: most time a frame may spend in the pipeline, from its arrival to "
                        "its output (default: 2)")
    g.add_argument("--rtsp-transport", choices=TRANSPORTS, default="tcp",
                   help="RTSP over TCP (default, reliable) or UDP (lower delay, may lose packets)")
    g.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="network open/read timeout; a source without a video frame for 1.5x this "
                        "long is reopened (default: 10)")
    g.add_argument("--max-reconnects", type=_reconnects, default=None, metavar="N",
                   help="give up after N consecutive failed reconnection attempts (default: "
                        "unlimited; 0 = never reconnect)")
    g.add_argument("--wait-for-input", action="store_true",
                   help="retry a camera that cannot be reached at start like a lost one (for services "
                        "that may start before their cameras); default: that is an error (exit 2)")
    g.add_argument("--reconnect-delay-max", type=_seconds, default=10.0, metavar="SECONDS",
                   help="longest wait between reconnection attempts (default: 10)")
    g.add_argument("--segment-time", type=_seconds, metavar="SECONDS",
                   help="write a new file every SECONDS; OUTPUT is a folder or a strftime pattern "
                        "such as rec/cam1-%%Y%%m%%d-%%H%%M%%S.mkv")
    g.add_argument("--status-interval", type=_interval, default=10.0, metavar="SECONDS",
                   help="log a status line per camera (and rewrite --stats-json) every SECONDS; 0 = "
                        "only at the end (default: 10)")
    g.add_argument("--camera", nargs=3, action="append", default=[], metavar=("NAME", "INPUT", "OUTPUT"),
                   help="one camera of a multi-camera run (repeat it); all share one loaded network, "
                        "each has its own output and fails alone")
    g.add_argument("-I", "--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra FFmpeg input option (repeatable), e.g. -I rtsp_flags=prefer_tcp")


def is_live_run(args: argparse.Namespace) -> bool:
    if args.camera or args.live or args.segment_time is not None:
        return True
    for value in (args.input, args.output):
        if value and (value == "-" or (is_url(value) and not value.lower().startswith("file:"))):
            return True
    return False
