"""The network: parameter count, wavelets, residue channel, shapes, export, dtypes."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import model
from model import (DecimatedHaar, InverseDecimatedHaar, InverseStationaryHaar, ResidueChannel,
                   StationaryHaar)

TINY = model.DerainConfig(features=8, stages=2, blocks=1, steps=2, wavelet="stationary", fusion_reduction=4)
TINY_DEC = model.DerainConfig(features=8, stages=3, blocks=1, steps=1, wavelet="decimated", fusion_reduction=4)


def test_paper_parameter_count():
    assert model.count_parameters(model.build("paper")) == 2_154_356


def test_paper_macs_per_pixel_match_the_paper_description():
    # ../shared/docs/paper-model.md: about 5.7 M multiply-adds per pixel.
    assert 5.6e6 < model.macs_per_pixel(model.build("paper"), 32, 32) < 5.8e6


@pytest.mark.parametrize("preset", sorted(model.PRESETS))
def test_every_preset_builds_and_is_cheaper_than_paper(preset):
    net = model.build(preset)
    assert model.count_parameters(net) <= 2_154_356
    assert net.config == model.PRESETS[preset]


def test_input_skip_starts_as_identity():
    net = model.build(dataclasses.replace(TINY_DEC, input_skip=True)).eval()
    x = torch.rand(1, 3, 14, 18)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x, atol=1e-6, rtol=0)
    assert model.count_parameters(net) == model.count_parameters(model.build(TINY_DEC))


def test_haar_buffers_are_not_parameters():
    net = model.build(TINY)
    names = [n for n, _ in net.named_parameters()]
    assert not any("wavelet" in n for n in names)


def test_stationary_haar_agrees_with_pytorch_wavelets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_wavelets.dwt.transform2d import SWTForward
    x = torch.rand(2, 3, 19, 26, dtype=torch.float64).float()
    ref = SWTForward(J=1, wave="haar", mode="zero")(x)[0]
    ref = ref.reshape(2, 3, 4, 19, 26).transpose(1, 2).reshape(2, 12, 19, 26)  # colour-major -> subband-major
    ours = StationaryHaar()(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # The first three channels are the LL band: 2x the 2x2 box mean away from the border.
    box = (x[..., :-1, :-1] + x[..., 1:, :-1] + x[..., :-1, 1:] + x[..., 1:, 1:]) / 2
    torch.testing.assert_close(ours[:, :3, :-1, :-1], box, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 17, 23), (1, 3, 64, 48)])
def test_stationary_haar_perfect_reconstruction(shape):
    x = torch.rand(shape, dtype=torch.float64)
    fwd, inv = StationaryHaar().double(), InverseStationaryHaar().double()
    torch.testing.assert_close(inv(fwd(x)), x, atol=1e-12, rtol=0)


def test_stationary_inverse_is_least_squares():
    # For arbitrary coefficients the inverse gives the image whose transform is closest to them:
    # the residual is orthogonal to the range of the forward transform.
    fwd, inv = StationaryHaar().double(), InverseStationaryHaar().double()
    c = torch.randn(1, 12, 9, 11, dtype=torch.float64)
    x = inv(c).requires_grad_(True)
    loss = ((fwd(x) - c) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().max() < 1e-9


def test_decimated_haar_is_orthogonal_and_invertible():
    x = torch.rand(2, 3, 16, 22, dtype=torch.float64)
    fwd, inv = DecimatedHaar().double(), InverseDecimatedHaar().double()
    c = fwd(x)
    assert c.shape == (2, 12, 8, 11)
    torch.testing.assert_close(inv(c), x, atol=1e-12, rtol=0)
    torch.testing.assert_close((c ** 2).sum(), (x ** 2).sum())


def test_residue_channel_on_a_known_image():
    img = torch.tensor([[[0.2, 0.9]], [[0.5, 0.9]], [[0.8, 0.1]]]).unsqueeze(0)  # 1x3x1x2
    r = ResidueChannel()(img)
    assert r.shape == (1, 3, 1, 2)
    torch.testing.assert_close(r[0, :, 0, 0], torch.full((3,), 0.6))
    torch.testing.assert_close(r[0, :, 0, 1], torch.full((3,), 0.8))
    # Grey (achromatic) rain adds nothing to the residue of a grey-free pixel: invariant to +k on all channels.
    torch.testing.assert_close(ResidueChannel()(img + 0.05), r)


@pytest.mark.parametrize("cfg", [TINY, TINY_DEC], ids=["stationary", "decimated"])
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (17, 23), (32, 31)])
def test_any_input_size_gives_the_same_size(cfg, hw):
    net = model.build(cfg).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        outs = net.forward_stages(x)
        y = model.Derainer(net)(x)
    assert len(outs) == cfg.stages
    assert all(o.shape == x.shape for o in outs)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_batch_items_are_independent():
    net = model.build(TINY_DEC).eval()
    x = torch.rand(3, 3, 20, 18)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1:2], net(x[1:2]), atol=1e-5, rtol=1e-4)


def test_no_hard_coded_32_channels():
    for n in (8, 16, 48):
        net = model.build(model.DerainConfig(features=n, stages=1, blocks=1, steps=1, wavelet="decimated"))
        assert net.stem[1][1].out_channels == n


def test_lstm_state_follows_input_dtype():
    net = model.build(TINY_DEC).eval().to(torch.bfloat16)
    with torch.no_grad():
        y = net(torch.rand(1, 3, 16, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_bf16_and_channels_last_agree_with_fp32():
    torch.manual_seed(0)
    net = model.build(TINY_DEC).eval()
    for p in net.parameters():  # larger weights than the N(0, 0.01) init, so outputs are not ~constant
        p.data.normal_(0, 0.1)
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        ref = net(x)
        cl = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-3)
        bf = net.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    assert (bf - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


@pytest.mark.parametrize("cfg", [TINY, TINY_DEC], ids=["stationary", "decimated"])
def test_torch_export_matches_eager(cfg):
    torch.manual_seed(1)
    net = model.build(cfg).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    inference = model.Derainer(net).eval()
    x = torch.rand(2, 3, 21, 30)
    exported = torch.export.export(inference, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), inference(x), atol=1e-5, rtol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="wavelet"):
        model.DerainConfig(wavelet="db4")
    with pytest.raises(ValueError, match="unknown preset"):
        model.build("huge")
    with pytest.raises(ValueError, match="unknown config keys"):
        model.DerainConfig.from_dict({"features": 8, "colour": 1})
    assert model.DerainConfig.from_dict(model.PRESETS["video"].to_dict()) == model.PRESETS["video"]


@pytest.mark.parametrize("skip", [False, True])
def test_network_learns(skip):
    torch.manual_seed(0)
    net = model.build(dataclasses.replace(TINY_DEC, input_skip=skip))
    opt = torch.optim.Adam(net.parameters(), 5e-3 if skip else 2e-3)
    x = torch.rand(2, 3, 16, 16)
    target = x.clamp(0.2, 0.8)
    losses = []
    for _ in range(40):
        loss = sum(((o - target) ** 2).mean() for o in net.forward_stages(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    if skip:  # starts as the identity: the first loss is the input's own error
        assert losses[0] < 0.02
    assert np.mean(losses[-3:]) < (0.7 if skip else 0.5) * np.mean(losses[:3])
