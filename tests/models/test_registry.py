from __future__ import annotations

import pytest
import torch

from seedlings.errors import SeedlingsError, UsageError
from seedlings.models import BACKBONES, create_model, resolve_name


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_and_classifies(name):
    model = create_model(name, num_classes=12).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 96, 96))
    assert out.shape == (2, 12)


def test_seed_backbones_present_and_aliases():
    for name in ("xception", "inception_v3", "resnet50", "vgg16", "mobilenetv2"):
        assert name in BACKBONES
    assert resolve_name("MobileNet_V2").name == "mobilenetv2"
    with pytest.raises(UsageError, match="unknown backbone.*xception"):
        resolve_name("alexnet")


def test_pretrained_without_local_weights_is_a_clear_error():
    with pytest.raises(SeedlingsError, match="no local ImageNet weights for resnet10t.*--weights FILE"):
        create_model("resnet10t", 12, pretrained=True)


def test_local_weights_file_loads_backbone_not_head(tmp_path):
    from safetensors.torch import save_file

    donor = create_model("resnet10t", 1000)
    path = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    model = create_model("resnet10t", 12, weights=path)
    assert torch.equal(model.state_dict()["conv1.0.weight"], donor.state_dict()["conv1.0.weight"])
    assert model.fc.out_features == 12
    (tmp_path / "w.pth").write_bytes(b"pickle")
    with pytest.raises(SeedlingsError, match="only .safetensors"):
        create_model("resnet10t", 12, weights=tmp_path / "w.pth")
    save_file({"x": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SeedlingsError, match="right architecture"):
        create_model("resnet10t", 12, weights=tmp_path / "other.safetensors")
