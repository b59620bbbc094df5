"""Pieces of the training step: mixup/CutMix, augmentation, stochastic depth, the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from seedlings.config import AugmentConfig, TrainConfig
from seedlings.data.torchdata import augment
from seedlings.errors import UsageError
from seedlings.models import create_model
from seedlings.training.loop import lr_at, mix_batch


def _batch(n=8, size=16):
    """Image i is filled with the value i, so every output pixel says where it came from."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


def test_mixing_off_returns_the_batch_untouched():
    x, y = _batch(), torch.arange(8)
    mixed, partner, lam = mix_batch(x, y, TrainConfig(), torch.Generator().manual_seed(0))
    assert mixed is x and partner is y and lam == 1.0


def test_mixup_blends_each_image_with_its_partner_by_lambda():
    x, y = _batch(), torch.arange(8)
    gen = torch.Generator().manual_seed(1)
    mixed, partner, lam = mix_batch(x, y, TrainConfig(mixup=0.4), gen)
    assert 0.0 <= lam <= 1.0
    expected = lam * y.float() + (1 - lam) * partner.float()  # pixel value = label here
    assert torch.allclose(mixed[:, 0, 0, 0], expected, atol=1e-5)
    assert sorted(partner.tolist()) == list(range(8))  # a permutation of the batch


def test_cutmix_pastes_one_box_and_lambda_is_the_area_kept():
    x, y = _batch(size=32), torch.arange(8)
    gen = torch.Generator().manual_seed(3)
    checked = 0
    for _ in range(20):
        mixed, partner, lam = mix_batch(x, y, TrainConfig(cutmix=1.0), gen)
        assert 0.0 <= lam <= 1.0 and sorted(partner.tolist()) == list(range(8))
        for i in range(8):
            assert ((mixed[i, 0] == y[i]) | (mixed[i, 0] == partner[i])).all()  # own pixels or the partner's
            if partner[i] != y[i]:
                own = (mixed[i, 0] == y[i]).float().mean().item()
                assert own == pytest.approx(lam, abs=1e-6)
                checked += 1
    assert checked > 50, "most images get a partner other than themselves; else this test checks nothing"


def test_mixing_is_reproducible_from_the_generator():
    x, y = _batch(), torch.arange(8)
    cfg = TrainConfig(mixup=0.2, cutmix=1.0)
    a = [mix_batch(x, y, cfg, torch.Generator().manual_seed(7))[2] for _ in range(2)]
    assert a[0] == a[1]


@pytest.mark.parametrize("field,value", [("mixup", -1.0), ("cutmix", -0.5), ("drop_path", 1.0)])
def test_bad_regularisation_settings_are_refused(field, value):
    with pytest.raises(UsageError, match=field.replace("_", "-")):
        TrainConfig(data="d", out="o", **{field: value}).validate()


def test_drop_path_only_acts_in_training_mode():
    torch.manual_seed(0)
    model = create_model("resnet10t", 3, drop_path=0.5)
    with torch.no_grad():  # residual branches start at zero (zero-init BN): give them weight to drop
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    plain = create_model("resnet10t", 3)
    plain.load_state_dict(model.state_dict())  # same weights: stochastic depth adds no parameters
    x = torch.randn(16, 3, 32, 32)
    model.eval(), plain.eval()
    assert torch.allclose(model(x), plain(x), atol=1e-6)
    model.train()
    outs = [model(x) for _ in range(4)]
    assert not all(torch.allclose(outs[0], o) for o in outs[1:])


def test_augmentation_is_reproducible_from_the_generator():
    """Every random draw comes from the given generator: same seed, same batch; another seed, another."""
    batch = torch.randint(0, 256, (4, 24, 24, 3), dtype=torch.uint8)
    a = augment(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    c = augment(batch, AugmentConfig(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (4, 3, 24, 24)


def test_lr_warms_up_then_decays_to_the_floor():
    base = 1e-3
    assert lr_at(0, 100, 10, base) == pytest.approx(base / 10)
    assert lr_at(9, 100, 10, base) == pytest.approx(base)
    assert lr_at(100, 100, 10, base) == pytest.approx(base * 0.01)
    mid = lr_at(55, 100, 10, base)
    assert mid == pytest.approx(base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5))))


def test_frozen_layers_get_no_learning_rate_then_warm_up_again():
    """--freeze-epochs: the learned group's rate is 0 for the frozen steps, then climbs linearly back to
    the schedule's rate × its lr_scale over warmup_steps; the classifier follows the schedule throughout."""
    from types import SimpleNamespace

    from seedlings.training.loop import _set_learning_rate

    groups = [{"learned": True, "lr_scale": 0.5}, {"learned": False, "lr_scale": 1.0}]
    state = SimpleNamespace(total_steps=100, warmup_steps=10, freeze_steps=20, cfg=SimpleNamespace(lr=1.0),
                            optimizer=SimpleNamespace(param_groups=groups))
    seen = {}
    for step in (0, 19, 20, 24, 29, 60):
        state.step = step
        lr = _set_learning_rate(state)
        assert lr == lr_at(step, 100, 10, 1.0) and groups[1]["lr"] == lr
        seen[step] = groups[0]["lr"] / (0.5 * lr)
    assert seen[0] == seen[19] == 0.0
    assert seen[20] == pytest.approx(0.1) and seen[24] == pytest.approx(0.5)
    assert seen[29] == seen[60] == pytest.approx(1.0)
