"""Training and scoring: paired data sets, rain synthesis, metrics, ``derain-train``, ``derain-eval``.

``train`` knows data and optimisation; it gets networks from :mod:`model` and writes normal
derain-video checkpoints (``model.load()`` reads them).

* :mod:`train.metrics` -- PSNR/SSIM on the MATLAB Y channel (the papers' protocol), torch SSIM;
* :mod:`train.datasets` -- layouts (PReNet, MPRNet, Rain1400, video frame pairs), patch stream;
* :mod:`train.synthesis` -- rain streaks on clean images and videos;
* :mod:`train.render` -- ``python -m train.render``: rainy/clean pair folders from clean images or videos;
* :mod:`train.trainer` / :mod:`train.cli` -- the training loop and ``derain-train``;
* :mod:`train.scoring` / :mod:`train.evaluate` -- scoring a network on pairs, ``derain-eval``.
"""
import os as _os

# OpenMP threads that spin while waiting make PyTorch 10-30x slower on a CPU shared with other
# work (measured on the project's 2-core machine); waiting passively costs little when idle.
# It must be set before torch loads, which is the case for derain-train / derain-eval.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .datasets import PairedSet, find_paired_sets, load_paired_set  # noqa: E402
from .images import DataError, read_rgb, write_rgb  # noqa: E402
from .metrics import Score, psnr, rgb_to_y, score_pair, ssim, ssim_torch  # noqa: E402
from .synthesis import (RainField, RainParams, RainSynthesizer, add_rain,  # noqa: E402
                        params_for_strength, render_video)

__all__ = ["PairedSet", "find_paired_sets", "load_paired_set", "DataError", "read_rgb", "write_rgb", "Score",
           "psnr", "rgb_to_y", "score_pair", "ssim", "ssim_torch", "RainField", "RainParams", "RainSynthesizer",
           "add_rain", "params_for_strength", "render_video"]
