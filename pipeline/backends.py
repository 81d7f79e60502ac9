"""Inference backends behind one interface, and ``create_engine`` that picks one.

Backends (best first): ``tensorrt`` (torch-tensorrt, dynamo path, a static engine per input
shape and batch, cached on disk), ``compile`` (``torch.compile``; CUDA graphs on CUDA) and
``eager``. Every engine they return is a :class:`BufferedEngine`: the eager
:class:`~pipeline.engine.Engine` interface (``infer``, ``stream``, ``describe``, ``name``) plus
pinned-memory double buffering (:mod:`pipeline.buffers`) in ``stream``/``stream_leased``.

``create_engine(backend="auto")`` takes the best backend that can run on the device and logs
which one runs and why the others were skipped. A backend that fails to start, or to build
its engine for the first input shape, falls back to the next one with a warning instead of
killing the job. New backends (and, in tests, deliberately failing ones) are added with
:func:`register_backend`.

TensorRT engines are cached under ``--engine-cache`` / ``$DERAIN_ENGINE_CACHE`` /
``~/.cache/derain-video/engines``, keyed by the sha256 of the weights, config, input shape,
precision, GPU and library versions (:func:`engine_cache_key`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from model import IterativeDerainNet

from .buffers import Lease, RingStreamer
from .engine import Engine, resolve_device, resolve_precision

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENV = "DERAIN_ENGINE_CACHE"
#: Bump when the way artifacts are built changes, so stale engines are not reused.
CACHE_FORMAT = 1
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- engine cache --------------------------------------------------------------------------
def resolve_cache_dir(cache_dir: "str | os.PathLike[str] | None" = None) -> Path:
    """``cache_dir``, else ``$DERAIN_ENGINE_CACHE``, else ``$XDG_CACHE_HOME`` (default
    ``~/.cache``) ``/derain-video/engines``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "derain-video" / "engines"


