"""resnet10t_s2d: 2× the pixels folded into channels, at about the cost of half the image size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seedlings.errors import SeedlingsError
from seedlings.models import create_model
from seedlings.models.registry import count_flops


def test_each_2x2_block_of_pixels_becomes_channels_of_one_position():
    model = create_model("resnet10t_s2d", 12).eval()
    x = torch.randn(2, 3, 64, 64)
    folded = torch.nn.functional.pixel_unshuffle(x, 2)
    assert folded.shape == (2, 12, 32, 32)
    assert torch.equal(folded[0, :, 5, 7].reshape(3, 2, 2), x[0, :, 10:12, 14:16])
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(folded))
    assert model.get_classifier() is model.net.fc and model.default_cfg["classifier"] == "net.fc"


def test_twice_the_image_costs_about_what_resnet10t_costs_at_half():
    s2d, plain = count_flops(create_model("resnet10t_s2d", 12), 128), count_flops(create_model("resnet10t", 12), 64)
    assert plain < s2d < 1.05 * plain  # only the first convolution sees 4× the channels


def test_no_imagenet_weights_fit_it():
    with pytest.raises(SeedlingsError, match="12 input channels.*from scratch"):
        create_model("resnet10t_s2d", 12, pretrained=True)


def test_trains_exports_and_predicts(tmp_path):
    from tests.helpers import make_dataset

    from seedlings import load_model
    from seedlings.export.onnx import export_run
    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "data", per_class=8)
    run = train(data=str(data), out=str(tmp_path / "run"), model="resnet10t_s2d", epochs=1, image_size=32,
                batch_size=16, threads=1, progress=False)
    out = export_run(run, tmp_path / "model", log=lambda m: None)
    meta = json.loads((out / "model.json").read_text())
    assert meta["backbone"] == "resnet10t_s2d" and meta["export"]["fp32_parity_max_abs_dprob"] < 1e-4
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    onnx_probs, torch_probs = load_model(out).assess(images)[0], load_model(run).assess(images)[0]
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
