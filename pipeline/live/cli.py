"""The live run of ``derain-video`` (its options are in :mod:`pipeline.live.options`).

:func:`run_live` turns the command line into cameras (INPUT OUTPUT, or ``--camera NAME INPUT
OUTPUT`` repeated), checks every output before anything starts, loads the network once and
runs every camera (:func:`pipeline.live.cameras.run_cameras`); it returns the exit code.
"""
from __future__ import annotations

import argparse
import logging
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from ..encoders import EncoderSettings
from ..errors import ExitCode, UsageError
from ..factory import describe_engine
from ..signals import CancelToken
from ..util import is_url
from .cameras import Camera, camera_exit_code, run_cameras
from .inputs import classify_input
from .job import LiveOptions
from .outputs import classify_output
from .source import LiveInputConfig

log = logging.getLogger("pipeline")

__all__ = ["run_live", "live_options", "default_name"]

def default_name(text: str) -> str:
    """A short camera name for logs and segment files: ``host-lastpathpart`` or ``stdin``."""
    spec = classify_input(text)
    if spec.kind == "stdin":
        return "stdin"
    if spec.kind == "file":
        return re.sub(r"\W+", "_", text.rsplit("/", 1)[-1].rsplit(".", 1)[0]) or "input"
    parts = urlsplit(text)
    host = parts.hostname or "camera"
    tail = [p for p in parts.path.split("/") if p]
    name = f"{host}-{tail[-1]}" if tail else host
    return re.sub(r"[^\w.\-]+", "_", name)


def _cameras(args: argparse.Namespace) -> list[Camera]:
    cams: list[Camera] = []
    if args.input is not None or args.output is not None:
        if args.input is None or args.output is None:
            raise UsageError("give INPUT and OUTPUT, or --camera NAME INPUT OUTPUT")
        cams.append(Camera(default_name(args.input), args.input, args.output))
    for name, source, target in args.camera:
        if not name or not re.fullmatch(r"[\w.\-]+", name):
            raise UsageError(f"camera name {name!r}: use letters, digits, '.', '-' or '_'")
        cams.append(Camera(name, source, target))
    if not cams:
        raise UsageError("give INPUT and OUTPUT, or --camera NAME INPUT OUTPUT")
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise UsageError(f"camera names must differ: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    outputs = [c.output for c in cams]
    if len(set(outputs)) != len(outputs):
        raise UsageError("every camera needs its own OUTPUT")
    return cams


def live_options(args: argparse.Namespace, encoder: EncoderSettings) -> LiveOptions:
    if args.start:
        raise UsageError("--start cannot be used with live inputs (they cannot be seeked)")
    extra: dict[str, str] = {}
    for item in args.input_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-I expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()
    batch = args.batch if args.batch is not None else 1
    try:
        config = LiveInputConfig(
            live=args.live, max_latency=args.max_latency, transport=args.rtsp_transport,
            timeout=args.timeout, max_reconnects=args.max_reconnects, wait=args.wait_for_input,
            reconnect_delay_max=args.reconnect_delay_max, frames=args.frames,
            duration=float(args.duration) if args.duration is not None else None,
            threads=args.threads, options=extra)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return LiveOptions(input=config, encoder=encoder, batch=batch, queue_frames=args.queue_frames,
                       segment_time=args.segment_time, overwrite=args.overwrite, compare=args.compare)


def run_live(args: argparse.Namespace, cancel: CancelToken, encoder: EncoderSettings,
             build_engine: Callable[[], Any]) -> ExitCode | int:
    """Run the live command line; returns the exit code (raises UsageError/ModelError)."""
    cams = _cameras(args)
    options = live_options(args, encoder)
    for cam in cams:  # every output is checked before anything starts
        seg = options.segment_time if not is_url(cam.output) or cam.output.startswith("file:") else None
        classify_output(cam.output, segment_time=seg, name=cam.name, overwrite=args.overwrite)
    if options.segment_time is not None and all(is_url(c.output) for c in cams):
        raise UsageError("--segment-time needs a file or folder OUTPUT, not a stream URL")
    engine = build_engine()
    info = describe_engine(engine)

    def header() -> dict[str, Any]:
        return {**info, "batch": options.batch, "max_latency_s": options.input.max_latency}

    states = run_cameras(cams, engine, options, cancel, status_interval=args.status_interval,
                         stats_json=args.stats_json, header=header)
    code = camera_exit_code(states)
    if cancel.is_set() and code == ExitCode.OK:
        log.info("stopped by %s; every output was finalised", cancel.reason or "a signal")
    return code
