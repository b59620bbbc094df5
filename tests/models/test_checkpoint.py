"""models/checkpoint.py: weights and resumable checkpoints in safetensors."""

from __future__ import annotations

import pytest
import torch

from seedlings.errors import SeedlingsError
from seedlings.models.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from seedlings.training.loop import EMA


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_weights_round_trip(tmp_path):
    model, _ = _model_and_optimizer()
    save_weights(tmp_path / "w.safetensors", model.state_dict(), {"epoch": 3})
    loaded = load_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_checkpoint_restores_model_ema_optimizer_and_info(tmp_path):
    model, optimizer = _model_and_optimizer()
    ema = EMA(model, 0.9)
    save_checkpoint(tmp_path / "c.safetensors", model, ema, optimizer, {"epoch": 4, "step": 40})
    state, ema_state, optim, info = load_checkpoint(tmp_path / "c.safetensors")
    assert info["epoch"] == 4 and info["step"] == 40 and info["format"] == 1
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and ema_state is not None
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(optim)
    assert fresh.param_groups[0]["lr"] == 0.01
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_missing_or_broken_files_are_named(tmp_path):
    with pytest.raises(SeedlingsError, match="weights file not found"):
        load_weights(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(SeedlingsError, match="not a readable safetensors file"):
        load_weights(tmp_path / "bad.safetensors")
