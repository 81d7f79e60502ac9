"""One place that turns a network into an inference engine.

When :mod:`pipeline.backends` exists it owns the choice (eager, torch.compile, TensorRT...)
through ``create_engine``; otherwise the eager :class:`~pipeline.engine.Engine` is built
directly. Bad device/precision/tile values become :class:`~pipeline.errors.UsageError`.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from model import IterativeDerainNet

from .engine import Engine
from .errors import PipelineError, UsageError


def backends_module() -> Any | None:
    """:mod:`pipeline.backends` if it is installed (its own import errors propagate)."""
    if importlib.util.find_spec("pipeline.backends") is None:
        return None
    return importlib.import_module("pipeline.backends")


def make_engine(net: IterativeDerainNet, *, device: str = "auto", backend: str = "auto",
                precision: str = "auto", tile: int | None = None, tile_overlap: int = 32,
                batch: int | None = None) -> Engine:
    """An engine for ``net`` with the requested device, backend, precision and tiling
    (``batch``, when given, lets backends that build per batch size build the right one)."""
    module = backends_module()
    try:
        if module is not None and hasattr(module, "create_engine"):
            extra: dict[str, Any] = {}
            if batch is not None and "batch" in inspect.signature(module.create_engine).parameters:
                extra["batch"] = batch
            return module.create_engine(net, device=device, backend=backend, precision=precision,
                                        tile=tile, tile_overlap=tile_overlap, **extra)
        if backend not in ("auto", "eager"):
            raise UsageError(f"backend {backend!r} is not available (this installation has: eager)")
        return Engine(net, device=device, precision=precision, tile=tile, tile_overlap=tile_overlap)
    except ValueError as exc:  # device, precision or tiling the user asked for
        raise UsageError(_first_line(exc)) from None
    except RuntimeError as exc:  # e.g. a CUDA device that cannot be initialised
        raise PipelineError(f"cannot set up the inference engine: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def describe_engine(engine: Any) -> dict[str, str]:
    """Backend, device and precision of an engine, for logs and ``--stats-json``."""
    dtype = getattr(engine, "dtype", None)
    return {"backend": str(getattr(engine, "name", type(engine).__name__)),
            "device": str(getattr(engine, "device", "unknown")),
            "precision": str(dtype).replace("torch.", "") if dtype is not None else "unknown"}
