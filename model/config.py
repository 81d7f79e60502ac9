"""Configuration of the iterative ResLSTM deraining network and its named presets.

One :class:`DerainConfig` describes every variant of the network: the paper's
reference model (``paper``) and the cheaper video presets. Nothing in ``model/``
hard-codes a channel count, a number of stages or a device; it all comes from here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

WAVELETS = ("stationary", "decimated")


@dataclass(frozen=True)
class DerainConfig:
    """Hyper-parameters that fully determine the network's architecture.

    Attributes:
        features: feature channels ``n`` (the paper uses 32).
        stages: number of iterative stages (the paper uses 3).
        blocks: ResLSTM blocks in each stage's consecutive ResLSTM (paper: 4).
        steps: unrolled LSTM steps inside each ResLSTM, shared weights (paper: 3).
        residue_blocks: ResLSTM blocks in each residue branch (paper: 1).
        wavelet: ``"stationary"`` (undecimated Haar, full resolution, the paper) or
            ``"decimated"`` (orthogonal Haar DWT, features at half resolution, ~4x cheaper).
        se_reduction: squeeze-and-excitation reduction inside residual blocks (paper: 1).
        fusion_reduction: squeeze-and-excitation reduction in the fusion module (paper: 8).
        input_skip: add the input's wavelet coefficients to every stage's predicted
            coefficients (a global residual). The paper has none (``False``); with it a
            freshly initialised network starts as the identity, which makes short training
            budgets (CPU, video presets) converge far faster. Adds no parameters.
    """

    features: int = 32
    stages: int = 3
    blocks: int = 4
    steps: int = 3
    residue_blocks: int = 1
    wavelet: str = "stationary"
    se_reduction: int = 1
    fusion_reduction: int = 8
    input_skip: bool = False

    def __post_init__(self) -> None:
        if self.wavelet not in WAVELETS:
            raise ValueError(f"wavelet must be one of {WAVELETS}, got {self.wavelet!r}")
        for name in ("features", "stages", "blocks", "steps", "se_reduction", "fusion_reduction"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.residue_blocks < 0:
            raise ValueError("residue_blocks must be >= 0")
        if self.features % 2:
            raise ValueError("features must be even (the stems use features/2 channels)")
        if self.features % self.fusion_reduction or self.features % self.se_reduction:
            raise ValueError("features must be divisible by the SE reductions")

    @property
    def scale(self) -> int:
        """Spatial down-sampling of the feature maps relative to the image (1 or 2)."""
        return 1 if self.wavelet == "stationary" else 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DerainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**dict(data))


#: Named presets. ``paper`` is the published network (2,154,356 parameters).
PRESETS: dict[str, DerainConfig] = {
    # The network of Park, Park & Eom (2024), exactly.
    "paper": DerainConfig(),
    # Same design, cheaper: half-resolution wavelet domain, 2 stages, 2 blocks, 2 steps.
    "small": DerainConfig(features=32, stages=2, blocks=2, steps=2, wavelet="decimated",
                          input_skip=True),
    # The default video preset: decimated Haar, 24 channels, 2 stages, 1 ResLSTM of 2 steps.
    "video": DerainConfig(features=24, stages=2, blocks=1, steps=2, wavelet="decimated",
                          input_skip=True),
    # Fastest: 16 channels, 2 stages, one ResLSTM step, no LSTM in the residue branches.
    "tiny": DerainConfig(features=16, stages=2, blocks=1, steps=1, residue_blocks=0,
                         wavelet="decimated", input_skip=True),
}


def resolve_config(spec: "str | DerainConfig | Mapping[str, Any]") -> DerainConfig:
    """Turn a preset name, a mapping or a config into a :class:`DerainConfig`."""
    if isinstance(spec, DerainConfig):
        return spec
    if isinstance(spec, str):
        try:
            return PRESETS[spec]
        except KeyError:
            raise ValueError(f"unknown preset {spec!r}; known presets: {', '.join(PRESETS)}") from None
    return DerainConfig.from_dict(spec)
