"""Checkpoint format: round trip, load(), and every bad-checkpoint case."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

import model
from model import CheckpointError

CFG = model.DerainConfig(features=8, stages=2, blocks=1, steps=1, wavelet="decimated", fusion_reduction=4)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(3)
    net = model.build(CFG)
    path = model.save_checkpoint(net, tmp_path / "net.pt", meta={"preset": "custom", "training": {"steps": 7}})
    return net, path


def test_round_trip_restores_weights_config_and_meta(saved):
    net, path = saved
    loaded = model.load(path)
    assert loaded.config == CFG
    assert not loaded.training
    assert loaded.checkpoint_meta["training"] == {"steps": 7}
    assert loaded.checkpoint_meta["version"] == model.__version__
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))


def test_save_is_atomic_and_leaves_no_temp_files(saved, tmp_path):
    _, path = saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]


def test_file_loads_with_weights_only(saved):
    _, path = saved
    data = torch.load(path, weights_only=True)
    assert data["format"] == "derain-video-checkpoint"


def test_missing_file():
    with pytest.raises(CheckpointError, match="neither a preset"):
        model.load("/nonexistent/net.pt")


def test_truncated_checkpoint(saved, tmp_path):
    _, path = saved
    blob = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        model.load(bad)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        model.load(bad)


def test_text_file_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        model.load(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/derain-pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "derain-video-checkpoint", "payload": _Evil()}, bad)
    with pytest.raises(CheckpointError, match="refusing to load"):
        model.load(bad)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        model.load(plain)


def test_other_architecture(saved, tmp_path):
    net, _ = saved
    data = model.checkpoint_dict(net)
    data["config"] = {**data["config"], "features": 16}
    bad = tmp_path / "other.pt"
    torch.save(data, bad)
    with pytest.raises(CheckpointError, match="does not match the network architecture"):
        model.load(bad)
    data = model.checkpoint_dict(net)
    data["state_dict"].pop(next(iter(data["state_dict"])))
    torch.save(data, bad)
    with pytest.raises(CheckpointError, match="missing"):
        model.load(bad)


def test_plain_state_dict_is_not_a_checkpoint(saved, tmp_path):
    net, _ = saved
    bad = tmp_path / "state.pt"
    torch.save(net.state_dict(), bad)
    with pytest.raises(CheckpointError, match="not a derain-video checkpoint"):
        model.load(bad)


def test_future_format_version(saved, tmp_path):
    net, _ = saved
    data = model.checkpoint_dict(net)
    data["format_version"] = 99
    bad = tmp_path / "future.pt"
    torch.save(data, bad)
    with pytest.raises(CheckpointError, match="format version 99"):
        model.load(bad)


def test_preset_without_shipped_weights_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(model.registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="no trained weights ship for preset 'paper'"):
        model.load("paper")
