"""The derain-video command line: options, exit codes, safe output, folders, stats, signals."""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import model
from media import (cli_subprocess, make_clip, not_media, partial_files, run_cli,  # noqa: F401
                   summarize, tiny_checkpoint)
from pipeline.errors import Cancelled
from pipeline.factory import make_engine
from pipeline.job import JobOptions, process_file
from pipeline.signals import CancelToken


def test_help_documents_options_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(None, "--help") == 0
    text = capsys.readouterr().out
    for option in ("--model", "--device", "--precision", "--batch", "--tile", "--tile-overlap", "--codec",
                   "--crf", "--preset", "--pix-fmt", "--start", "--duration", "--frames", "--compare",
                   "--stats-json", "--overwrite", "--keep-partial", "-q", "-v"):
        assert option in text
    for code in ("0 ", "1 ", "2 ", "3 ", "130", "143"):
        assert f"\n  {code}" in text
    assert "odd frame sizes" in text and "yuv444p" in text


def test_usage_errors_exit_2(tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--duration", "1", "--frames", "3") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--batch", "0") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--start", "abc") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--codec", "nosuchcodec") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--preset", "warp9") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "-x", "nosuchoption=1") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.unknownext") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--tile", "32", "--tile-overlap", "16") == 2
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--start", "5") == 2  # clip is 0.12 s
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "o.mp4", "--precision", "fp16") == 2  # not on CPU
    err = capsys.readouterr().err
    assert "past the end" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("o.*")) and not partial_files(tmp_path)


def test_model_errors_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / "out.mp4"
    if not model.available_models()[model.DEFAULT_MODEL]:  # the shipped default is not trained yet
        capsys.readouterr()
        assert run_cli(None, clip.path, out) == 3
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no trained weights ship" in err
    assert run_cli(not_media(tmp_path / "broken.pt"), clip.path, out) == 3
    assert run_cli(tmp_path / "missing.pt", clip.path, out) == 3
    assert run_cli("no-such-preset", clip.path, out) == 3
    assert not out.exists()


