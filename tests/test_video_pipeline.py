"""derain-video on real encoded clips: every frame, timestamp, packet and tag survives."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from media import make_clip, rainy_frames, run_cli, summarize, tiny_checkpoint  # noqa: F401 (fixture)


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_mp4_frames_timestamps_audio_and_duration_kept(tmp_path: Path, tiny_checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=30, audio=True)
    out = tmp_path / "out.mp4"
    assert run_cli(tiny_checkpoint, clip.path, out) == 0
    a, b = summarize(clip.path), summarize(out)
    assert a.frames == 30 and b.frames == 30
    assert b.frame_pts == a.frame_pts
    assert b.frame_time_base == a.frame_time_base == Fraction(1, 12800)
    assert b.average_rate == a.average_rate == 25
    assert b.video.duration == pytest.approx(a.video.duration, abs=1e-9)
    (ain,), (aout,) = a.of_type("audio"), b.of_type("audio")
    assert aout.codec == "aac"
    assert aout.packets == ain.packets == clip.audio_packets
    assert aout.packet_pts == ain.packet_pts
    assert aout.bytes == ain.bytes  # stream copy: not re-encoded
    assert aout.duration == pytest.approx(ain.duration, abs=1e-9)
    with av.open(str(clip.path)) as i, av.open(str(out)) as o:
        assert o.duration == pytest.approx(i.duration, abs=1000)  # microseconds
    assert not list(tmp_path.glob(".*partial*"))


def test_variable_frame_rate_mkv_with_audio_and_subtitles(tmp_path: Path, tiny_checkpoint: Path) -> None:
    pts = [0, 40, 80, 200, 240, 250, 400, 410, 420, 600, 640, 700, 1000, 1040, 1400, 1450]
    clip = make_clip(tmp_path / "vfr.mkv", frames=len(pts), pts=pts, audio=True, subtitles=True)
    out = tmp_path / "out.mkv"
    assert run_cli(tiny_checkpoint, clip.path, out) == 0
    a, b = summarize(clip.path), summarize(out)
    assert a.frame_pts == pts  # the input really is VFR
    assert b.frame_pts == pts
    assert b.frame_time_base == Fraction(1, 1000)
    for kind in ("audio", "subtitle"):
        (sin,), (sout,) = a.of_type(kind), b.of_type(kind)
        assert sout.packets == sin.packets > 0
        assert sout.packet_pts == sin.packet_pts
        assert sout.bytes == sin.bytes
    assert b.of_type("subtitle")[0].packets == clip.subtitle_packets == 2


def test_mkv_attachment_chapters_and_metadata_kept(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "in.mkv"
    chapters = [{"id": 1, "start": 0, "end": 400, "time_base": Fraction(1, 1000), "metadata": {"title": "Intro"}},
                {"id": 2, "start": 400, "end": 800, "time_base": Fraction(1, 1000), "metadata": {"title": "Rain"}}]
    with av.open(str(src), "w") as container:
        video = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.metadata["title"] = "camera 3"
        container.add_attachment("font.ttf", "application/x-truetype-font", b"\x00\x01font" * 20)
        container.metadata["title"] = "A rainy evening"
        container.set_chapters(chapters)
        for i, rgb in enumerate(rainy_frames(64, 48, 20)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    out = tmp_path / "out.mkv"
    assert run_cli(tiny_checkpoint, src, out) == 0
    with av.open(str(out)) as container:
        assert container.metadata["title"] == "A rainy evening"
        assert [(c["metadata"]["title"], c["start"] * c["time_base"]) for c in container.chapters()] == \
            [("Intro", 0), ("Rain", Fraction(2, 5))]
        (attachment,) = [s for s in container.streams if s.type == "attachment"]
        assert attachment.name == "font.ttf" and attachment.data == b"\x00\x01font" * 20
        assert container.streams.video[0].metadata.get("title") == "camera 3"
    assert summarize(out).frames == 20


def test_mpegts_data_stream_copied(tmp_path: Path, tiny_checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in.ts", frames=20, time_base=Fraction(1, 90000), audio=True, data=True)
    out = tmp_path / "out.ts"
    assert run_cli(tiny_checkpoint, clip.path, out) == 0
    a, b = summarize(clip.path), summarize(out)
    assert b.frame_pts == a.frame_pts and b.frames == 20
    (din,), (dout,) = a.of_type("data"), b.of_type("data")
    assert dout.codec == "klv" and dout.packets == din.packets == clip.data_packets
    assert dout.packet_pts == din.packet_pts
    assert b.of_type("audio")[0].packets == a.of_type("audio")[0].packets


def test_odd_size_padded_for_420_and_exact_for_444(tmp_path: Path, tiny_checkpoint: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "odd.mkv", width=65, height=49, frames=6, pix_fmt="yuv444p", audio=True)
    a = summarize(clip.path, keep_first_frame=True)
    assert (a.width, a.height) == (65, 49)

    padded = tmp_path / "padded.mkv"
    assert run_cli(tiny_checkpoint, clip.path, padded) == 0
    assert "encoded at 66x50" in capsys.readouterr().err
    b = summarize(padded, keep_first_frame=True)
    assert (b.width, b.height, b.pix_fmt) == (66, 50, "yuv420p")
    assert b.frame_pts == a.frame_pts
    assert a.first_frame is not None and b.first_frame is not None
    assert _mean_diff(b.first_frame[:49, :65], a.first_frame) < 4  # same picture, not scaled
    assert _mean_diff(b.first_frame[49, :65], b.first_frame[48, :65]) < 6  # repeated last row

    exact = tmp_path / "exact.mkv"
    assert run_cli(tiny_checkpoint, clip.path, exact, "--pix-fmt", "yuv444p") == 0
    c = summarize(exact)
    assert (c.width, c.height, c.pix_fmt) == (65, 49, "yuv444p")
    assert c.frame_pts == a.frame_pts


PATCHES = [(230, 30, 40), (30, 200, 60), (40, 50, 220), (200, 180, 40)]


def _patch_frames(n: int, width: int = 96, height: int = 64) -> list[np.ndarray]:
    """Four flat colour patches (quadrants): colour conversions show up as shifted means."""
    frame = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    for k, colour in enumerate(PATCHES):
        frame[(k // 2) * h:(k // 2 + 1) * h, (k % 2) * w:(k % 2 + 1) * w] = colour
    return [frame] * n


def _patch_means(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    return np.array([rgb[(k // 2) * h + 8:(k // 2 + 1) * h - 8, (k % 2) * w + 8:(k % 2 + 1) * w - 8]
                     .reshape(-1, 3).mean(0) for k in range(4)])


@pytest.mark.parametrize("colour_range,colorspace", [(2, 1), (1, 6)])  # BT.709 full, BT.601 limited
def test_rotation_and_colour_tags_kept_and_colours_right(tmp_path: Path, tiny_checkpoint: Path,
                                                         colour_range: int, colorspace: int) -> None:
    clip = make_clip(tmp_path / "rot.mp4", frames=4, rotation=90, color_range=colour_range,
                     colorspace=colorspace, color_primaries=colorspace, color_trc=colorspace,
                     content=_patch_frames(4))
    out = tmp_path / "out.mp4"
    assert run_cli(tiny_checkpoint, clip.path, out) == 0
    a, b = summarize(clip.path, keep_first_frame=True), summarize(out, keep_first_frame=True)
    assert a.rotation == 90 and b.rotation == 90
    tags = (colour_range, colorspace, colorspace, colorspace)
    assert (a.color_range, a.colorspace, a.color_primaries, a.color_trc) == tags
    assert (b.color_range, b.colorspace, b.color_primaries, b.color_trc) == tags
    assert a.first_frame is not None and b.first_frame is not None
    # The tiny network is the identity, so a player shows the same colours as for the input
    # (converting with another matrix or range would move them by 5-30 levels).
    assert np.abs(_patch_means(a.first_frame) - np.array(PATCHES)).max() < 6  # lossy input
    assert np.abs(_patch_means(b.first_frame) - _patch_means(a.first_frame)).max() < 1.5


def test_compare_writes_input_and_result_side_by_side(tmp_path: Path, tiny_checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=5, audio=True)
    out = tmp_path / "cmp.mp4"
    assert run_cli(tiny_checkpoint, clip.path, out, "--compare") == 0
    a, b = summarize(clip.path, keep_first_frame=True), summarize(out, keep_first_frame=True)
    assert (b.width, b.height) == (2 * a.width, a.height)
    assert b.frame_pts == a.frame_pts
    assert a.first_frame is not None and b.first_frame is not None
    assert _mean_diff(b.first_frame[:, : a.width], a.first_frame) < 3
    assert _mean_diff(b.first_frame[:, a.width:], a.first_frame) < 3  # identity network
    assert b.of_type("audio")[0].packets == a.of_type("audio")[0].packets


def test_start_and_duration_cut_frame_accurately_and_rebase(tmp_path: Path, tiny_checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=100, audio=True, video_options={"g": "30"})
    out = tmp_path / "cut.mp4"
    assert run_cli(tiny_checkpoint, clip.path, out, "--start", "1", "--duration", "1.2") == 0
    a, b = summarize(clip.path), summarize(out)
    step = 512  # ticks per frame at 1/12800
    assert b.frames == 30
    assert b.frame_pts == [p - 25 * step for p in a.frame_pts[25:55]]  # rebased to 0
    (ain,), (aout,) = a.of_type("audio"), b.of_type("audio")
    kept = [p for p in ain.packet_pts if 1.0 <= p / 48000 < 2.2]
    assert aout.packets == len(kept)
    # MP4 edit lists count in milliseconds: the audio track's start may move by < 1 ms.
    assert [p / 48000 for p in aout.packet_pts] == pytest.approx([p / 48000 - 1 for p in kept], abs=1e-3)
    assert np.diff(aout.packet_pts).tolist() == np.diff(kept).tolist()


def test_frames_limit_stops_audio_with_the_video(tmp_path: Path, tiny_checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in.mkv", frames=50, audio=True)
    out = tmp_path / "cut.mkv"
    assert run_cli(tiny_checkpoint, clip.path, out, "--frames", "7") == 0
    a, b = summarize(clip.path), summarize(out)
    assert b.frame_pts == a.frame_pts[:7]
    audio = b.of_type("audio")[0]
    end = (a.frame_pts[6] + 40) / 1000  # end of the 7th frame (MKV counts in ms)
    assert audio.packets > 0
    assert max(p for p in audio.packet_pts if p is not None) / 1000 < end


def test_ten_second_clip_keeps_frames_in_flight_bounded(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Memory does not grow with length: frames alive between decode and encode stay under a
    bound set by the queues and the batch, for a clip 20x longer than that bound."""
    clip = make_clip(tmp_path / "ten.mkv", width=64, height=48, frames=250, audio=True,
                     video_options={"preset": "ultrafast"})
    stats_path = tmp_path / "stats.json"
    batch, queue = 2, 4
    assert run_cli(tiny_checkpoint, clip.path, tmp_path / "out.mkv", "--batch", batch,
                   "--queue-frames", queue, "--preset", "ultrafast", "--stats-json", stats_path) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["frames_in"] == stats["frames_out"] == 250
    # decode thread (1) + decoded queue + batches in and around the engine + derained queue + encoder (1)
    bound = 1 + queue + 3 * batch + queue + 1
    assert 0 < stats["max_frames_in_flight"] <= bound < 250 // 10
    for q in stats["queues"].values():
        assert q["max_frames"] <= queue
    assert stats["dropped"] == 0
    assert summarize(tmp_path / "out.mkv").frames == 250