def state_hash(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes), hex."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def device_identity(device: torch.device) -> str:
    """What an engine is built for: GPU name and compute capability, or the CPU."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"
    return f"cpu {platform.machine()} {platform.processor()}".strip()


def engine_cache_key(*, backend: str, model_hash: str, config: Mapping[str, Any],
                     input_shape: Sequence[int], precision: str, device: str,
                     versions: Mapping[str, str]) -> str:
    """The cache key of one compiled engine: sha256 (hex) of everything that makes it valid."""
    payload = {
        "format": CACHE_FORMAT, "backend": backend, "model": model_hash, "config": dict(config),
        "input_shape": [int(s) for s in input_shape], "precision": precision, "device": device,
        "versions": dict(versions),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class EngineCache:
    """A directory of compiled engines, one file per key, written atomically.

    :attr:`hits` and :attr:`misses` count lookups. An entry that cannot be loaded (corrupt,
    truncated, built by an incompatible library) is deleted and counts as a miss.
    """

    def __init__(self, directory: "str | os.PathLike[str]") -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def path(self, key: str, suffix: str) -> Path:
        return self.directory / f"{key}{suffix}"

    def load(self, key: str, suffix: str, loader: Callable[[Path], Any]) -> Any | None:
        path = self.path(key, suffix)
        if path.is_file():
            try:
                value = loader(path)
            except Exception as exc:  # a bad entry must not stop the job: rebuild it
                log.warning("cached engine %s is unusable (%s); rebuilding it", path, _one_line(exc))
                path.unlink(missing_ok=True)
            else:
                self.hits += 1
                log.info("engine cache hit: %s", path)
                return value
        self.misses += 1
        return None

    def store(self, key: str, suffix: str, saver: Callable[[Path], None],
              metadata: Mapping[str, Any] | None = None) -> Path | None:
        """Write an entry with ``saver(tmp_path)`` then rename it into place. Failures are
        logged, not raised: an engine that cannot be cached still runs."""
        path = self.path(key, suffix)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp{suffix}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            saver(tmp)
            os.replace(tmp, path)
            if metadata is not None:
                meta_tmp = self.directory / f".{key}.{os.getpid()}.json.tmp"
                meta_tmp.write_text(json.dumps(dict(metadata), indent=1, sort_keys=True))
                os.replace(meta_tmp, self.path(key, ".json"))
        except Exception as exc:
            log.warning("could not write engine cache entry %s (%s); it will be rebuilt next time",
                        path, _one_line(exc))
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return None
        log.info("engine cached: %s", path)
        return path


# -- engines -------------------------------------------------------------------------------
class BufferedEngine(Engine):
    """The eager engine with pinned-memory double buffering in :meth:`stream`.

    ``stream`` yields arrays the caller owns; ``stream_leased`` yields :class:`~pipeline.buffers.Lease`
    objects that view the pinned output buffers (zero copy) and must be released.
    """

    name = "eager"

    def __init__(self, net: IterativeDerainNet, device: "str | torch.device" = "cpu",
                 precision: str = "auto", tile: int | None = None, tile_overlap: int = 32,
                 channels_last: bool = True, *, batch: int = 1, depth: int = 2,
                 spare_outputs: int = 2) -> None:
        super().__init__(net, device, precision, tile, tile_overlap, channels_last)
        self.batch = batch  # expected frames per batch (buffers and AOT engines are sized for it)
        self.depth = depth
        self.spare_outputs = spare_outputs
        self._streamer: RingStreamer | None = None

    @property
    def streamer(self) -> RingStreamer:
        if self._streamer is None:
            self._streamer = RingStreamer(self, self.depth, self.spare_outputs)
        return self._streamer

    @property
    def active_backend(self) -> str:
        """The backend that actually runs the network (differs from ``name`` after a fallback)."""
        return self.name

    @property
    def precision(self) -> str:
        return _DTYPE_NAMES[self.dtype]

    def stream(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[tuple[np.ndarray, T]]:
        """Derain each ``(batch, tag)`` in order, ``depth`` batches in flight on CUDA."""
        return self.streamer.stream(items)

    def stream_leased(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[Lease]:
        """Zero-copy :meth:`stream`: yields leases on the pinned output buffers, in order.
        Release each one (``with lease: encode(lease.frames)``) once it has been read."""
        return self.streamer.leases(items)

    def stage_times(self) -> dict[str, float]:
        """Seconds spent per stage by ``stream`` so far (``copy_in``, ``infer``, ``copy_out``),
        plus ``batches`` and ``frames``."""
        s = self.streamer
        return {**s.stage_seconds, "batches": s.batches, "frames": s.frames}

    @torch.inference_mode()
    def warmup(self, height: int, width: int, batch: int = 1) -> float:
        """Run the network once on a ``batch`` of ``height`` x ``width`` frames so every
        compiled engine it needs is built now. Returns the seconds it took."""
        t0 = time.perf_counter()
        x = torch.zeros(batch, 3, height, width, dtype=self.dtype, device=self.device)
        self.run_tiled(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0


EagerEngine = BufferedEngine


class FallbackEngine(BufferedEngine):
    """An engine that builds a compiled callable per input shape (:meth:`_build`) and, when a
    build fails, hands every later call to the engine ``fallback()`` returns."""

    def __init__(self, net: IterativeDerainNet, device: "str | torch.device" = "cpu",
                 precision: str = "auto", tile: int | None = None, tile_overlap: int = 32,
                 channels_last: bool = True, *, batch: int = 1, depth: int = 2, spare_outputs: int = 2,
                 fallback: "Callable[[], BufferedEngine] | None" = None) -> None:
        super().__init__(net, device, precision, tile, tile_overlap, channels_last,
                         batch=batch, depth=depth, spare_outputs=spare_outputs)
        self._fallback_factory = fallback
        self._fallen: BufferedEngine | None = None
        self.fallback_reason: str | None = None
        self._built: dict[tuple[Any, ...], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.build_seconds: dict[tuple[int, ...], float] = {}

    @property
    def active_backend(self) -> str:
        return self._fallen.active_backend if self._fallen is not None else self.name

    def _build(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def _call(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return fn(x)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        if self._fallen is not None:
            return self._fallen.run(x)
        x = self._prepare(x)
        key = (tuple(x.shape), x.dtype)
        fn = self._built.get(key)
        if fn is not None:
            return self._call(fn, x)
        t0 = time.perf_counter()
        try:
            fn = self._build(x)
            y = self._call(fn, x)  # compilers often build lazily, on the first call
        except Exception as exc:
            return self._fall_back(exc, tuple(x.shape)).run(x)
        self._built[key] = fn
        self.build_seconds[tuple(x.shape)] = seconds = time.perf_counter() - t0
        log.info("%s engine ready for input %s in %.1fs", self.name, "x".join(map(str, x.shape)), seconds)
        return y

    def _fall_back(self, exc: Exception, shape: tuple[int, ...]) -> BufferedEngine:
        if self._fallback_factory is None:
            raise exc
        self.fallback_reason = _one_line(exc)
        self._fallen = self._fallback_factory()
        log.warning("%s backend failed to build an engine for input %s (%s); falling back to %s",
                    self.name, "x".join(map(str, shape)), self.fallback_reason, self._fallen.active_backend)
        self._built.clear()
        return self._fallen

    def describe(self) -> str:
        if self._fallen is not None:
            return f"{self._fallen.describe()} [{self.name} failed: {self.fallback_reason}]"
        return super().describe()


class CompileEngine(FallbackEngine):
    """``torch.compile`` (Inductor). On CUDA the default mode is ``reduce-overhead``, which
    replays CUDA graphs; on CPU Inductor generates C++ (needs a compiler; slow to build)."""

    name = "compile"

    def __init__(self, net: IterativeDerainNet, device: "str | torch.device" = "cpu",
                 precision: str = "auto", tile: int | None = None, tile_overlap: int = 32,
                 *, mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(net, device, precision, tile, tile_overlap, **kwargs)
        if mode is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        self.mode = mode
        self.cuda_graphs = self.device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        self.compiled = torch.compile(self.module, mode=None if mode == "default" else mode, dynamic=False)

    def _build(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.compiled  # specialises (and compiles) per input shape on its first call

    def _call(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        return fn(x)

    def describe(self) -> str:
        text = super().describe()
        return text if self._fallen is not None else f"{text}, mode {self.mode}"


class AOTEngine(FallbackEngine):
    """Ahead-of-time compiled engines: one static artifact per input shape (batch included),
    built once and cached on disk (:class:`EngineCache`). Partial batches are padded up to
    ``batch`` (or the largest batch already built for the frame size) so the end of a clip
    reuses the same engine. Subclasses define how an artifact is compiled, saved and loaded."""

    name = "aot"
    suffix = ".ep"

    def __init__(self, net: IterativeDerainNet, device: "str | torch.device" = "cpu",
                 precision: str = "auto", tile: int | None = None, tile_overlap: int = 32,
                 *, cache_dir: "str | os.PathLike[str] | None" = None, **kwargs: Any) -> None:
        super().__init__(net, device, precision, tile, tile_overlap, channels_last=False, **kwargs)
        self.cache = EngineCache(resolve_cache_dir(cache_dir))
        self.model_hash = state_hash(self.module)

    # subclass interface
    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def compile_artifact(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def save_artifact(self, compiled: Any, path: Path, example: torch.Tensor) -> None:
        raise NotImplementedError

    def load_artifact(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    # cache plumbing
    def key_fields(self, shape: Sequence[int]) -> dict[str, Any]:
        return {"backend": self.name, "model_hash": self.model_hash, "config": self.config.to_dict(),
                "input_shape": list(shape), "precision": self.precision,
                "device": device_identity(self.device), "versions": self.versions()}

    def cache_key(self, shape: Sequence[int]) -> str:
        return engine_cache_key(**self.key_fields(shape))

    def _build(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        fields = self.key_fields(x.shape)
        key = engine_cache_key(**fields)
        loaded = self.cache.load(key, self.suffix, self.load_artifact)
        if loaded is not None:
            return loaded
        log.info("building %s engine for input %s (%s); this is done once per shape and cached in %s",
                 self.name, "x".join(map(str, x.shape)), self.precision, self.cache.directory)
        compiled = self.compile_artifact(x)
        self.cache.store(key, self.suffix, lambda path: self.save_artifact(compiled, path, x),
                         metadata={**fields, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return compiled

    def run(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self._fallen is not None:
            return super().run(x)
        # Pad up to the configured batch, or to the largest batch already built for this frame
        # size (a partial batch at the end of a clip must not cost another engine build).
        built = [k[0][0] for k in self._built if k[0][1:] == tuple(x.shape[1:]) and k[1] == x.dtype]
        target = max([self.batch, *built])
        if n < target:
            pad = x[-1:].expand(target - n, *x.shape[1:])
            return super().run(torch.cat([x, pad]))[:n]
        return super().run(x)


class TensorRTEngine(AOTEngine):
    """torch-tensorrt, dynamo path: a static TensorRT engine per input shape and batch in the
    engine's precision (fp16 by default on CUDA), saved as an ExportedProgram in the cache."""

    name = "tensorrt"
    suffix = ".ep"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import torch_tensorrt  # ImportError -> create_engine falls back

        self._trt = torch_tensorrt
        super().__init__(*args, **kwargs)
        if self.device.type != "cuda":
            raise RuntimeError("TensorRT needs a CUDA device")

    def versions(self) -> dict[str, str]:
        try:
            import tensorrt
            trt_version = str(tensorrt.__version__)
        except Exception:
            trt_version = "unknown"
        return {"torch": torch.__version__, "cuda": str(torch.version.cuda),
                "torch_tensorrt": str(getattr(self._trt, "__version__", "unknown")), "tensorrt": trt_version}

    def compile_artifact(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        trt = self._trt
        return trt.compile(self.module, ir="dynamo",
                           inputs=[trt.Input(shape=tuple(example.shape), dtype=example.dtype)],
                           enabled_precisions={example.dtype})

    def save_artifact(self, compiled: Any, path: Path, example: torch.Tensor) -> None:
        params = inspect.signature(self._trt.save).parameters
        inputs_kw = "arg_inputs" if "arg_inputs" in params else "inputs"
        self._trt.save(compiled, str(path), output_format="exported_program", **{inputs_kw: [example]})

    def load_artifact(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        return torch.export.load(str(path)).module()


# -- registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineRequest:
    """Everything a backend factory needs besides the network."""

    device: torch.device
    precision: str = "auto"
    tile: int | None = None
    tile_overlap: int = 32
    batch: int = 1
    cache_dir: "str | os.PathLike[str] | None" = None
    compile_mode: str | None = None
    depth: int = 2
    spare_outputs: int = 2


Factory = Callable[[IterativeDerainNet, EngineRequest, "Callable[[], BufferedEngine] | None"], BufferedEngine]


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend. ``unavailable(device)`` says why it cannot run there (or None);
    ``auto_skip(device)`` why ``auto`` passes it over although it could be asked for."""

    name: str
    factory: Factory
    priority: int
    unavailable: Callable[[torch.device], str | None] = lambda device: None
    auto_skip: Callable[[torch.device], str | None] = lambda device: None


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    """Add (or replace) a backend."""
    _REGISTRY[spec.name] = spec


def unregister_backend(name: str) -> None:
    if name == "eager":
        raise ValueError("the eager backend is the last resort and cannot be removed")
    _REGISTRY.pop(name, None)


def backend_names() -> list[str]:
    """Registered backends, best first."""
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: -s.priority)]


def backend_status(device: "str | torch.device" = "auto") -> dict[str, str | None]:
    """Backend -> None if it can run on ``device``, else the reason it cannot."""
    dev = resolve_device(device) if isinstance(device, str) else device
    return {name: _REGISTRY[name].unavailable(dev) for name in backend_names()}


def _eager_factory(net: IterativeDerainNet, req: EngineRequest, fallback: Any) -> BufferedEngine:
    return BufferedEngine(net, req.device, req.precision, req.tile, req.tile_overlap, batch=req.batch,
                          depth=req.depth, spare_outputs=req.spare_outputs)


def _compile_factory(net: IterativeDerainNet, req: EngineRequest, fallback: Any) -> BufferedEngine:
    return CompileEngine(net, req.device, req.precision, req.tile, req.tile_overlap, mode=req.compile_mode,
                         batch=req.batch, depth=req.depth, spare_outputs=req.spare_outputs, fallback=fallback)


def _tensorrt_factory(net: IterativeDerainNet, req: EngineRequest, fallback: Any) -> BufferedEngine:
    return TensorRTEngine(net, req.device, req.precision, req.tile, req.tile_overlap, batch=req.batch,
                          cache_dir=req.cache_dir, depth=req.depth, spare_outputs=req.spare_outputs,
                          fallback=fallback)


def _compile_unavailable(device: torch.device) -> str | None:
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python"
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        return None if has_triton() else "Triton is not installed (torch.compile needs it on CUDA)"
    compiler = os.environ.get("CXX") or "g++"
    if not (shutil.which(compiler) or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler found (torch.compile on CPU generates C++)"
    return None


def _compile_auto_skip(device: torch.device) -> str | None:
    if device.type == "cpu":
        return ("on CPU torch.compile spends tens of seconds compiling per input shape for little "
                "gain; ask for it with --backend compile")
    return None


def _tensorrt_unavailable(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "needs a CUDA device"
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch-tensorrt is not installed (pip install 'derain-video[tensorrt]')"
    return None


register_backend(BackendSpec("eager", _eager_factory, priority=0))
register_backend(BackendSpec("compile", _compile_factory, priority=10, unavailable=_compile_unavailable,
                             auto_skip=_compile_auto_skip))
register_backend(BackendSpec("tensorrt", _tensorrt_factory, priority=20, unavailable=_tensorrt_unavailable))


# -- selection -----------------------------------------------------------------------------
def _plan(backend: str, device: torch.device) -> tuple[list[str], list[str]]:
    """The chain of backends to try, and why the others are not in it."""
    if backend != "auto" and backend not in _REGISTRY:
        raise ValueError(f"unknown backend {backend!r}; choose from auto, {', '.join(backend_names())}")
    chain: list[str] = []
    notes: list[str] = []
    requested = _REGISTRY.get(backend)
    for spec in sorted(_REGISTRY.values(), key=lambda s: -s.priority):
        if requested is not None and spec.priority > requested.priority and spec.name != backend:
            notes.append(f"{spec.name}: not requested")
            continue
        reason = (spec.auto_skip(device) if spec.name != backend else None) or spec.unavailable(device)
        if reason is None:
            chain.append(spec.name)
        else:
            notes.append(f"{spec.name}: {reason}")
            if spec.name == backend:
                log.warning("backend %s cannot run on %s: %s; falling back", backend, device, reason)
    if "eager" not in chain:
        chain.append("eager")
    return chain, notes


def _instantiate(net: IterativeDerainNet, req: EngineRequest, chain: list[str]) -> BufferedEngine:
    for i, name in enumerate(chain):
        rest = chain[i + 1:]
        fallback = (lambda rest=rest: _instantiate(net, req, rest)) if rest else None
        try:
            return _REGISTRY[name].factory(net, req, fallback)
        except Exception as exc:
            if not rest:
                raise
            log.warning("backend %s failed to start (%s); falling back to %s", name, _one_line(exc), rest[0])
    raise RuntimeError("no inference backend to try")


def create_engine(net: IterativeDerainNet, device: "str | torch.device" = "auto", backend: str = "auto",
                  precision: str = "auto", tile: int | None = None, tile_overlap: int = 32, batch: int = 1,
                  cache_dir: "str | os.PathLike[str] | None" = None, *,
                  frame_size: tuple[int, int] | None = None, compile_mode: str | None = None,
                  depth: int = 2, spare_outputs: int = 2) -> BufferedEngine:
    """An inference engine for ``net`` on ``device`` with the best (or the requested) backend.

    Args:
        backend: ``auto``, ``tensorrt``, ``compile`` or ``eager`` (or any registered name).
            A backend that cannot run, fails to start or fails to build falls back to the
            next one (ending with ``eager``) with a warning.
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` (CUDA), ``bf16``.
        batch: frames per batch; AOT engines (TensorRT) are built for this batch size.
        cache_dir: where compiled TensorRT engines are kept (see :func:`resolve_cache_dir`).
        frame_size: ``(height, width)`` of the frames, if known: engines are then built now
            (so a build failure falls back before the first frame) rather than on first use.
        compile_mode: ``torch.compile`` mode (default ``reduce-overhead`` on CUDA, which
            uses CUDA graphs; ``max-autotune`` also does, and tunes kernels for longer).
        depth, spare_outputs: batches in flight and extra output buffers for the consumer.

    Raises ``ValueError`` (one line) for an unknown backend, device or precision.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    resolve_precision(precision, dev)  # validate before building anything
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    req = EngineRequest(dev, precision, tile, tile_overlap, batch, cache_dir, compile_mode, depth, spare_outputs)
    chain, notes = _plan(backend, dev)
    engine = _instantiate(net, req, chain)
    if frame_size is not None:
        seconds = engine.warmup(*frame_size, batch=batch)
        log.debug("warm-up for %dx%d took %.1fs", frame_size[1], frame_size[0], seconds)
    fallbacks = chain[chain.index(engine.name) + 1:] if engine.name in chain else []
    log.info("inference backend: %s%s%s", engine.describe(),
             f"; fallbacks: {', '.join(fallbacks)}" if fallbacks else "",
             f"; skipped: {'; '.join(notes)}" if notes else "")
    return engine
