"""Bad input: one-line errors with exit code 2, or (recoverable damage) a warning with a
count and a complete output, exit 0. Never a traceback, never a leftover file."""
from __future__ import annotations

from pathlib import Path

import pytest

from media import (audio_only, make_clip, not_media, partial_files, run_cli, summarize,  # noqa: F401
                   tiny_checkpoint, truncate, unsupported_codec)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("derain-video: error: ")
    return lines[0]


@pytest.mark.parametrize("kind,needle", [
    ("missing", "input not found"),
    ("not_media", "is not a readable video"),
    ("audio_only", "has no video stream (audio)"),
    ("unsupported", "cannot decode"),
    ("truncated_mp4", "is not a readable video"),  # index (moov) at the end was cut off
])
def test_unusable_input_gives_one_line_error_and_exit_2(tmp_path: Path, tiny_checkpoint: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        kind: str, needle: str) -> None:
    src = tmp_path / "in.mp4"
    if kind == "not_media":
        not_media(src)
    elif kind == "audio_only":
        src = audio_only(tmp_path / "in.m4a")
    elif kind == "unsupported":
        src = unsupported_codec(tmp_path / "in.mkv")
    elif kind == "truncated_mp4":
        clip = make_clip(tmp_path / "full.mp4", frames=30, audio=True)
        truncate(clip.path, src, 0.6)
    out = tmp_path / "out.mp4"
    capsys.readouterr()
    assert run_cli(tiny_checkpoint, src, out) == 2
    assert needle in _one_error_line(capsys.readouterr().err)
    assert not out.exists() and not partial_files(tmp_path)


def test_corrupt_packets_mid_file_are_counted_and_skipped(tmp_path: Path, tiny_checkpoint: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "bad.mkv", frames=40, corrupt=[10, 20], audio=True,
                     video_options={"g": "12"})
    decodable = summarize(clip.path).frames
    assert 30 <= decodable < 40  # the damage is real
    out = tmp_path / "out.mkv"
    assert run_cli(tiny_checkpoint, clip.path, out) == 0
    err = capsys.readouterr().err
    assert f"{40 - decodable} of 40 video packets could not be decoded" in err
    assert "Traceback" not in err
    result = summarize(out)
    assert result.frames == decodable  # every decodable frame
    assert result.decode_errors == 0
    assert result.of_type("audio")[0].packets == clip.audio_packets


@pytest.mark.parametrize("name,faststart", [("cut.mkv", False), ("cut.mp4", True)])
def test_truncated_file_is_processed_to_its_end_with_a_warning(tmp_path: Path, tiny_checkpoint: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               name: str, faststart: bool) -> None:
    clip = make_clip(tmp_path / f"full{Path(name).suffix}", frames=60, audio=True, faststart=faststart)
    cut = truncate(clip.path, tmp_path / name, 0.6)
    available = summarize(cut).frames
    assert 0 < available < 60
    out = tmp_path / f"out{Path(name).suffix}"
    assert run_cli(tiny_checkpoint, cut, out) == 0
    err = capsys.readouterr().err
    assert "input ended early" in err and "Traceback" not in err
    result = summarize(out)  # complete and playable
    assert result.frames == available
    assert result.frame_pts == summarize(cut).frame_pts
    assert result.of_type("audio")[0].packets > 0
    assert not partial_files(tmp_path)
