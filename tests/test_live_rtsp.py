"""Live cameras against a real RTSP server (Debian's gst-rtsp-server serving a moving test
pattern on 127.0.0.1): reading, reconnection, stall and timeout detection, bounded latency,
segments, restreaming, several cameras, credentials, audio."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import model
from live_support import RtspCamera, SilentServer, UdpReceiver, free_port, requires_rtsp
from media import TINY_CONFIG, summarize
from pipeline.engine import Engine
from pipeline.errors import InputError
from pipeline.live.cameras import Camera, camera_exit_code, run_cameras
from pipeline.live.job import CameraState, LiveOptions, process_live
from pipeline.live.source import LiveInputConfig, SourceLost
from pipeline.live.stats import LiveStats
from pipeline.signals import CancelToken

pytestmark = [requires_rtsp, pytest.mark.rtsp, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def engine() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: one core for the network
    yield Engine(model.build(TINY_CONFIG), "cpu")
    torch.set_num_threads(threads)


@pytest.fixture()
def camera() -> Any:
    cam = RtspCamera().start()
    yield cam
    cam.stop()


def options(**input_config: Any) -> LiveOptions:
    extra = {k: input_config.pop(k) for k in ("segment_time", "batch") if k in input_config}
    input_config.setdefault("timeout", 3.0)
    input_config.setdefault("reconnect_delay", 0.2)
    input_config.setdefault("reconnect_delay_max", 1.0)
    return LiveOptions(input=LiveInputConfig(**input_config), **extra)


class LiveRun:
    """process_live in a thread, stopped like SIGINT stops it."""

    def __init__(self, url: str, output: "str | Path", engine: Any, opts: LiveOptions) -> None:
        self.cancel = CancelToken()
        self.state = CameraState("cam", LiveStats("cam"))
        self.result: Any = None
        self.error: BaseException | None = None
        self._args = (url, str(output), engine, opts)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = process_live(*self._args, self.cancel, name="cam", state=self.state)
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            self.error = exc

    @property
    def stats(self) -> LiveStats:
        return self.state.stats

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.thread.is_alive():
                raise AssertionError(f"the run ended before {what}: {self.error}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s: {self.stats.status_line()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.cancel.cancel("test stop")
        self.thread.join(30)
        assert not self.thread.is_alive(), "the live run did not stop"


def increasing(values: list[int]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def test_reads_frames_into_a_playable_file(camera: RtspCamera, engine: Any, tmp_path: Path) -> None:
    out = tmp_path / "cam.mkv"
    state = CameraState("cam", LiveStats("cam"))
    result = process_live(camera.url, str(out), engine, options(frames=20), name="cam", state=state)
    assert result.stopped_by == "--frames reached" and result.files == [str(out)]
    media = summarize(out)
    assert (media.width, media.height) == (160, 120)
    assert len(media.frame_pts) == 20 and media.frame_pts[0] == 0 and increasing(media.frame_pts)
    snap = state.snapshot()
    assert snap["live"] is True and snap["frames_out"] == 20 and snap["reconnects"] == 0
    assert snap["encoder"]["options"]["tune"] == "zerolatency"
    assert 0 < snap["latency"]["p50_s"] <= snap["latency"]["max_s"] < 5


def test_reconnects_after_the_server_restarts(camera: RtspCamera, engine: Any, tmp_path: Path) -> None:
    out = tmp_path / "cam.mkv"
    run = LiveRun(camera.url, out, engine, options())
    run.wait_for(lambda: run.stats.frames_out >= 10, 30, "first frames")
    camera.stop()
    stopped = time.monotonic()
    run.wait_for(lambda: run.stats.state == "reconnecting", 15, "loss detected")
    time.sleep(1.0)
    camera.start()
    before = run.stats.frames_out
    run.wait_for(lambda: run.stats.reconnect_count >= 1 and run.stats.frames_out >= before + 10, 30,
                 "reconnection")
    run.stop()
    assert run.error is None, run.error
    snap = run.state.snapshot()
    loss = snap["reconnect_log"][0]
    assert "ended" in loss["cause"] or "closed" in loss["cause"]
    assert 0 < loss["downtime_s"] < 25 and loss["attempts"] >= 1
    media = summarize(out)
    pts = media.frame_pts
    assert len(pts) == snap["frames_out"] and increasing(pts)
    # The outage shows as a gap of about the time the camera was away (>= 1 s), no more
    # than the whole test took.
    gaps = [(b - a) * float(media.frame_time_base) for a, b in zip(pts, pts[1:])]
    assert 1.0 <= max(gaps) <= time.monotonic() - stopped + 1


def test_a_server_that_never_answers_times_out(engine: Any, tmp_path: Path) -> None:
    server = SilentServer()
    out = tmp_path / "never.mkv"
    url = f"rtsp://127.0.0.1:{server.port}/cam"
    try:
        started = time.monotonic()
        with pytest.raises(InputError, match="no answer within 1s") as first:
            process_live(url, str(out), engine, options(timeout=1.0), name="cam")
        assert time.monotonic() - started < 8 and server.accepted == 1
        assert first.value.exit_code == 2  # unusable at start: not retried by default
        started = time.monotonic()
        with pytest.raises(SourceLost, match="gave up after 1 reconnection attempt") as err:
            process_live(url, str(out), engine, options(timeout=1.0, max_reconnects=1, wait=True), name="cam")
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert server.accepted >= 3  # the first try and one reconnection
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert "no answer within 1s" in str(err.value)
    assert err.value.exit_code == 4
    assert not out.exists()


def test_a_stalled_camera_is_caught_by_the_watchdog(camera: RtspCamera, engine: Any, tmp_path: Path) -> None:
    run = LiveRun(camera.url, tmp_path / "cam.mkv", engine, options(timeout=1.0))
    run.wait_for(lambda: run.stats.frames_out >= 5, 30, "first frames")
    camera.command("stall")  # the session stays open (RTCP flows), media stops
    run.wait_for(lambda: bool(run.stats.reconnects), 15, "stall detection")
    assert "no video frame" in run.stats.reconnects[0].cause
    camera.command("resume")
    run.wait_for(lambda: run.stats.reconnect_count >= 1, 30, "recovery")
    run.stop()
    assert run.error is None, run.error


class SlowEngine(Engine):
    """The real network plus a fixed delay per batch: inference slower than the camera."""

    delay = 0.12

    def infer(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return super().infer(frames)


def test_live_mode_drops_stale_frames_and_bounds_latency(camera: RtspCamera, tmp_path: Path) -> None:
    slow = SlowEngine(model.build(TINY_CONFIG), "cpu")
    bound = 0.8
    run = LiveRun(camera.url, tmp_path / "live.mkv", slow, options(max_latency=bound))
    run.wait_for(lambda: run.stats.frames_out >= 25, 60, "25 frames")
    run.stop()
    snap = run.state.snapshot()
    assert snap["dropped"] > 0 and snap["frames_in"] > snap["frames_out"]
    assert snap["latency"]["p95_s"] < bound, snap["latency"]
    assert snap["latency"]["max_s"] < 2 * bound, snap["latency"]
    # Without live mode every frame is kept, one after the other.
    state = CameraState("cam", LiveStats("cam"))
    process_live(camera.url, str(tmp_path / "all.mkv"), slow, options(live=False, frames=12), name="cam",
                 state=state)
    assert state.snapshot()["dropped"] == 0
    media = summarize(tmp_path / "all.mkv")
    steps = {b - a for a, b in zip(media.frame_pts, media.frame_pts[1:])}
    assert len(media.frame_pts) == 12 and steps == {40}  # 25 fps in milliseconds: no gap


def test_segments_are_separate_playable_files(camera: RtspCamera, engine: Any, tmp_path: Path) -> None:
    state = CameraState("cam", LiveStats("cam"))
    result = process_live(camera.url, str(tmp_path / "seg.mkv"), engine,
                          options(segment_time=1.0, duration=3.5), name="cam", state=state)
    assert len(result.files) >= 3, result.files
    total = 0
    for path in result.files:
        assert Path(path).name.startswith("seg-") and path.endswith(".mkv")
        media = summarize(path)
        assert media.frame_pts and media.frame_pts[0] == 0 and increasing(media.frame_pts)
        assert media.frame_pts[-1] * media.frame_time_base < 1.01
        total += len(media.frame_pts)
    assert total == state.stats.frames_out
    assert state.snapshot()["segments"] == result.files


def test_restream_to_udp_is_received(engine: Any, tmp_path: Path) -> None:
    cam = RtspCamera("--stamp", size="320x240").start()
    receiver = UdpReceiver(frames=10, timeout=40).start()
    try:
        time.sleep(0.5)
        run = LiveRun(cam.url, receiver.url, engine, options())
        receiver.join()
        run.stop()
    finally:
        cam.stop()
    assert run.error is None, run.error
    assert receiver.error is None, receiver.error
    assert len(receiver.frames) >= 10
    from benchmarks.live_latency import read_stamp
    delays = []
    for _, width, height, rgb in receiver.frames:
        assert (width, height) == (320, 240)
        captured = read_stamp(rgb)
        assert captured is not None  # the identity network keeps the camera's clock readable
        delays.append(time.time() - captured)
    assert 0 < min(delays) < 5


def test_two_cameras_share_one_network_and_fail_alone(camera: RtspCamera, engine: Any, tmp_path: Path) -> None:
    cams = [Camera("front", camera.url, str(tmp_path / "front.mkv")),
            Camera("back", camera.url, str(tmp_path / "back.mkv")),
            Camera("gone", f"rtsp://127.0.0.1:{free_port()}/cam", str(tmp_path / "gone.mkv"))]
    states = run_cameras(cams, engine, options(frames=15, max_reconnects=1, wait=True), CancelToken(),
                         status_interval=0, stats_json=str(tmp_path / "stats.json"))
    by_name = {s.name: s for s in states}
    for name in ("front", "back"):
        assert by_name[name].error is None
        assert len(summarize(tmp_path / f"{name}.mkv").frame_pts) == 15
    assert isinstance(by_name["gone"].error, SourceLost)
    assert camera_exit_code(states) == 4
    import json
    data = json.loads((tmp_path / "stats.json").read_text())
    assert [c["name"] for c in data["cameras"]] == ["front", "back", "gone"]
    assert data["cameras"][2]["exit_code"] == 4 and data["frames_out"] == 30
    for c in data["cameras"][:2]:
        assert {"fps_in", "fps_out", "latency", "dropped", "reconnects"} <= set(c)


def test_credentials_are_used_and_never_logged(engine: Any, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    cam = RtspCamera(user="op", password="s3cr3t-pw").start()
    caplog.set_level(logging.DEBUG)
    try:
        url = cam.url.replace("rtsp://", "rtsp://op:s3cr3t-pw@")
        state = CameraState("cam", LiveStats("cam"))
        result = process_live(url, str(tmp_path / "ok.mkv"), engine, options(frames=5), state=state)
        assert "s3cr3t" not in result.input and "op:***@" in result.input
        started = time.monotonic()
        with pytest.raises(InputError, match="401|[Uu]nauthori") as err:
            # Unlimited reconnects, yet a wrong password fails at once: retrying cannot fix it.
            process_live(url.replace("s3cr3t-pw", "wrong-pw"), str(tmp_path / "bad.mkv"), engine, options())
        assert time.monotonic() - started < 15
        assert "wrong-pw" not in str(err.value)
    finally:
        cam.stop()
    assert "s3cr3t" not in caplog.text and "wrong-pw" not in caplog.text
    assert "s3cr3t" not in str(state.snapshot())


def test_camera_audio_is_copied(engine: Any, tmp_path: Path) -> None:
    cam = RtspCamera("--audio").start()
    try:
        out = tmp_path / "av.mkv"
        process_live(cam.url, str(out), engine, options(frames=40), name="cam")
    finally:
        cam.stop()
    media = summarize(out)
    audio = [s for s in media.streams if s.type == "audio"]
    assert len(audio) == 1 and audio[0].codec == "aac" and audio[0].packets > 5
    video_end = media.frame_pts[-1] * float(media.frame_time_base)
    assert audio[0].first_pts is not None and audio[0].first_pts * float(audio[0].time_base) < video_end
