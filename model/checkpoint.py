"""Checkpoint file format, saving and safe loading.

A checkpoint is a ``torch.save``'d dict holding only tensors and plain Python values, so it
loads with ``torch.load(weights_only=True)`` (no arbitrary code runs)::

    {
      "format": "derain-video-checkpoint",
      "format_version": 1,
      "config": {...DerainConfig fields...},
      "state_dict": {...network weights...},
      "meta": {"preset": "video", "version": "0.1.0", "training": {...}, ...},
      # optional, written by the trainer for --resume:
      "training_state": {...optimiser, scheduler, step, RNG...},
    }

Every failure to read one raises :class:`CheckpointError` with a one-line message.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import DerainConfig
from .network import IterativeDerainNet

FORMAT = "derain-video-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe or of another architecture."""


def checkpoint_dict(net: IterativeDerainNet, meta: Mapping[str, Any] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Build the checkpoint dict for ``net`` (weights on CPU)."""
    from . import __version__

    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "state_dict": state,
        "meta": {"version": __version__, **dict(meta or {})},
        **extra,
    }


def atomic_save(obj: Any, path: "str | os.PathLike[str]") -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(net: IterativeDerainNet, path: "str | os.PathLike[str]",
                    meta: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """Write ``net`` (and optional extra entries such as ``training_state``) atomically."""
    return atomic_save(checkpoint_dict(net, meta, **extra), path)


def read_checkpoint(path: "str | os.PathLike[str]", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint dict without building the network."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if any(marker in str(exc) for marker in ("Unsupported global", "Unsupported class", "GLOBAL")):
            raise CheckpointError(
                f"refusing to load {path}: it contains Python objects other than tensors "
                "(possibly malicious); only derain-video checkpoints are accepted") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated)") from None
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a derain-video checkpoint (no '{FORMAT}' header)")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {data.get('format_version')!r}; "
                              f"this derain-video reads version {FORMAT_VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{path} is missing its '{key}' entry")
    return data


def network_from_checkpoint(data: Mapping[str, Any], source: str = "checkpoint") -> IterativeDerainNet:
    """Build the network a checkpoint dict describes and load its weights strictly."""
    try:
        config = DerainConfig.from_dict(data["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source} has an invalid model config: {exc}") from None
    net = IterativeDerainNet(config)
    _load_strict(net, data["state_dict"], source)
    return net


def _load_strict(net: IterativeDerainNet, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the network architecture "
            f"({len(missing)} missing weights, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != own[key].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{source} does not match the network architecture: "
                                  f"{key} has shape {shape}, expected {tuple(own[key].shape)}")
    net.load_state_dict(state)
