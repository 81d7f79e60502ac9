"""Backend selection, fallback, the engine cache and precision, with real backends.

TensorRT is not installed here: its import failure and its CUDA requirement are exercised for
real, and the on-disk engine cache is tested through a real ahead-of-time backend built on
``torch.export`` (same cache code path as TensorRT's). Backends that fail are real backends
registered by these tests, not mocks.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import model
from pipeline import backends
from pipeline.backends import (AOTEngine, BackendSpec, BufferedEngine, FallbackEngine, create_engine,
                               engine_cache_key, register_backend, resolve_cache_dir, state_hash,
                               unregister_backend)

TINY = model.DerainConfig(features=8, stages=2, blocks=1, steps=1, wavelet="decimated", fusion_reduction=4)
LOG = "pipeline.backends"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = model.build(TINY).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    return net


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)


@pytest.fixture
def registered():
    """Register backends for one test and remove them afterwards."""
    names = []

    def add(spec: BackendSpec) -> None:
        register_backend(spec)
        names.append(spec.name)

    yield add
    for name in names:
        unregister_backend(name)


# -- selection -----------------------------------------------------------------------------
def test_auto_on_cpu_runs_eager_and_says_why_the_others_were_skipped(net, frames, caplog):
    with caplog.at_level(logging.INFO, logger=LOG):
        engine = create_engine(net, device="cpu")
    assert engine.name == "eager" and engine.active_backend == "eager"
    assert "inference backend: eager on cpu" in caplog.text
    assert "tensorrt: needs a CUDA device" in caplog.text
    assert "compile: on CPU torch.compile" in caplog.text
    np.testing.assert_array_equal(engine.infer(frames), BufferedEngine(net, "cpu").infer(frames))


def test_tensorrt_asked_for_on_cpu_falls_back_with_a_warning(net, caplog):
    with caplog.at_level(logging.INFO, logger=LOG):
        engine = create_engine(net, device="cpu", backend="tensorrt")
    assert engine.name == "eager"
    assert "backend tensorrt cannot run on cpu: needs a CUDA device; falling back" in caplog.text


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt is installed")
def test_missing_torch_tensorrt_is_reported_and_falls_back(net, registered, caplog):
    # The real TensorRT factory, registered without its availability check, so its import runs.
    register = BackendSpec("tensorrt-unchecked", backends._tensorrt_factory, priority=100)
    registered(register)
    cuda_status = backends._tensorrt_unavailable(torch.device("cuda"))
    assert cuda_status is not None and "torch-tensorrt is not installed" in cuda_status
    with caplog.at_level(logging.WARNING, logger=LOG):
        engine = create_engine(net, device="cpu", backend="tensorrt-unchecked")
    assert engine.name == "eager"
    assert "backend tensorrt-unchecked failed to start (ModuleNotFoundError" in caplog.text


def _broken_factory(net, req, fallback):
    raise RuntimeError("this GPU is on fire")


class BrokenBuildEngine(FallbackEngine):
    """Starts fine, but building an engine for an input shape fails (as a TensorRT build can)."""

    name = "broken-build"
    builds = 0

    def _build(self, x):
        type(self).builds += 1
        raise RuntimeError(f"no tactic for input {tuple(x.shape)}")


def _broken_build_factory(net, req, fallback):
    return BrokenBuildEngine(net, req.device, req.precision, req.tile, req.tile_overlap, fallback=fallback)


def test_backend_that_fails_to_start_falls_back_to_the_next(net, frames, registered, caplog):
    registered(BackendSpec("broken", _broken_factory, priority=100))
    with caplog.at_level(logging.INFO, logger=LOG):
        engine = create_engine(net, device="cpu")  # auto: tries the best-ranked first
    assert engine.name == "eager"
    assert "backend broken failed to start (RuntimeError: this GPU is on fire); falling back to eager" in caplog.text
    assert engine.infer(frames).shape == frames.shape


def test_backend_that_fails_to_build_falls_back_lazily_and_keeps_the_output(net, frames, registered, caplog):
    registered(BackendSpec("broken-build", _broken_build_factory, priority=100))
    BrokenBuildEngine.builds = 0
    engine = create_engine(net, device="cpu", backend="broken-build")
    assert engine.name == "broken-build" and engine.active_backend == "broken-build"
    with caplog.at_level(logging.WARNING, logger=LOG):
        out = [f for f, _ in engine.stream((frames, i) for i in range(3))]
    assert engine.active_backend == "eager"
    assert BrokenBuildEngine.builds == 1  # given up after the first failure, not per batch
    assert "broken-build backend failed to build an engine for input 2x3x16x24" in caplog.text
    assert "falling back to eager" in caplog.text
    assert "broken-build failed" in engine.describe()
    reference = BufferedEngine(net, "cpu").infer(frames)
    for o in out:
        np.testing.assert_array_equal(o, reference)


def test_known_frame_size_builds_at_creation(net, registered, caplog):
    registered(BackendSpec("broken-build", _broken_build_factory, priority=100))
    with caplog.at_level(logging.INFO, logger=LOG):
        engine = create_engine(net, device="cpu", backend="broken-build", frame_size=(16, 24), batch=2)
    assert engine.active_backend == "eager"  # the failure happened before any frame
    assert "[broken-build failed" in caplog.text.splitlines()[-1]


def test_bad_arguments_are_one_line_errors(net):
    with pytest.raises(ValueError, match="unknown backend 'onnx'; choose from auto, tensorrt, compile, eager"):
        create_engine(net, device="cpu", backend="onnx")
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        create_engine(net, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="batch"):
        create_engine(net, device="cpu", batch=0)
    with pytest.raises(ValueError, match="cannot be removed"):
        unregister_backend("eager")


def test_engines_do_not_change_the_callers_network(net):
    before = state_hash(net)
    BufferedEngine(net, "cpu", precision="bf16")
    assert state_hash(net) == before and next(net.parameters()).dtype == torch.float32


# -- engine cache --------------------------------------------------------------------------
BASE_KEY = dict(backend="tensorrt", model_hash="ab" * 32, config=TINY.to_dict(), input_shape=[1, 3, 720, 1280],
                precision="fp16", device="NVIDIA H100 sm_90",
                versions={"torch": "2.13.0", "torch_tensorrt": "2.13.0", "tensorrt": "10.9"})


@pytest.mark.parametrize("field,value", [
    ("backend", "other"), ("model_hash", "cd" * 32), ("config", model.PRESETS["video"].to_dict()),
    ("input_shape", [2, 3, 720, 1280]), ("input_shape", [1, 3, 1080, 1920]), ("precision", "bf16"),
    ("device", "NVIDIA A100 sm_80"), ("versions", {**BASE_KEY["versions"], "tensorrt": "10.10"}),
])
def test_cache_key_depends_on_every_field(field, value):
    key = engine_cache_key(**BASE_KEY)
    assert len(key) == 64 and key == engine_cache_key(**dict(BASE_KEY))
    assert engine_cache_key(**{**BASE_KEY, field: value}) != key


def test_state_hash_follows_the_weights(net):
    copy = model.build(TINY)
    copy.load_state_dict(net.state_dict())
    assert state_hash(copy) == state_hash(net)
    with torch.no_grad():
        next(copy.parameters())[0, 0, 0, 0] += 1e-3
    assert state_hash(copy) != state_hash(net)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(backends.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "derain-video" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_cache_dir() == Path.home() / ".cache" / "derain-video" / "engines"
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


class ExportEngine(AOTEngine):
    """A real ahead-of-time backend: torch.export programs, cached like TensorRT engines."""

    name = "export"
    compiles = 0

    def compile_artifact(self, example):
        type(self).compiles += 1
        self._program = torch.export.export(self.module, (example,))
        return self._program.module()

    def save_artifact(self, compiled, path, example):
        torch.export.save(self._program, str(path))

    def load_artifact(self, path):
        return torch.export.load(str(path)).module()


def _export_factory(net, req, fallback):
    return ExportEngine(net, req.device, req.precision, req.tile, req.tile_overlap, batch=req.batch,
                        cache_dir=req.cache_dir, fallback=fallback)


def test_aot_engine_is_built_once_cached_on_disk_and_reused(net, frames, tmp_path, registered, caplog):
    registered(BackendSpec("export", _export_factory, priority=100))
    ExportEngine.compiles = 0
    reference = BufferedEngine(net, "cpu").infer(frames)
    engine = create_engine(net, device="cpu", backend="export", batch=2, cache_dir=tmp_path)
    out = [f for f, _ in engine.stream([(frames, 0), (frames[:1], 1)])]  # full batch, then a partial one
    np.testing.assert_allclose(out[0], reference, atol=1)
    np.testing.assert_array_equal(out[1], out[0][:1])
    assert ExportEngine.compiles == 1  # the partial batch was padded onto the same engine
    entries = sorted(p.suffix for p in tmp_path.iterdir())
    assert entries == [".ep", ".json"]
    assert (engine.cache.hits, engine.cache.misses) == (0, 1)
    key = engine.cache_key((2, 3, 16, 24))
    assert (tmp_path / f"{key}.ep").is_file()

    again = create_engine(net, device="cpu", backend="export", batch=2, cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger=LOG):
        np.testing.assert_array_equal(again.infer(frames), out[0])
    assert ExportEngine.compiles == 1 and (again.cache.hits, again.cache.misses) == (1, 0)
    assert "engine cache hit" in caplog.text

    (tmp_path / f"{key}.ep").write_bytes(b"not an engine")  # corrupt entry: rebuilt, not fatal
    third = create_engine(net, device="cpu", backend="export", batch=2, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOG):
        np.testing.assert_array_equal(third.infer(frames), out[0])
    assert "is unusable" in caplog.text and ExportEngine.compiles == 2
    assert (tmp_path / f"{key}.ep").stat().st_size > 100

    unhinted = create_engine(net, device="cpu", backend="export", batch=1, cache_dir=tmp_path)
    unhinted.infer(np.concatenate([frames, frames]))  # a batch of 4 first: one build (cached as batch 4)...
    unhinted.infer(frames[:1])  # ...then a partial batch of 1 is padded onto it, not built again
    assert ExportEngine.compiles == 3 and len(unhinted._built) == 1

    other = model.build(TINY)  # other weights: another key, another engine
    other_engine = create_engine(other, device="cpu", backend="export", batch=2, cache_dir=tmp_path)
    assert other_engine.cache_key((2, 3, 16, 24)) != key


def test_unwritable_cache_still_runs(net, frames, tmp_path, registered, caplog):
    registered(BackendSpec("export", _export_factory, priority=100))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    engine = create_engine(net, device="cpu", backend="export", batch=2, cache_dir=blocker / "engines")
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert engine.infer(frames).shape == frames.shape
    assert engine.active_backend == "export" and "could not write engine cache entry" in caplog.text


# -- compile -------------------------------------------------------------------------------
@pytest.mark.slow
def test_compile_backend_on_cpu(frames, tmp_path, monkeypatch):
    """Inductor on CPU with the smallest network (about 30 s of C++ compilation, cold)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    if backends._compile_unavailable(torch.device("cpu")):
        pytest.skip(backends._compile_unavailable(torch.device("cpu")))
    torch.manual_seed(0)
    small = model.build(model.DerainConfig(features=4, stages=1, blocks=1, steps=1, residue_blocks=0,
                                           wavelet="decimated", fusion_reduction=2)).eval()
    for p in small.parameters():
        p.data.normal_(0, 0.1)
    engine = create_engine(small, device="cpu", backend="compile")
    assert engine.name == "compile" and "mode default" in engine.describe()
    out = engine.infer(frames)
    assert engine.active_backend == "compile", engine.describe()
    np.testing.assert_allclose(out, BufferedEngine(small, "cpu").infer(frames), atol=1)


