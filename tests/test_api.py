"""seedlings.load_model (api.py): ONNX model folders and PyTorch run folders, verified before they load."""

from __future__ import annotations

import json

import pytest
from tests.helpers import make_dataset


def test_python_api(trained_run, exported_model, tmp_path):
    import numpy as np

    import seedlings

    model = seedlings.load_model(exported_model)
    assert model.backend_name == "onnx"
    img = np.zeros((60, 60, 3), np.uint8)
    preds = model.predict([img, img], top_k=2)
    assert len(preds) == 2 and len(preds[0].top_k) == 2
    assert abs(sum(p["probability"] for p in model.predict(img, top_k=3)[0].top_k) - 1) < 1e-5
    torch_model = seedlings.load_model(trained_run)
    assert torch_model.backend_name == "torch"
    a, b = model.probabilities(np.stack([model.prepare(img)])), torch_model.probabilities(
        np.stack([torch_model.prepare(img)]))
    assert np.abs(a - b).max() < 1e-4, "ONNX and PyTorch paths agree"
    tta = model.predict(img, tta=True)[0]
    assert 0 < tta.confidence <= 1


def test_tampered_model_is_refused(exported_model, tmp_path):
    import shutil

    from seedlings import SeedlingsError, load_model

    copy = tmp_path / "m"
    shutil.copytree(exported_model, copy)
    with open(copy / "model.onnx", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(SeedlingsError, match="sha256.*Refusing"):
        load_model(copy)


def test_folders_from_another_version_are_refused(trained_run, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from seedlings import SeedlingsError, load_model
    from seedlings.models.checkpoint import load_checkpoint

    old = tmp_path / "old-run"
    shutil.copytree(trained_run, old)
    meta = json.loads((old / "model.json").read_text())
    meta["format"], meta["seedlings_version"] = 99, "9.9.9"
    (old / "model.json").write_text(json.dumps(meta))
    with pytest.raises(SeedlingsError, match="model format 99.*seedlings 9.9.9.*re-export"):
        load_model(old)
    ckpt = old / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        info = json.loads(fh.metadata()["info"])
    info["format"] = 99
    save_file(tensors, str(ckpt), metadata={"info": json.dumps(info)})
    with pytest.raises(SeedlingsError, match="checkpoint format 99.*cannot be resumed"):
        load_checkpoint(ckpt)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(SeedlingsError, match="unreadable"):
        load_checkpoint(ckpt)


@pytest.mark.slow
def test_the_api_and_the_command_line_train_the_same_recipe(tmp_path):
    """One step each way, from ImageNet weights: the saved config.yaml (the resolved recipe) is the same."""
    import subprocess
    import sys

    import yaml

    import seedlings

    data = make_dataset(tmp_path / "d", per_class=4)
    common = ["--data", str(data), "--pretrained", "--epochs", "1", "--min-steps", "0", "--image-size", "32",
              "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    subprocess.run([sys.executable, "-m", "seedlings", "train", *common, "--out", str(tmp_path / "cli")],
                   check=True, capture_output=True)
    seedlings.train(data=str(data), out=str(tmp_path / "api"), pretrained=True, epochs=1, min_steps=0, image_size=32,
                    threads=1, cache_dir=str(tmp_path / "cache"), progress=False)
    cli, api = (yaml.safe_load((tmp_path / r / "config.yaml").read_text()) for r in ("cli", "api"))
    assert {**cli, "out": ""} == {**api, "out": ""}
    assert (api["model"], api["lr"], api["augment"]["right_angles"]) == ("efficientnet_lite0", 1e-3, True)
