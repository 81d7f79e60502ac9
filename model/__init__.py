"""The iterative ResLSTM deraining network (Park, Park & Eom, Neurocomputing 2024).

This package knows tensors only: no files of video, no codecs, no devices chosen for you.

>>> import model
>>> net = model.build("paper")              # untrained, 2,154,356 parameters
>>> net = model.load()                       # the shipped default, ready for inference
>>> derained = model.Derainer(net)(rgb)      # rgb: (N, 3, H, W) float in [0, 1]
"""
from .blocks import ConsecutiveResLSTM, FusionModule, ResidueBranch, ResidueChannel, ResLSTM
from .checkpoint import (CheckpointError, atomic_save, checkpoint_dict, network_from_checkpoint,
                         read_checkpoint, save_checkpoint)
from .config import PRESETS, DerainConfig, resolve_config
from .layers import ConvD, ResidualBlock, SqueezeExcitation
from .network import Derainer, IterativeDerainNet, Stage
from .registry import DEFAULT_MODEL, available_models, build, load, shipped_weights
from .stats import count_parameters, macs_per_pixel
from .tiling import tiled
from .wavelet import (DecimatedHaar, InverseDecimatedHaar, InverseStationaryHaar, StationaryHaar,
                      make_wavelet_pair)

__version__ = "0.1.0"

__all__ = [
    "ConsecutiveResLSTM", "FusionModule", "ResidueBranch", "ResidueChannel", "ResLSTM",
    "CheckpointError", "atomic_save", "checkpoint_dict", "network_from_checkpoint", "read_checkpoint",
    "save_checkpoint", "PRESETS", "DerainConfig", "resolve_config", "ConvD", "ResidualBlock",
    "SqueezeExcitation", "Derainer", "IterativeDerainNet", "Stage", "DEFAULT_MODEL",
    "available_models", "build", "load", "shipped_weights", "count_parameters", "macs_per_pixel",
    "DecimatedHaar", "InverseDecimatedHaar", "InverseStationaryHaar", "StationaryHaar",
    "make_wavelet_pair", "tiled", "__version__",
]
