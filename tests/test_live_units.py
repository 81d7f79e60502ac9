"""Live-camera building blocks without a network: input/output classification, FFmpeg options,
backoff, the drop queue, statistics, segment naming, the fair engine lock."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UsageError
from pipeline.live.backoff import Backoff
from pipeline.live.cameras import FairLock, SharedEngine
from pipeline.live.inputs import classify_input, is_permanent, open_options
from pipeline.live.latest import CLOSED, TIMEOUT, DropQueue
from pipeline.live.outputs import classify_output, live_encoder_settings
from pipeline.live.stats import LiveStats, percentile
from pipeline.encoders import EncoderSettings
from pipeline.queues import Stopped


def test_inputs_are_classified() -> None:
    assert classify_input("-").kind == "stdin" and classify_input("-").url == "pipe:0"
    assert classify_input("clip.mp4").kind == "file"
    assert classify_input("file:///tmp/a.mkv").kind == "file"
    for url, proto in [("rtsp://cam/stream", "rtsp"), ("RTMP://h/live/x", "rtmp"), ("srt://h:9000", "srt"),
                       ("udp://@:1234", "udp"), ("https://h/live.m3u8", "https")]:
        spec = classify_input(url)
        assert spec.kind == "network" and spec.protocol == proto and spec.can_reconnect
    assert classify_input("rtsp://cam/x").is_stream_protocol
    assert not classify_input("http://h/file.mp4").is_stream_protocol  # live only without a duration
    secret = classify_input("rtsp://admin:hunter2@10.0.0.5:554/stream")
    assert "hunter2" not in secret.shown and "admin:***@" in secret.shown


def test_open_options_per_protocol() -> None:
    rtsp = open_options(classify_input("rtsp://cam/x"), live=True, timeout=5)
    assert rtsp["rtsp_transport"] == "tcp" and rtsp["timeout"] == "5000000"
    assert rtsp["flags"] == "low_delay" and "fflags" not in rtsp  # nobuffer loses the first keyframe
    assert int(rtsp["analyzeduration"]) <= 1_000_000
    udp = open_options(classify_input("rtsp://cam/x"), live=True, timeout=2.5, transport="udp")
    assert udp["rtsp_transport"] == "udp" and udp["timeout"] == "2500000" and "buffer_size" in udp
    rtmp = open_options(classify_input("rtmp://h/live/x"), live=True, timeout=3)
    assert rtmp["rw_timeout"] == "3000000" and "timeout" not in rtmp  # rtmp's timeout means listen
    assert open_options(classify_input("udp://@:1234"), live=True, timeout=1)["overrun_nonfatal"] == "1"
    http_file = open_options(classify_input("http://h/f.mp4"), live=False, timeout=4)
    assert http_file["reconnect"] == "1" and http_file["rw_timeout"] == "4000000" and "flags" not in http_file
    assert open_options(classify_input("-"), live=False, timeout=4) == {}
    mine = open_options(classify_input("rtsp://cam/x"), live=True, timeout=5, extra={"timeout": "1"})
    assert mine["timeout"] == "1"  # the user's -I options win
    with pytest.raises(ValueError):
        open_options(classify_input("rtsp://cam/x"), live=True, timeout=5, transport="sctp")


def test_permanent_errors() -> None:
    assert is_permanent("cannot open rtsp://cam/x: Server returned 401 Unauthorized (authorization failed)")
    assert is_permanent("cannot open rtsp://cam/x: Server returned 404 Not Found")
    assert is_permanent("cannot open srt://h: Protocol not found")
    assert not is_permanent("cannot open rtsp://cam/x: Connection refused")
    assert not is_permanent("no video frame for 3.5s (watchdog, --timeout 2s)")


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, cap=4.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    j = Backoff(1.0, cap=8.0, jitter=0.1)
    delays = [j.next_delay() for _ in range(5)]
    assert all(0.9 * min(8.0, 2 ** i) <= d <= min(8.0, 1.1 * 2 ** i) for i, d in enumerate(delays))
    with pytest.raises(ValueError):
        Backoff(0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_drop_queue_keeps_every_frame_without_live_mode() -> None:
    q = DropQueue(2, live=False)
    q.put("a", 0.0, True)
    q.put("pkt", 0.0, False)
    q.put("b", 0.0, True)
    stop = threading.Event()
    blocked = DropQueue(1, live=False, stop=stop.is_set, poll=0.01)
    blocked.put("x", 0.0, True)
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):  # full: put waits until stopped
        blocked.put("y", 0.0, True)
    assert [q.get(0)[0] for _ in range(3)] == ["a", "pkt", "b"]
    assert q.get(0.01) is TIMEOUT
    q.close()
    assert q.get(0.01) is CLOSED
    assert q.dropped == 0


def test_drop_queue_live_drops_late_frames_but_never_the_newest() -> None:
    clock = FakeClock()
    q = DropQueue(100, live=True, max_latency=1.0, clock=clock)
    q.set_processing_time(0.2)  # budget: 0.8 s of waiting
    for i in range(10):
        q.put(i, clock.t + i * 0.1, True)  # arrivals 100.0 .. 100.9
    clock.t = 101.55  # frames that arrived before 100.75 are now late
    assert q.get(0)[0] == 8
    assert q.dropped_late == 8
    clock.t = 110.0  # everything is late: the newest still comes out
    assert q.get(0)[0] == 9
    assert q.dropped_late == 8 and q.frames == 0


def test_drop_queue_live_packets_are_not_late() -> None:
    clock = FakeClock()
    q = DropQueue(100, live=True, max_latency=0.5, clock=clock)
    q.put("f0", 100.0, True)
    q.put("audio", 100.0, False)
    q.put("f1", 100.1, True)
    clock.t = 105.0
    assert [q.get(0)[0], q.get(0)[0]] == ["audio", "f1"]
    assert q.dropped_late == 1


def test_drop_queue_live_overflow_drops_oldest() -> None:
    q = DropQueue(3, live=True, max_latency=100.0)
    now = time.monotonic()
    for i in range(5):
        q.put(i, now, True)  # never blocks
    assert q.dropped_overflow == 2
    assert [q.get(0)[0] for _ in range(3)] == [2, 3, 4]


def test_drop_queue_hands_out_the_newest_frame_when_persistently_overloaded() -> None:
    clock = FakeClock()
    q = DropQueue(1000, live=True, max_latency=10.0, clock=clock)
    n = 0
    taken = []
    for _ in range(12):  # camera: a frame every 0.04 s; consumer: one every 0.2 s
        for _ in range(5):
            clock.t += 0.04
            q.put(n, clock.t, True)
            n += 1
        taken.append(q.get(0)[0])
    assert q.overloaded
    # Once overload is detected the consumer gets the newest frame each time.
    assert taken[-1] == n - 1 and taken[-2] == n - 6
    assert q.dropped_late > 30
    # A consumer that catches up (finds the queue empty) leaves overload mode.
    while q.frames:
        q.get(0)
    assert q.get(0) is TIMEOUT and not q.overloaded


def test_percentiles_and_status_line() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)
    s = LiveStats("cam1")
    for latency in (0.1, 0.2, 0.3):
        s.frame_in()
        s.frame_out(latency)
    s.connected()
    s.lost("the stream ended (the server closed it)")
    s.lost("cannot open rtsp://u:secret@h/x: Connection refused")
    assert s.connected() is not None
    snap = s.snapshot()
    assert snap["frames_out"] == 3 and snap["reconnects"] == 1
    assert snap["latency"]["max_s"] == pytest.approx(0.3) and snap["latency"]["p50_s"] == pytest.approx(0.2)
    assert snap["reconnect_log"][0]["attempts"] == 2 and snap["reconnect_log"][0]["downtime_s"] >= 0
    line = s.status_line()
    assert line.startswith("cam1: streaming") and "latency" in line and "reconnects 1" in line
    first = LiveStats("cam2")
    first.lost("Connection refused")  # before any connection: not a reconnect
    first.connected()
    assert first.snapshot()["reconnects"] == 0 and first.snapshot()["failed_first_connections"] == 1


def test_output_classification(tmp_path: Path) -> None:
    rtsp = classify_output("rtsp://u:pw@127.0.0.1:8554/out")
    assert (rtsp.kind, rtsp.format, rtsp.options["rtsp_transport"]) == ("stream", "rtsp", "tcp")
    assert "pw" not in rtsp.shown
    assert classify_output("rtmp://h/live/key").format == "flv"
    udp = classify_output("udp://127.0.0.1:5000")
    assert udp.format == "mpegts" and udp.target.endswith("?pkt_size=1316")
    with pytest.raises(UsageError):
        classify_output("ftp://h/x")
    with pytest.raises(UsageError):
        classify_output("udp://127.0.0.1:5000", segment_time=10)
    mp4 = classify_output(str(tmp_path / "rec.mp4"))
    assert mp4.kind == "file" and "frag_keyframe" in mp4.options["movflags"]
    assert mp4.options["frag_duration"] == "1000000"  # at most ~1 s lost if killed
    mkv = classify_output(str(tmp_path / "rec.mkv")).options
    assert "movflags" not in mkv and mkv["cluster_time_limit"] == "1000" and mkv["flush_packets"] == "1"
    (tmp_path / "exists.mkv").write_bytes(b"x")
    with pytest.raises(UsageError, match="already exists"):
        classify_output(str(tmp_path / "exists.mkv"))
    seg = classify_output(str(tmp_path) + "/", segment_time=60, name="front door")
    assert seg.kind == "segments" and seg.target == str(tmp_path / "front_door-%Y%m%d-%H%M%S.mkv")
    assert classify_output(str(tmp_path / "cam.mp4"), segment_time=5).target.endswith("cam-%Y%m%d-%H%M%S.mp4")
    assert classify_output(str(tmp_path / "c-%H%M.ts"), segment_time=5).target.endswith("c-%H%M.ts")
    with pytest.raises(UsageError, match="does not exist"):
        classify_output(str(tmp_path / "nope" / "c.mkv"), segment_time=5)


def test_live_encoder_defaults_favour_delay() -> None:
    s = live_encoder_settings(EncoderSettings(codec="libx264"), 25.0)
    assert s.options["tune"] == "zerolatency" and s.preset == "veryfast" and s.options["g"] == "50"
    mine = live_encoder_settings(EncoderSettings(codec="libx264", preset="slow", options={"g": "10"}), 25.0)
    assert mine.preset == "slow" and mine.options["g"] == "10"


def test_fair_lock_serves_in_order() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # requests in a known order
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


class _Identity:
    name = "identity"
    device = "cpu"

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return frames.copy()


def test_shared_engine_serialises_calls_from_several_threads() -> None:
    engine = SharedEngine(_Identity())
    assert engine.name == "identity" and engine.device == "cpu"
    batch = np.zeros((1, 4, 4, 3), np.uint8)
    outs: list[int] = []

    def camera(tag: int) -> None:
        for out, t in engine.stream((batch, tag) for _ in range(20)):
            outs.append(t)

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert engine.calls == 60 and sorted(set(outs)) == [0, 1, 2]


class _Sleepy:
    """Takes 50 ms per batch and records when it was busy."""

    def __init__(self) -> None:
        self.busy: list[tuple[float, float]] = []

    def stream(self, items):
        for batch, tag in items:
            start = time.monotonic()
            time.sleep(0.05)
            self.busy.append((start, time.monotonic()))
            yield batch, tag


def test_pacer_hands_out_frames_only_when_the_engine_waits() -> None:
    import queue

    from pipeline.live.pacing import Pacer

    engine = _Sleepy()
    pacer = Pacer(engine, batch=1)
    q: "queue.Queue[object]" = queue.Queue()
    taken: list[float] = []
    done = threading.Event()

    def batches():
        while True:
            item = q.get()
            if item is None:
                return
            yield np.zeros((1, 2, 2, 3), np.uint8), item

    def consume() -> None:
        for _ in pacer.stream(batches()):
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    for i in range(8):  # the camera side: always a fresh frame available
        pacer.wait_turn(lambda: False)
        taken.append(time.monotonic())
        pacer.handed_frame()
        q.put(i)
    q.put(None)
    assert done.wait(5)
    assert pacer.consumed == 8
    # No frame was taken while the engine was busy with another one.
    for t in taken:
        assert not any(start + 0.005 < t < end - 0.005 for start, end in engine.busy)
