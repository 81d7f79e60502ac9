"""The iterative deraining network: stages and the full multi-stage model.

Stage ``k`` (1-based) takes the features of all earlier stages, fuses them with a residue
channel prior (image domain for stage 1, wavelet low-pass domain afterwards), runs a
consecutive ResLSTM and predicts all wavelet coefficients; the image is their inverse
transform. There is no global skip from the input image to the output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConsecutiveResLSTM, ResidueBranch
from .config import DerainConfig, resolve_config
from .layers import ConvD, conv3
from .wavelet import make_wavelet_pair

IMAGE_CHANNELS = 3
COEFF_CHANNELS = 4 * IMAGE_CHANNELS


class Stage(nn.Module):
    """One iteration of the network (stage ``index``, 1-based).

    * input: ``f0`` for stage 1, else ``convd(k*n, n)(cat(x_{k-1}, ..., x_1, f0))``;
    * features: ``x_k = ConsecutiveResLSTM(input, ResidueBranch(prior_image))``;
    * coefficients: ``conv3(n, 12)(x_1)`` for stage 1, else
      ``conv3(n, 12)(convd(k*n, n)(cat(x_k, ..., x_1)))``.
    """

    def __init__(self, index: int, cfg: DerainConfig) -> None:
        super().__init__()
        n = cfg.features
        self.index = index
        self.entry = ConvD(index * n, n) if index > 1 else nn.Identity()
        self.residue_branch = ResidueBranch(n, cfg.steps, cfg.residue_blocks, cfg.se_reduction)
        self.features = ConsecutiveResLSTM(n, cfg.blocks, cfg.steps, cfg.se_reduction, cfg.fusion_reduction)
        self.exit = ConvD(index * n, n) if index > 1 else nn.Identity()
        self.head = conv3(n, COEFF_CHANNELS)

    def forward(self, history: list[torch.Tensor], f0: torch.Tensor,
                prior_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``history`` holds earlier stage features, newest first. Returns (features, coefficients)."""
        x_in = self.entry(torch.cat(history + [f0], dim=1)) if history else f0
        x = self.features(x_in, self.residue_branch(prior_image))
        coeffs = self.head(self.exit(torch.cat([x] + history, dim=1)) if history else x)
        return x, coeffs


class IterativeDerainNet(nn.Module):
    """Iterative image rain removal network with consecutive residual LSTMs.

    ``forward(image)`` returns the derained image (unclamped); ``forward_stages(image)``
    returns every stage's output, final first (for deep supervision in training).
    With ``config.input_skip`` every stage predicts a correction of the input's coefficients.
    Images are ``(N, 3, H, W)`` RGB in [0, 1] of any size: they are padded (replicate) to
    what the wavelet domain needs and cropped back.
    """

    def __init__(self, config: "DerainConfig | str" = "paper") -> None:
        super().__init__()
        self.config = cfg = resolve_config(config)
        n = cfg.features
        self.wavelet, self.inverse_wavelet = make_wavelet_pair(cfg.wavelet, IMAGE_CHANNELS)
        self.stem = nn.Sequential(ConvD(COEFF_CHANNELS, n // 2), ConvD(n // 2, n))
        self.stages = nn.ModuleList([Stage(k, cfg) for k in range(1, cfg.stages + 1)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the weights.

        Without ``input_skip``: the reference initialisation, conv weights N(0, 0.01), biases 0.
        With it: PyTorch's default (Kaiming-uniform) initialisation and zeroed coefficient
        heads, so the untrained network is exactly the identity and gradients reach every layer.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if self.config.input_skip:
                    m.reset_parameters()
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        if self.config.input_skip:
            for stage in self.stages:
                nn.init.zeros_(stage.head.weight)
                nn.init.zeros_(stage.head.bias)

    def _pad(self, image: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = image.shape[-2:]
        s = self.config.scale
        # Feature maps must be at least 2 pixels (reflection padding) and a multiple of s.
        ph = max(-h % s, 2 * s - h)
        pw = max(-w % s, 2 * s - w)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
        return image, h, w

    def forward_stages(self, image: torch.Tensor) -> list[torch.Tensor]:
        image, h, w = self._pad(image)
        w0 = self.wavelet(image)
        f0 = self.stem(w0)
        prior = image if self.config.scale == 1 else F.avg_pool2d(image, self.config.scale)
        history: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for stage in self.stages:
            x, coeffs = stage(history, f0, prior)
            if self.config.input_skip:
                coeffs = coeffs + w0
            history.insert(0, x)
            outputs.insert(0, self.inverse_wavelet(coeffs)[..., :h, :w])
            prior = coeffs[:, :IMAGE_CHANNELS]  # the LL band guides the next stage
        return outputs

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(image)[0]


class Derainer(nn.Module):
    """Inference wrapper: RGB in [0, 1] -> derained RGB clamped to [0, 1]. This is what is
    exported, compiled or handed to TensorRT."""

    def __init__(self, net: IterativeDerainNet) -> None:
        super().__init__()
        self.net = net

    @property
    def config(self) -> DerainConfig:
        return self.net.config

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).clamp(0.0, 1.0)
