"""Test media and helpers for the video tests (reusable by the RTSP and benchmark tests).

Clips are real encoded media written with PyAV (:func:`make_clip`, from
:mod:`pipeline.synthetic`) and read back completely with :func:`summarize`. This module adds
damaged inputs (truncated, corrupt, unsupported codec, audio only, not media), the tiny
identity network saved as a real checkpoint, and an in-process ``derain-video`` runner::

    from media import make_clip, summarize, run_cli, tiny_checkpoint  # noqa: F401 (fixture)
"""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import model
from pipeline.synthetic import ClipInfo, MediaSummary, make_clip, rainy_frames, summarize

__all__ = ["ClipInfo", "MediaSummary", "make_clip", "rainy_frames", "summarize", "TINY_CONFIG",
           "save_tiny_checkpoint", "tiny_checkpoint", "run_cli", "truncate", "audio_only",
           "not_media", "unsupported_codec", "REPO", "cli_subprocess", "partial_files"]

REPO = Path(__file__).resolve().parents[1]

#: The cheapest network there is. With ``input_skip`` a fresh network is the identity, so
#: tests can check that pictures (and their colours) survive the round trip.
TINY_CONFIG = model.DerainConfig(features=4, stages=1, blocks=1, steps=1, residue_blocks=0,
                                 wavelet="decimated", fusion_reduction=4, input_skip=True)


def save_tiny_checkpoint(path: "str | Path", config: model.DerainConfig = TINY_CONFIG) -> Path:
    """An untrained network of ``config`` saved with :func:`model.save_checkpoint`."""
    return model.save_checkpoint(model.build(config), path, meta={"preset": "test"})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the tiny identity network's checkpoint (one per test session)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def run_cli(checkpoint: "str | Path | None", *args: "str | Path", quiet: bool = True) -> int:
    """``derain-video`` in this process on the CPU with ``checkpoint``; returns the exit code
    (output goes to the test's captured stderr)."""
    from pipeline.cli import main

    argv = ["--device", "cpu"]
    if checkpoint is not None:
        argv += ["--model", str(checkpoint)]
    if quiet:
        argv.append("-q")
    return main(argv + [str(a) for a in args])


def cli_subprocess(*args: "str | Path", **kwargs: object) -> subprocess.Popen:
    """``derain-video ARGS`` as a child process (``python -m pipeline``) from the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, "-m", "pipeline", *[str(a) for a in args]], cwd=REPO,
                            env=env, **kwargs)  # type: ignore[call-overload]


def partial_files(folder: Path) -> list[Path]:
    """Temporary ``.NAME.*.partial.EXT`` files left in ``folder``."""
    return sorted(p for p in folder.iterdir() if ".partial" in p.name)


def truncate(src: Path, dest: Path, fraction: float) -> Path:
    """A copy of ``src`` cut after ``fraction`` of its bytes (a download that stopped)."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An AAC-only .m4a file (a valid media file without a video stream)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        samples = int(48000 * seconds)
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def not_media(path: Path) -> Path:
    """A text file with a video extension."""
    path.write_text("this is not a video\n" * 200)
    return path


def unsupported_codec(path: Path) -> Path:
    """A Matroska file whose video track names a codec FFmpeg does not know (same-length
    CodecID patch, so the file structure stays valid)."""
    tmp = path.with_name(path.stem + ".src.mkv")
    make_clip(tmp, frames=5)
    data = tmp.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QUUXVIDEO/ZZZ"))
    tmp.unlink()
    return path
