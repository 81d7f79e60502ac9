"""Live mode without a network: files and pipes read like a camera (``--live``), or every frame
kept (the default for files and stdin). Runs everywhere (no RTSP server needed)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import model
from media import TINY_CONFIG, make_clip, summarize
from pipeline.engine import Engine
from pipeline.live.job import CameraState, LiveOptions, process_live
from pipeline.live.source import LiveInputConfig, LiveSource
from pipeline.live.stats import LiveStats

pytestmark = pytest.mark.timeout(60)


class SlowEngine(Engine):
    """The real network plus 0.1 s per batch: slower than a 25 fps camera."""

    def infer(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return super().infer(frames)


@pytest.fixture(scope="module")
def slow() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SlowEngine(model.build(TINY_CONFIG), "cpu")
    torch.set_num_threads(threads)


def test_a_file_keeps_every_frame_and_timestamp_by_default(slow: Any, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mkv", frames=12, fps=25)
    state = CameraState("f", LiveStats("f"))
    result = process_live(str(clip.path), str(tmp_path / "out.mkv"), slow, LiveOptions(), state=state)
    assert state.live is False and result.stopped_by == "end of input"
    assert summarize(tmp_path / "out.mkv").frame_pts == summarize(clip.path).frame_pts
    assert state.stats.dropped == 0 and state.stats.frames_out == 12


def test_live_mode_reads_a_file_at_its_frame_rate_and_drops(slow: Any, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mkv", frames=50, fps=25)  # 2 seconds
    state = CameraState("f", LiveStats("f"))
    started = time.monotonic()
    process_live(str(clip.path), str(tmp_path / "out.mkv"), slow,
                 LiveOptions(input=LiveInputConfig(live=True, max_latency=0.5)), state=state)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.8  # paced like a camera, not read as fast as possible
    snap = state.snapshot()
    assert snap["dropped"] > 10 and snap["frames_out"] + snap["dropped"] == 50
    assert snap["latency"]["p95_s"] < 0.5
    out = summarize(tmp_path / "out.mkv").frame_pts
    src = summarize(clip.path).frame_pts
    assert set(out) <= set(src) and out == sorted(out)  # kept frames keep their timestamps


def test_a_live_source_that_cannot_be_read_fails_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mkv"
    bad.write_text("not a video\n" * 100)
    source = LiveSource(str(bad), LiveInputConfig(live=True))
    from pipeline.errors import InputError
    with pytest.raises(InputError, match="not a readable video"):
        source.open()
    source.close()


def test_a_restream_reconnects_when_its_receiver_goes_away(tmp_path: Path) -> None:
    """MPEG-TS over TCP to a receiver that hangs up once: the output is reopened (a new
    connection, starting with a keyframe) and the camera carries on."""
    import io
    import socket
    import threading

    import av

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = Engine(model.build(TINY_CONFIG), "cpu")
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(20)
    port = server.getsockname()[1]
    received: list[bytes] = []

    def receive() -> None:
        try:
            first, _ = server.accept()
            first.recv(4096)
            first.close()  # hang up after the first bytes
            second, _ = server.accept()
            second.settimeout(20)
            data = b""
            while chunk := second.recv(65536):
                data += chunk
            received.append(data)
        except OSError:
            pass

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    clip = make_clip(tmp_path / "in.mkv", frames=100, fps=25)  # 4 seconds, read like a camera
    state = CameraState("f", LiveStats("f"))
    try:
        process_live(str(clip.path), f"tcp://127.0.0.1:{port}", engine,
                     LiveOptions(input=LiveInputConfig(live=True)), state=state)
    finally:
        torch.set_num_threads(threads)
    receiver.join(20)
    server.close()
    snap = state.snapshot()
    assert snap["output_errors"] >= 1 and snap["output_reopens"] >= 1
    assert received and len(received[0]) > 1000
    with av.open(io.BytesIO(received[0]), format="mpegts") as c:
        frames = list(c.decode(video=0))
    assert len(frames) >= 10 and frames[0].key_frame
