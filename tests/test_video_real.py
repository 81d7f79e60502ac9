"""The real 1080p rainy clips of ../shared/data/real-rain-video, end to end with audio."""
from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from media import run_cli, summarize, tiny_checkpoint  # noqa: F401 (fixture)


@pytest.mark.slow
@pytest.mark.parametrize("name,frames", [("clip1.mp4", 19), ("clip2.mp4", 47)])
def test_real_1080p_clip_end_to_end_with_audio(tmp_path: Path, shared_data: Path, tiny_checkpoint: Path,
                                               name: str, frames: int) -> None:
    src = shared_data / "real-rain-video" / name
    if not src.is_file():
        pytest.skip(f"{src} not found")
    out = tmp_path / name
    stats = tmp_path / "stats.json"
    # The whole clip, with the cheapest network and encoder settings (the test is about the
    # pipeline, not the picture quality): batch 1 keeps 1080p memory small.
    assert run_cli(tiny_checkpoint, src, out, "--batch", "1", "--preset", "ultrafast",
                   "--stats-json", stats) == 0
    a, b = summarize(src), summarize(out)
    assert a.frames == frames and b.frames == frames
    assert (b.width, b.height) == (1920, 1080)
    assert b.frame_pts == a.frame_pts and b.frame_time_base == a.frame_time_base
    assert b.average_rate == a.average_rate == 25
    assert (b.color_range, b.colorspace, b.color_primaries, b.color_trc) == \
        (a.color_range, a.colorspace, a.color_primaries, a.color_trc)
    (ain,), (aout,) = a.of_type("audio"), b.of_type("audio")
    assert aout.codec == "aac" and aout.packets == ain.packets and aout.bytes == ain.bytes
    assert aout.packet_pts == ain.packet_pts
    assert b.video.duration == pytest.approx(a.video.duration, abs=1e-9)
    with av.open(str(src)) as i, av.open(str(out)) as o:
        assert o.duration == pytest.approx(i.duration, abs=1000)
    report = json.loads(stats.read_text())
    assert report["frames_out"] == frames and report["dropped"] == 0