# -- precision -----------------------------------------------------------------------------
#: Lowest accepted PSNR (dB) of a reduced-precision output against the fp32 output.
#: Measured with the network below on a Rain100L crop: bf16 on CPU 53.6 dB.
PRECISION_PSNR_BOUND = 45.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _realistic_net():
    """Shipped ``video`` weights when they exist; else the ``video`` preset with its
    coefficient heads drawn N(0, 0.1), which changes a rainy image by about 28 dB PSNR, in
    the range a trained network changes light rain (an untrained preset is the identity)."""
    if model.available_models().get("video"):
        return model.load("video")
    torch.manual_seed(0)
    net = model.build("video").eval()
    for stage in net.stages:
        torch.nn.init.normal_(stage.head.weight, 0, 0.1)
    return net


def _rainy_image(shared_root: Path | None) -> np.ndarray:
    if shared_root is not None:
        path = shared_root / "Rain100L" / "test" / "rainy" / "rain-001.png"
        if path.is_file():
            return np.ascontiguousarray(cv2.imread(str(path))[:128, :160, ::-1])
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8), (9, 9), 3)
    return np.clip(base.astype(int) + (rng.random((128, 160, 1)) > 0.97) * 80, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def rainy(request):
    try:
        root = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:  # no shared data: a synthetic rainy texture
        root = None
    return _rainy_image(root)[None]


def test_bf16_on_cpu_is_close_to_fp32(rainy):
    net = _realistic_net()
    ref = create_engine(net, device="cpu", backend="eager", precision="fp32").infer(rainy)
    assert psnr(ref, rainy) < 40  # the network really changes the image
    out = create_engine(net, device="cpu", backend="eager", precision="bf16").infer(rainy)
    assert psnr(out, ref) > PRECISION_PSNR_BOUND


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("backend", ["eager", "auto"])
def test_reduced_precision_on_cuda_is_close_to_fp32(rainy, precision, backend, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here)")
    net = _realistic_net()
    ref = create_engine(net, device="cuda", backend="eager", precision="fp32").infer(rainy)
    engine = create_engine(net, device="cuda", backend=backend, precision=precision, cache_dir=tmp_path)
    out = [f for f, _ in engine.stream([(rainy, 0)])][0]
    assert psnr(out, ref) > PRECISION_PSNR_BOUND, engine.describe()


@pytest.mark.cuda
def test_tensorrt_engine_on_cuda_is_cached(net, frames, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here)")
    if importlib.util.find_spec("torch_tensorrt") is None:
        pytest.skip("torch-tensorrt is not installed (pip install 'derain-video[tensorrt]')")
    engine = create_engine(net, device="cuda", backend="tensorrt", precision="fp16", batch=2,
                           cache_dir=tmp_path, frame_size=(16, 24))
    assert engine.active_backend == "tensorrt", engine.describe()
    out = [f for f, _ in engine.stream([(frames, 0), (frames[:1], 1)])]
    assert (engine.cache.hits, engine.cache.misses) == (0, 1) and len(list(tmp_path.glob("*.ep"))) == 1
    again = create_engine(net, device="cuda", backend="tensorrt", precision="fp16", batch=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.infer(frames), out[0])
    assert (again.cache.hits, again.cache.misses) == (1, 0)
    reference = create_engine(net, device="cuda", backend="eager", precision="fp32").infer(frames)
    assert psnr(out[0], reference) > PRECISION_PSNR_BOUND
