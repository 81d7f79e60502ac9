"""Small parts of the video pipeline: bounded queues, time parsing, URL redaction, sizes,
encoder choice, atomic output."""
from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from pipeline.encoders import EncoderSettings, encoder_options, pick_encoder, pixel_format
from pipeline.errors import UsageError
from pipeline.frames import encoded_size
from pipeline.output import AtomicOutput, check_output
from pipeline.progress import progress_wanted
from pipeline.queues import TIMEOUT, FrameQueue, Stopped
from pipeline.util import parse_time, redact_url


def test_frame_queue_counts_frames_and_lets_packets_through() -> None:
    q = FrameQueue("q", capacity=2, stop=lambda: False)
    q.put("f1", is_frame=True)
    q.put("f2", is_frame=True)
    for i in range(10):
        q.put(f"p{i}")  # packets never wait for a frame slot
    assert q.frames == 2 and len(q) == 12
    blocked = threading.Event()

    def producer() -> None:
        q.put("f3", is_frame=True)  # blocks until a frame leaves
        blocked.set()

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.2)
    assert not blocked.is_set()
    assert q.get() == "f1"
    thread.join(2)
    assert blocked.is_set() and q.frames == 2 and q.max_frames == 2
    assert q.put_wait_s > 0.1
    assert [q.get() for _ in range(12)][-1] == "f3"
    assert q.get(timeout=0.05) is TIMEOUT


def test_frame_queue_stops_blocked_callers() -> None:
    stop = threading.Event()
    q = FrameQueue("q", capacity=1, stop=stop.is_set)
    q.put("f", is_frame=True)
    errors: list[BaseException] = []

    def blocked_put() -> None:
        try:
            q.put("g", is_frame=True)
        except Stopped as exc:
            errors.append(exc)

    thread = threading.Thread(target=blocked_put)
    thread.start()
    stop.set()
    thread.join(2)
    assert not thread.is_alive() and len(errors) == 1
    q.get()
    with pytest.raises(Stopped):
        q.get()


def test_item_cap_bounds_packets_too() -> None:
    q = FrameQueue("q", capacity=1, stop=lambda: False, max_items=4)
    for i in range(4):
        q.put(i)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (q.put(99), done.set()))
    thread.start()
    time.sleep(0.1)
    assert not done.is_set()
    q.get()
    thread.join(2)
    assert done.is_set()


@pytest.mark.parametrize("text,seconds", [("12", 12), ("1.5", Fraction(3, 2)), ("1:02.5", Fraction(125, 2)),
                                          ("01:00:00.25", Fraction(14401, 4)), ("0", 0)])
def test_parse_time(text: str, seconds: Fraction) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-1", "1:2:3:4", "1:-5"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize("text,expected", [
    ("rtsp://admin:s3cret@cam.local:554/stream1", "rtsp://admin:***@cam.local:554/stream1"),
    ("rtsp://admin:p@ss:w0rd@10.0.0.2/live", "rtsp://admin:***@10.0.0.2/live"),
    ("cannot open rtsp://u:pw@h/a: timeout", "cannot open rtsp://u:***@h/a: timeout"),
    ("http://h/x.m3u8?token=abc&x=1", "http://h/x.m3u8?token=***&x=1"),
    ("rtsp://viewer@cam/stream", "rtsp://viewer@cam/stream"),
    ("/videos/a:b@c.mp4", "/videos/a:b@c.mp4"),
])
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert "s3cret" not in redact_url(text) and "w0rd" not in redact_url(text)


def test_encoded_size_pads_only_subsampled_dimensions() -> None:
    assert encoded_size(65, 49, "yuv420p") == (66, 50)
    assert encoded_size(65, 49, "yuv422p") == (66, 49)
    assert encoded_size(65, 49, "yuv444p") == (65, 49)
    assert encoded_size(64, 48, "yuv420p") == (64, 48)


def test_encoder_choice_falls_back_to_libx264_and_maps_quality() -> None:
    assert pick_encoder("auto") == "libx264"  # no NVIDIA GPU here; on one it is h264_nvenc
    assert pick_encoder("libx265") == "libx265"
    with pytest.raises(UsageError):
        pick_encoder("no-such-encoder")
    assert encoder_options("libx264", EncoderSettings()) == {"crf": "18", "preset": "medium"}
    assert encoder_options("libx264", EncoderSettings(crf=23.5, preset="fast"))["crf"] == "23.5"
    assert encoder_options("h264_nvenc", EncoderSettings(crf=21)) == {"rc": "vbr", "cq": "21", "b": "0",
                                                                        "preset": "p5"}
    assert pixel_format("libx264", None) == "yuv420p"
    with pytest.raises(UsageError):
        pixel_format("libx264", "rgb48le")


def test_atomic_output_commits_or_discards(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    first = AtomicOutput(target)
    assert first.temp.parent == tmp_path and first.temp.name.endswith(".partial.mp4")
    first.temp.write_bytes(b"done")
    first.commit()
    assert target.read_bytes() == b"done" and not first.temp.exists()
    second = AtomicOutput(target)
    second.temp.write_bytes(b"half")
    second.discard()
    assert target.read_bytes() == b"done" and not second.temp.exists()
    with pytest.raises(UsageError, match="already exists"):
        check_output(None, target, overwrite=False)
    with pytest.raises(UsageError, match="is the input"):
        check_output(target, tmp_path / "sub" / ".." / "out.mp4", overwrite=True)
    with pytest.raises(UsageError, match="folder does not exist"):
        check_output(None, tmp_path / "missing" / "x.mp4", overwrite=False)


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bar_only_on_a_terminal_and_never_quiet() -> None:
    assert progress_wanted(False, _Stream(True))  # type: ignore[arg-type]
    assert not progress_wanted(True, _Stream(True))  # type: ignore[arg-type]
    assert not progress_wanted(False, _Stream(False))  # type: ignore[arg-type]
