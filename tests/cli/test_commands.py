"""The `seedlings` command (seedlings/cli/): exit codes 0/1/2, messages that name the problem, every flag wired."""

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
    assert {n for n, r in by_name.items() if r["imagenet"]} == {"efficientnet_lite0", "efficientnet_lite1",
                                                                 "efficientnet_lite2"}
    table = run("models", "--image-size", "64").stdout
    assert "ImageNet weights" in table and "local" in table
    # Not a terminal: one plain line per row, names whole (`seedlings models | grep efficientnet_lite0`).
    (line,) = [line for line in table.splitlines() if line.startswith("efficientnet_lite0 ")]
    assert "local" in line and "tf_efficientnet_lite0" in line and "ImageNet weights ship with the train extra" in line
    assert not any(ch in table for ch in "│┃━")


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


def test_every_train_flag_reaches_the_config(monkeypatch):
    """Each `seedlings train` flag ends up in the resolved settings (a flag the CLI forgot would be ignored)."""
    import seedlings.training.fit as fit
    from seedlings.cli import main
    from seedlings.config import resolve

    seen = {}
    monkeypatch.setattr(fit, "train_from_cli", lambda config, overrides, resume: seen.update(
        cfg=resolve(config, overrides)))
    main(["train", "--data", "d", "--out", "o", "--mixup", "0.2", "--cutmix", "1.0", "--drop-path", "0.1",
          "--seed", "3", "--split-seed", "0", "--epochs", "5", "--threads", "1", "--no-ema", "--balance", "sampler"])
    cfg = seen["cfg"]
    assert (cfg.mixup, cfg.cutmix, cfg.drop_path, cfg.seed, cfg.split_seed, cfg.epochs, cfg.threads, cfg.ema,
            cfg.balance) == (0.2, 1.0, 0.1, 3, 0, 5, 1, False, "sampler")


BLOCK_TRAIN_EXTRA = ("import sys; sys.modules.update(dict.fromkeys(('torch', 'torchvision', 'timm'))); "
                     "from seedlings.cli import main; sys.exit(main(sys.argv[1:]))")


def test_a_missing_extra_is_one_line_for_every_command(tmp_path):
    """Without torch every command that needs it answers with the pip line, never a traceback."""
    from seedlings.artifact import ModelFile
    from seedlings.preprocess import PreprocessSpec

    run_dir = tmp_path / "run"  # a finished run folder: PyTorch weights, no model.onnx
    run_dir.mkdir()
    (run_dir / "weights.safetensors").write_bytes(b"0")
    model = ModelFile(name="m", backbone="resnet10t", classes=["a", "b"], preprocess=PreprocessSpec(image_size=32))
    model.record_file(run_dir, "weights.safetensors")
    model.save(run_dir)
    data = make_dataset(tmp_path / "d", per_class=2)
    for argv in (["train", "--data", data, "--out", tmp_path / "out"], ["models"], ["export", run_dir],
                 ["evaluate", "--model", run_dir, "--data", data], ["predict", "--model", run_dir, data]):
        p = subprocess.run([sys.executable, "-c", BLOCK_TRAIN_EXTRA, *map(str, argv)], capture_output=True,
                           text=True)
        assert p.returncode == 1, (argv, p.stderr)
        assert p.stderr.strip().splitlines() == [
            f"seedlings {argv[0]}: error: this needs the 'train' extra ({'timm' if argv[0] == 'models' else 'torch'} "
            "is not installed): pip install 'seedlings[train]'"], p.stderr


def test_the_image_size_default_is_the_training_recipes(tmp_path):
    """`data prepare` and `models` default to TrainConfig.image_size, so `train` reads the cache `prepare` built."""
    from seedlings.cli import build_parser
    from seedlings.config import TrainConfig

    parser = build_parser()
    assert parser.parse_args(["data", "prepare", "d"]).image_size == TrainConfig.image_size == 64
    assert parser.parse_args(["models"]).image_size == TrainConfig.image_size
    data = make_dataset(tmp_path / "d", per_class=2)
    p = run("data", "prepare", data, "--cache-dir", tmp_path / "cache")
    assert p.returncode == 0 and f"at {TrainConfig.image_size}px" in p.stdout


def test_every_command_is_registered_once():
    from seedlings.cli import COMMANDS, build_parser

    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]
    assert names == list(COMMANDS) == ["data", "models", "train", "evaluate", "predict", "export", "serve", "runs"]
