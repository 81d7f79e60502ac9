"""Glass-to-glass latency and reconnect time of a live camera run (nothing here is asserted).

The camera is ``tests/servers/rtsp_camera.py --stamp`` (a real RTSP server): every frame
carries, as a barcode in its top rows, the wall-clock time at which it was captured. The
pipeline reads the camera, derains with the chosen model and restreams MPEG-TS over UDP to a
receiver in this process, which decodes each frame and reads the barcode back::

    glass-to-glass = receiver decoded the frame (time.time()) - camera captured it (barcode)

The barcode survives the network only for an identity-like network: a freshly built preset
with ``input_skip`` (``tiny``, ``video``...) *is* the identity, and costs exactly what the
trained network costs, so ``--model tiny`` (untrained) measures the real compute.

Reported (seconds, p50/p95/max over the frames after the first five):

- ``baseline_direct``: capture -> decoded by a plain PyAV reader of the camera (the camera's
  encoder, RTSP and decoding: what any viewer pays);
- ``camera_to_pipeline_input``: capture -> the pipeline has the decoded frame;
- ``added_by_pipeline``: the pipeline's own latency, decoded frame -> its encoded picture
  handed to the output muxer (what ``--stats-json`` reports as ``latency``);
- ``glass_to_glass_recording``: capture -> written to the recording (the sum of the two);
- ``glass_to_glass_restream_receiver``: capture -> decoded by a receiver of the MPEG-TS/UDP
  restream (adds the receiver's demuxing, which holds each frame until the next one starts).

Reconnect time: the camera server is killed and restarted while the pipeline runs; reported
are the pipeline's downtime (loss detected -> first new frame) and the time from the
restarted server's READY to the first new frame.

Run from the repository root (needs Debian's gst-rtsp-server for /usr/bin/python3)::

    python -m benchmarks.live_latency --model tiny --size 320x240 --seconds 20 --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "servers" / "rtsp_camera.py"
STAMP_BITS = 56

__all__ = ["read_stamp", "main"]


def read_stamp(rgb: np.ndarray) -> float | None:
    """The capture time (seconds since the epoch) drawn by ``rtsp_camera.py --stamp`` into the
    top rows of an RGB frame, or None when the barcode is missing or damaged."""
    if rgb.ndim != 3 or rgb.shape[0] < 16:
        return None
    width = rgb.shape[1]
    cell = max(1, (width - 16) // STAMP_BITS)
    luma = rgb[2:14].astype(np.float32).mean(axis=2)
    margin = cell // 4
    value = 0
    for bit in range(STAMP_BITS):
        x0 = 8 + bit * cell
        patch = luma[:, x0 + margin: x0 + cell - margin] if cell > 2 else luma[:, x0:x0 + cell]
        value = (value << 1) | int(float(patch.mean()) > 128)
    ms, check = value >> 8, value & 0xFF
    expected = 0
    for i in range(6):
        expected ^= (ms >> (8 * i)) & 0xFF
    if check != expected or ms == 0:
        return None
    return ms / 1000.0


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Camera:
    def __init__(self, size: str, fps: int) -> None:
        self.port = _free_port(socket.SOCK_STREAM)
        self.args = ["/usr/bin/python3", str(SERVER), "--port", str(self.port), "--size", size,
                     "--fps", str(fps), "--stamp"]
        self.proc: subprocess.Popen | None = None
        self.ready_at = 0.0

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"camera did not start: {line!r}")
        self.ready_at = time.monotonic()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _receive(url: str, fmt: str | None, seconds: float, options: dict[str, str],
             warmup: int = 5) -> list[float]:
    """Glass-to-glass delays of the readable frames received within ``seconds`` (the first
    ``warmup`` frames, decoded right after the receiver's probing, are left out)."""
    import av

    delays: list[float] = []
    deadline = time.monotonic() + seconds
    options = {"probesize": "100000", "analyzeduration": "200000", **options}
    seen = 0
    with av.open(url, format=fmt, options=options, timeout=10) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        for frame in c.decode(stream):
            now = time.time()
            seen += 1
            captured = read_stamp(frame.to_ndarray(format="rgb24"))
            if captured is not None and seen > warmup:
                delays.append(now - captured)
            if time.monotonic() > deadline:
                break
    return delays


def _summary(values: list[float]) -> dict[str, float | int]:
    from pipeline.live.stats import percentile
    if not values:
        return {"frames": 0}
    return {"frames": len(values), "p50_s": round(percentile(values, 50), 4),
            "p95_s": round(percentile(values, 95), 4), "max_s": round(max(values), 4),
            "mean_s": round(float(np.mean(values)), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.live_latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="preset (untrained is fine) or checkpoint (default: tiny)")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement time per phase")
    ap.add_argument("--max-latency", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--restarts", type=int, default=3, help="server restarts for the reconnect time")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import model
    import torch

    from pipeline.factory import make_engine
    from pipeline.live.job import LiveOptions, process_live
    from pipeline.live.source import LiveInputConfig
    from pipeline.signals import CancelToken

    if args.threads:
        torch.set_num_threads(args.threads)
    from model.config import PRESETS
    net = model.build(args.model) if args.model in PRESETS else model.load(args.model)
    engine = make_engine(net, device="cpu", backend="eager")
    cam = _Camera(args.size, args.fps)
    cam.start()
    results: dict[str, Any] = {"model": args.model, "size": args.size, "fps": args.fps,
                               "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        # Baseline: the camera read directly (network + server encoder + our decoder).
        results["baseline_direct"] = _summary(_receive(
            cam.url, None, args.seconds,
            {"rtsp_transport": "tcp", "fflags": "nobuffer", "flags": "low_delay"}))

        # Through the pipeline into a recording: capture -> pipeline input -> written.
        results.update(_recorded(cam, engine, args))

        # Through the pipeline, restreamed to UDP and decoded by a receiver.
        port = _free_port(socket.SOCK_DGRAM)
        received: list[float] = []
        rx = threading.Thread(target=lambda: received.extend(_receive(
            f"udp://127.0.0.1:{port}?timeout=5000000&fifo_size=100000&overrun_nonfatal=1", "mpegts",
            args.seconds + 4, {"flags": "low_delay"})), daemon=True)
        rx.start()
        time.sleep(0.5)
        cancel = CancelToken()
        opts = LiveOptions(input=LiveInputConfig(max_latency=args.max_latency, timeout=3.0))
        run = threading.Thread(target=process_live, args=(cam.url, f"udp://127.0.0.1:{port}", engine, opts, cancel),
                               kwargs={"name": "cam"}, daemon=True)
        run.start()
        rx.join(args.seconds + 30)
        cancel.cancel("done")
        run.join(30)
        results["glass_to_glass_restream_receiver"] = _summary(received)

        # Reconnect time after a server restart.
        results["reconnects"] = _reconnects(cam, engine, args.restarts)
    finally:
        cam.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def _recorded(cam: _Camera, engine: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Record for ``args.seconds``; per written frame: the capture time (barcode, read back
    from the file), the arrival at the pipeline and the write time (the source's trace)."""
    import tempfile

    import av

    from pipeline.live.job import CameraState, LiveOptions, process_live
    from pipeline.live.source import LiveInputConfig
    from pipeline.live.stats import LiveStats
    from pipeline.signals import CancelToken

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/rec.mkv"
        cancel = CancelToken()
        state = CameraState("cam", LiveStats("cam"))
        opts = LiveOptions(input=LiveInputConfig(max_latency=args.max_latency, timeout=3.0))
        run = threading.Thread(target=process_live, args=(cam.url, out, engine, opts, cancel),
                               kwargs={"name": "cam", "state": state}, daemon=True)
        run.start()
        while state.source is None:
            time.sleep(0.001)
        state.source.trace = trace = []
        time.sleep(args.seconds)
        cancel.cancel("done")
        run.join(30)
        snap = state.snapshot()
        by_ms = {}
        with av.open(out) as c:
            stream = c.streams.video[0]
            for frame in c.decode(stream):
                by_ms[round(float(frame.pts * frame.time_base) * 1000)] = read_stamp(frame.to_ndarray(format="rgb24"))
    tb = state.source.info.time_base if state.source and state.source.info else None
    upstream, added, total = [], [], []
    for pts, arrival, written in trace[5:]:  # leave out the start-up frames
        captured = by_ms.get(round(float(pts * tb) * 1000)) if tb else None
        added.append(written - arrival)
        if captured is not None:
            upstream.append(arrival - captured)
            total.append(written - captured)
    return {"camera_to_pipeline_input": _summary(upstream),
            "added_by_pipeline": _summary(added),
            "glass_to_glass_recording": _summary(total),
            "pipeline_fps_in": snap["fps_in_avg"], "pipeline_fps_out": snap["fps_out_avg"],
            "pipeline_dropped": snap["dropped"], "pipeline_frames_out": snap["frames_out"]}


def _reconnects(cam: _Camera, engine: Any, restarts: int) -> list[dict[str, float]]:
    from pipeline.live.job import CameraState, LiveOptions, process_live
    from pipeline.live.source import LiveInputConfig
    from pipeline.live.stats import LiveStats
    from pipeline.signals import CancelToken
    import tempfile

    out: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cancel = CancelToken()
        state = CameraState("cam", LiveStats("cam"))
        opts = LiveOptions(input=LiveInputConfig(timeout=3.0))
        run = threading.Thread(target=process_live, args=(cam.url, f"{tmp}/rec.mkv", engine, opts, cancel),
                               kwargs={"name": "cam", "state": state}, daemon=True)
        run.start()
        stats = state.stats

        def wait(cond: Any, timeout: float) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if cond():
                    return True
                time.sleep(0.01)
            return False

        wait(lambda: stats.frames_in > 25, 30)
        for i in range(restarts):
            cam.stop()
            killed = time.monotonic()
            wait(lambda: stats.state == "reconnecting", 20)
            detected = time.monotonic() - killed
            time.sleep(1.0)
            cam.start()
            before = stats.reconnect_count
            wait(lambda: stats.reconnect_count > before, 60)
            back = time.monotonic()
            out.append({"loss_detected_after_s": round(detected, 3),
                        "server_ready_to_first_frame_s": round(back - cam.ready_at, 3),
                        "downtime_s": round(stats.reconnects[-1].downtime_s or -1, 3)})
            wait(lambda: False, 2.0)
        cancel.cancel("done")
        run.join(30)
    return out


if __name__ == "__main__":
    sys.exit(main())