def test_existing_output_needs_overwrite_and_input_is_never_the_output(
        tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=4, audio=True)
    original = clip.path.read_bytes()
    assert run_cli(tiny_checkpoint, clip.path, clip.path, "--overwrite") == 2
    link = tmp_path / "link.mp4"
    link.symlink_to(clip.path)
    assert run_cli(tiny_checkpoint, clip.path, link, "--overwrite") == 2
    assert run_cli(tiny_checkpoint, link, tmp_path / "." / "in.mp4", "--overwrite") == 2
    assert clip.path.read_bytes() == original

    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    capsys.readouterr()
    assert run_cli(tiny_checkpoint, clip.path, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert run_cli(tiny_checkpoint, clip.path, out, "--overwrite") == 0
    assert summarize(out).frames == 4
    assert not partial_files(tmp_path)


def test_cancel_mid_run_leaves_old_output_or_partial_file(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Atomic write: a run stopped halfway leaves the target as it was (no temp file); with
    keep_partial it becomes a playable file of the frames done."""
    clip = make_clip(tmp_path / "in.mkv", width=64, height=48, frames=120, audio=True)
    engine = make_engine(model.load(tiny_checkpoint), device="cpu")
    out = tmp_path / "out.mkv"
    out.write_bytes(b"old result")

    def cancel_after(frames: int) -> tuple[CancelToken, object]:
        token = CancelToken()

        def watch(runner: object) -> None:
            def poll() -> None:
                while not token.is_set():
                    if getattr(runner, "frames_out") >= frames:
                        token.cancel("test cancel")
                    time.sleep(0.001)
            threading.Thread(target=poll, daemon=True).start()
        return token, watch

    token, watch = cancel_after(10)
    with pytest.raises(Cancelled, match="was not written"):
        process_file(clip.path, out, engine, JobOptions(overwrite=True), token, on_runner=watch)
    assert out.read_bytes() == b"old result"
    assert not partial_files(tmp_path)

    token, watch = cancel_after(10)
    with pytest.raises(Cancelled, match="kept the first"):
        process_file(clip.path, out, engine, JobOptions(overwrite=True, keep_partial=True), token,
                     on_runner=watch)
    partial = summarize(out)
    assert 10 <= partial.frames < 120
    assert partial.frame_pts == summarize(clip.path).frame_pts[:partial.frames]
    assert partial.of_type("audio")[0].packets > 0
    assert not partial_files(tmp_path)


def test_stats_json_reports_stages_queues_and_encoder(tmp_path: Path, tiny_checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=12, audio=True)
    stats_path = tmp_path / "stats.json"
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "out.mp4", "--stats-json", stats_path,
                   "--batch", "3") == 0
    stats = json.loads(stats_path.read_text())
    assert stats["frames_in"] == stats["frames_out"] == 12
    assert stats["fps"] > 0 and stats["wall_s"] > 0
    assert stats["dropped"] == 0
    assert set(stats["stages"]) == {"decode", "infer", "encode"}
    for stage in stats["stages"].values():
        assert {"busy_s", "wait_in_s", "wait_out_s"} <= set(stage)
    for queue in stats["queues"].values():
        assert {"put_wait_s", "get_wait_s", "max_frames", "capacity_frames"} <= set(queue)
    assert stats["encoder"]["name"] == "libx264"
    assert stats["device"] == "cpu" and stats["backend"] and stats["batch"] == 3
    assert stats["packets_copied_by_stream"] == {"1": clip.audio_packets}


def test_folder_of_videos_processes_each_and_reports_failures(tmp_path: Path, tiny_checkpoint: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_clip(src / "a.mp4", frames=3, audio=True)
    make_clip(src / "b.mkv", frames=4)
    make_clip(src / "c.mkv", frames=2).path.rename(src / "c.video")  # unknown extension: probed
    (src / "notes.txt").write_text("not a video")
    stats_path = tmp_path / "stats.json"
    assert run_cli(tiny_checkpoint, src, dst, "--stats-json", stats_path) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["a.mp4", "b.mkv", "c.mkv"]
    assert [summarize(dst / n).frames for n in ("a.mp4", "b.mkv", "c.mkv")] == [3, 4, 2]
    assert json.loads(stats_path.read_text())["frames_out"] == 9

    not_media(src / "d.mp4")  # one bad file: the others still run, the exit code says so
    capsys.readouterr()
    assert run_cli(tiny_checkpoint, src, dst, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "d.mp4" in err and "Traceback" not in err
    assert (dst / "a.mp4").exists() and not (dst / "d.mp4").exists()
    (tmp_path / "plain.mp4").write_bytes(b"x")
    assert run_cli(tiny_checkpoint, src, tmp_path / "plain.mp4") == 2  # folder input needs a folder output


def test_url_passwords_never_reach_errors_or_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from pipeline.cli import _setup_logging, _teardown_logging
    from pipeline.errors import InputError
    from pipeline.source import VideoSource

    url = "rtsp://admin:s3cret-pw@127.0.0.1:9/stream"  # nothing listens on port 9
    with pytest.raises(InputError) as info:
        VideoSource(url, timeout=5).open()
    assert "s3cret-pw" not in str(info.value) and "admin:***@127.0.0.1:9" in str(info.value)
    handler = _setup_logging(quiet=False, verbose=True)
    try:
        logging.getLogger("pipeline.test").warning("reconnecting to %s", url)
    finally:
        _teardown_logging(handler)
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err and "rtsp://admin:***@127.0.0.1:9/stream" in err


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 s of video with audio: long enough to be interrupted mid-run."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", width=160, height=96, frames=600,
                     audio=True, video_options={"preset": "ultrafast"}).path


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_run_leaves_no_file(tmp_path: Path, tiny_checkpoint: Path, long_clip: Path,
                                          sig: int, code: int) -> None:
    _interrupt(tmp_path, tiny_checkpoint, long_clip, sig, code, keep_partial=False)


def test_sigint_with_keep_partial_leaves_a_playable_file(tmp_path: Path, tiny_checkpoint: Path,
                                                         long_clip: Path) -> None:
    out = _interrupt(tmp_path, tiny_checkpoint, long_clip, signal.SIGINT, 130, keep_partial=True)
    result = summarize(out)
    assert 0 < result.frames < 600
    assert result.frame_pts == summarize(long_clip).frame_pts[:result.frames]
    assert result.of_type("audio")[0].packets > 0


def _interrupt(tmp_path: Path, checkpoint: Path, clip: Path, sig: int, code: int, keep_partial: bool) -> Path:
    out = tmp_path / "out.mp4"
    # Lossless frames are large, so FFmpeg's 32 KB write buffer fills after a few frames.
    args = ["--model", checkpoint, "--device", "cpu", "--preset", "ultrafast", "--crf", "0", clip, out]
    proc = cli_subprocess(*args, *(["--keep-partial"] if keep_partial else []),
                          stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # the start line: the run is set up and encoding
            if " -> " in line:
                break
        while time.monotonic() < deadline:  # encoded video has reached the file
            parts = partial_files(tmp_path)
            if parts and parts[0].stat().st_size > 4096:  # past the header: a 32 KB buffer flushed
                break
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.01)
        proc.send_signal(sig)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.startswith("derain-video: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not partial_files(tmp_path)
    assert out.exists() == keep_partial
    return out
