"""``load()``: the one way to get a ready network from a preset name or a checkpoint path.

Shipped weights live in ``model/weights/<preset>.pt`` (package data). ``load("tiny")``
returns the shipped ``tiny`` network; ``load("path/to/file.pt")`` a trained checkpoint;
``load()`` the default model. ``build()`` makes an untrained network for training.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import CheckpointError, network_from_checkpoint, read_checkpoint
from .config import PRESETS, DerainConfig, resolve_config
from .network import IterativeDerainNet

WEIGHTS_DIR = Path(__file__).with_name("weights")
#: The shipped default, chosen by measurement (see model/weights/MODEL_CARD.md).
DEFAULT_MODEL = "tiny"


def shipped_weights(preset: str) -> Path:
    """Path where the shipped checkpoint of ``preset`` lives (it may not exist)."""
    return WEIGHTS_DIR / f"{preset}.pt"


def available_models() -> dict[str, bool]:
    """Preset name -> whether trained weights ship with the package."""
    return {name: shipped_weights(name).is_file() for name in PRESETS}


def build(config: "str | DerainConfig | Mapping[str, Any]" = "paper") -> IterativeDerainNet:
    """A freshly initialised (untrained) network for a preset name, config or config dict."""
    return IterativeDerainNet(resolve_config(config))


def load(spec: "str | os.PathLike[str] | None" = None, map_location: str = "cpu") -> IterativeDerainNet:
    """A trained network in eval mode, from a preset name with shipped weights or a checkpoint path.

    Raises :class:`CheckpointError` with a one-line reason when that is impossible.
    """
    spec = DEFAULT_MODEL if spec is None else spec
    text = os.fspath(spec)
    if text in PRESETS:
        path = shipped_weights(text)
        if not path.is_file():
            shipped = [name for name, ok in available_models().items() if ok]
            raise CheckpointError(
                f"no trained weights ship for preset {text!r} (shipped: {', '.join(shipped) or 'none'}); "
                "pass a checkpoint path, or train one with derain-train")
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise CheckpointError(f"model {text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file")
    data = read_checkpoint(path, map_location=map_location)
    net = network_from_checkpoint(data, source=str(path))
    net.checkpoint_meta = dict(data.get("meta", {}))  # type: ignore[attr-defined]
    net.checkpoint_path = str(path)  # type: ignore[attr-defined]
    return net.eval()
