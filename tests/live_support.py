"""Helpers for the live-camera tests: a real RTSP camera (tests/servers/rtsp_camera.py under
Debian's gst-rtsp-server), free ports, a TCP server that accepts and never answers, and a
receiver for restreamed MPEG-TS over UDP::

    from live_support import RtspCamera, free_port, requires_rtsp, SilentServer, UdpReceiver
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = REPO / "tests" / "servers" / "rtsp_camera.py"


def _rtsp_available() -> str | None:
    """None when the RTSP camera can run here, else why not."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                              "from gi.repository import GstRtspServer"],
        capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return ("Debian's gst-rtsp-server is not installed for /usr/bin/python3 (apt-get install "
                "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-ugly gstreamer1.0-rtsp)")
    return None


_REASON = _rtsp_available()
#: Marks a test that needs the real RTSP camera; skips with the reason where it cannot run.
requires_rtsp = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                break
            if chunk == b"\n":
                return buf.decode()
            buf += chunk
        elif proc.poll() is not None:
            break
    raise RuntimeError(f"the RTSP camera did not answer within {timeout}s (got {buf!r})")


class RtspCamera:
    """The test camera as a child process; ``start()``/``stop()`` may be repeated (same port)."""

    def __init__(self, *options: str, size: str = "160x120", fps: int = 25, port: int | None = None,
                 path: str = "/cam", user: str | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.path = path
        self.args = ["--port", str(self.port), "--path", path, "--size", size, "--fps", str(fps), *options]
        if user:
            self.args += ["--user", user, "--password", password or ""]
        self.proc: subprocess.Popen | None = None
        self.ready_at = 0.0

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self) -> "RtspCamera":
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(3):  # the port may still be held for a moment after a restart
            line = _readline(self.proc, 30)
            if line.startswith("READY"):
                self.ready_at = time.monotonic()
                return self
            self.stop()
            time.sleep(0.5)
            self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), *self.args], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        raise RuntimeError(f"the RTSP camera did not start: {line}")

    def command(self, word: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{word}\n".encode())
        self.proc.stdin.flush()
        line = _readline(self.proc, 10)
        assert line == f"OK {word}", line

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self.proc = None


class SilentServer:
    """A TCP server that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.clients: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            self.clients.append(conn)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        for c in self.clients:
            c.close()
        self.sock.close()


class UdpReceiver:
    """Reads MPEG-TS from ``udp://127.0.0.1:PORT`` in a thread and keeps the decoded frames'
    (pts, width, height, rgb) until ``frames`` were read or ``timeout`` passes."""

    def __init__(self, frames: int, timeout: float = 30.0) -> None:
        self.port = free_port(socket.SOCK_DGRAM)
        self.wanted = frames
        self.timeout = timeout
        self.frames: list[tuple[int | None, int, int, Any]] = []
        self.error: BaseException | None = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def start(self) -> "UdpReceiver":
        self.thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            url = f"{self.url}?timeout=2000000&overrun_nonfatal=1&fifo_size=100000"
            self.opened.set()
            with av.open(url, format="mpegts", timeout=self.timeout,
                         options={"probesize": "2000000", "analyzeduration": "2000000"}) as c:
                for frame in c.decode(video=0):
                    self.frames.append((frame.pts, frame.width, frame.height, frame.to_ndarray(format="rgb24")))
                    if len(self.frames) >= self.wanted or time.monotonic() > deadline:
                        break
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc

    def join(self) -> None:
        self.thread.join(self.timeout + 5)
