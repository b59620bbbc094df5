"""The command line: exit codes 0/1/2 and messages that name the problem."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.helpers import make_dataset


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "seedlings", *map(str, args)], capture_output=True, text=True, **kw)


def test_version_and_help():
    assert run("--version").stdout.startswith("seedlings ")
    out = run("--help").stdout
    for cmd in ("data", "models", "train", "evaluate", "predict", "export"):
        assert cmd in out


@pytest.mark.slow
def test_models_lists_params_and_flops():
    rows = json.loads(run("models", "--json", "--image-size", "96").stdout)
    by_name = {r["name"]: r for r in rows}
    assert {"xception", "inception_v3", "resnet50", "vgg16", "mobilenetv2", "resnet10t"} <= set(by_name)
    assert 20 < by_name["resnet50"]["params_m"] < 30 and by_name["resnet50"]["gflops"] > 0.5
    assert by_name["resnet10t"]["default"] and not by_name["resnet10t_s2d"]["default"]


def test_usage_and_data_errors(tmp_path):
    p = run("train", "--data", tmp_path, "--out", tmp_path / "r", "--model", "nonet")
    assert p.returncode == 2 and "unknown backbone" in p.stderr and "resnet10t" in p.stderr
    p = run("train", "--data", tmp_path / "missing", "--out", tmp_path / "r", "--epochs", "1")
    assert p.returncode == 1 and "no such folder" in p.stderr and "Traceback" not in p.stderr
    p = run("data", "inspect", tmp_path / "missing")
    assert p.returncode == 1
    p = run("train", "--data", tmp_path)
    assert p.returncode == 2 and "--out is required" in p.stderr


def test_data_inspect_and_prepare(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=5)
    (data / "Sugar beet" / "dup.png").write_bytes((data / "Sugar beet" / "img_000.png").read_bytes())
    (data / "Sugar beet" / "bad.png").write_bytes(b"nope")
    out = json.loads(run("data", "inspect", data, "--json").stdout)
    assert out["counts"]["Sugar beet"] == 7 and out["n_readable"] == 16
    assert sorted(out["duplicates"][0]) == ["Sugar beet/dup.png", "Sugar beet/img_000.png"]
    assert out["problems"][0]["path"] == "Sugar beet/bad.png"
    env_cache = ["--cache-dir", tmp_path / "cache", "--image-size", "24"]
    p = run("data", "prepare", data, *env_cache)
    assert p.returncode == 0 and "cache built" in p.stdout and "skipped Sugar beet/bad.png" in p.stderr
    assert "up to date" in run("data", "prepare", data, *env_cache).stdout
    p = run("data", "prepare", data, *env_cache, "--bad-images", "fail")
    assert p.returncode == 1 and "bad.png" in p.stderr


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


def test_every_train_flag_reaches_the_config(monkeypatch):
    """Each `seedlings train` flag ends up in the resolved settings (a flag the CLI forgot would be ignored)."""
    import seedlings.training.fit as fit
    from seedlings.cli import main
    from seedlings.config import resolve

    seen = {}
    monkeypatch.setattr(fit, "train_from_cli", lambda config, overrides, resume: seen.update(
        cfg=resolve(config, overrides)))
    main(["train", "--data", "d", "--out", "o", "--mixup", "0.2", "--cutmix", "1.0", "--drop-path", "0.1",
          "--seed", "3", "--split-seed", "0", "--epochs", "5", "--threads", "1", "--no-ema"])
    cfg = seen["cfg"]
    assert (cfg.mixup, cfg.cutmix, cfg.drop_path, cfg.seed, cfg.split_seed, cfg.epochs, cfg.threads, cfg.ema) == \
        (0.2, 1.0, 0.1, 3, 0, 5, 1, False)
