"""``derain-video`` on live inputs: signals, crash safety, stdin, segments, stats, exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from live_support import RtspCamera, free_port, requires_rtsp
from media import REPO, make_clip, run_cli, summarize, tiny_checkpoint  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def camera() -> Any:
    cam = RtspCamera().start()
    yield cam
    cam.stop()


def child(*args: "str | Path", **kwargs: Any) -> subprocess.Popen:
    """derain-video as a child process (``python -m pipeline``) on one CPU thread (the
    machine is shared), like :func:`media.cli_subprocess`."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, "-m", "pipeline", *[str(a) for a in args]], cwd=REPO, env=env,
                            **kwargs)


def wait_for_stats(path: Path, proc: subprocess.Popen, frames: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"derain-video ended early with {proc.returncode}"
        try:
            data = json.loads(path.read_text())
            if data.get("frames_out", 0) >= frames:
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"fewer than {frames} frames written within {timeout}s")


def increasing(values: list[int]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def test_help_documents_the_live_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(None, "--help") == 0
    text = capsys.readouterr().out
    for option in ("--live", "--no-live", "--max-latency", "--rtsp-transport", "--timeout", "--max-reconnects",
                   "--wait-for-input",
                   "--reconnect-delay-max", "--segment-time", "--status-interval", "--camera", "--input-option"):
        assert option in text
    assert "rtsp://" in text and "%Y%m%d-%H%M%S" in text and "live cameras and streams" in text
    assert "\n  4 " in text or " 4 when" in text


def test_live_usage_errors_exit_2(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    out = str(tmp_path / "o.mkv")
    assert run_cli(tiny_checkpoint, url, out, "--start", "5") == 2
    assert run_cli(tiny_checkpoint, url, "udp://127.0.0.1:5000", "--segment-time", "10") == 2
    assert run_cli(tiny_checkpoint, "--camera", "a", url, out, "--camera", "a", url, out + "2.mkv") == 2
    assert run_cli(tiny_checkpoint, "--camera", "a", url, out, "--camera", "b", url, out) == 2
    assert run_cli(tiny_checkpoint, url, out, "--max-latency", "0") == 2
    assert run_cli(tiny_checkpoint, url, str(tmp_path / "missing" / "o.mkv")) == 2
    assert run_cli(tiny_checkpoint, url) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_unreachable_camera_exits_4_with_one_line(tiny_checkpoint: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = f"rtsp://admin:pw123@127.0.0.1:{free_port()}/cam"
    started = time.monotonic()
    assert run_cli(tiny_checkpoint, url, tmp_path / "o.mkv", "--wait-for-input", "--max-reconnects", "1",
                   "--timeout", "1") == 4
    assert time.monotonic() - started < 20
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "gave up after 1 reconnection attempt" in err[0] and "pw123" not in err[0]
    assert not (tmp_path / "o.mkv").exists()


@requires_rtsp
def test_sigint_finishes_a_live_recording(camera: RtspCamera, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out, stats = tmp_path / "rec.mp4", tmp_path / "stats.json"
    proc = child("--model", tiny_checkpoint, "--device", "cpu", camera.url, out, "--status-interval", "0.5",
                 "--stats-json", stats, stderr=subprocess.PIPE, text=True)
    wait_for_stats(stats, proc, 15)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "out " in err and "fps" in err  # status lines were logged
    final = json.loads(stats.read_text())
    media = summarize(out)
    assert len(media.frame_pts) == final["frames_out"] >= 15 and increasing(media.frame_pts)
    assert final["state"] == "stopped" and final["cameras"][0]["latency"]["max_s"] > 0


@requires_rtsp
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_killed_recording_stays_playable(camera: RtspCamera, tiny_checkpoint: Path, tmp_path: Path,
                                           suffix: str) -> None:
    out, stats = tmp_path / f"rec{suffix}", tmp_path / "stats.json"
    proc = child("--model", tiny_checkpoint, "--device", "cpu", "-q", camera.url, out, "--status-interval", "0.5",
                 "--stats-json", stats, stderr=subprocess.DEVNULL)
    written = wait_for_stats(stats, proc, 50)["frames_out"]  # 2 s of video
    proc.kill()  # SIGKILL: no chance to finish the file
    proc.wait(10)
    media = summarize(out)  # fragmented MP4 / Matroska: readable without its end
    assert len(media.frame_pts) >= written - 30 and increasing(media.frame_pts)  # at most ~1 s lost


def test_stdin_input_keeps_every_frame(tiny_checkpoint: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.ts", width=96, height=64, frames=24)
    out = tmp_path / "out.mkv"
    with open(clip.path, "rb") as stdin:
        proc = child("--model", tiny_checkpoint, "--device", "cpu", "-q", "-", out, stdin=stdin,
                     stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    media = summarize(out)
    assert len(media.frame_pts) == 24 and (media.width, media.height) == (96, 64)


@requires_rtsp
def test_cli_segments_and_stats(camera: RtspCamera, tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    stats = tmp_path / "stats.json"
    code = run_cli(tiny_checkpoint, "--camera", "door", camera.url, f"{folder}/", "--segment-time", "1",
                   "--duration", "2.5", "--stats-json", stats)
    data = json.loads(stats.read_text())
    cam = data["cameras"][0]
    assert code == 0, cam
    files = sorted(folder.iterdir())
    assert len(files) >= 2 and all(f.name.startswith("door-") and f.suffix == ".mkv" for f in files), files
    assert cam["name"] == "door" and sorted(cam["segments"]) == [str(f) for f in files], (cam, files)
    assert {"p50_s", "p95_s", "max_s"} <= set(cam["latency"]) and cam["dropped"] >= 0
    frames = {f.name: len(summarize(f).frame_pts) for f in files}
    assert sum(frames.values()) == cam["frames_out"], (frames, cam)


@requires_rtsp
def test_sigterm_closes_the_current_segment_cleanly(camera: RtspCamera, tiny_checkpoint: Path,
                                                   tmp_path: Path) -> None:
    import av

    folder, stats = tmp_path / "rec", tmp_path / "stats.json"
    folder.mkdir()
    proc = child("--model", tiny_checkpoint, "--device", "cpu", "-q", "--camera", "yard", camera.url, f"{folder}/",
                 "--segment-time", "1", "--status-interval", "0.5", "--stats-json", stats,
                 stderr=subprocess.PIPE, text=True)
    wait_for_stats(stats, proc, 40)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    files = sorted(folder.iterdir(), key=lambda f: f.stat().st_mtime)
    assert len(files) >= 2
    for f in files:  # every segment, the one cut by SIGTERM included, is complete
        with av.open(str(f)) as c:
            assert c.duration is not None and c.duration > 0, f
        assert increasing(summarize(f).frame_pts)
