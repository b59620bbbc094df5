"""`seedlings` itself: version, help, one registration per command, exit codes 0/1/2, the missing-extra line."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import make_dataset
from tests.helpers import seedlings_cli as run

BLOCK_TRAIN_EXTRA = ("import sys; sys.modules.update(dict.fromkeys(('torch', 'torchvision', 'timm'))); "
                     "from seedlings.cli import main; sys.exit(main(sys.argv[1:]))")


def test_version_and_help():
    assert run("--version").stdout.startswith("seedlings ")
    out = run("--help").stdout
    for cmd in ("data", "models", "train", "evaluate", "predict", "export"):
        assert cmd in out


def test_usage_and_data_errors(tmp_path):
    p = run("train", "--data", tmp_path, "--out", tmp_path / "r", "--model", "nonet")
    assert p.returncode == 2 and "unknown backbone" in p.stderr and "resnet10t" in p.stderr
    p = run("train", "--data", tmp_path / "missing", "--out", tmp_path / "r", "--epochs", "1")
    assert p.returncode == 1 and "no such folder" in p.stderr and "Traceback" not in p.stderr
    p = run("data", "inspect", tmp_path / "missing")
    assert p.returncode == 1
    p = run("train", "--data", tmp_path)
    assert p.returncode == 2 and "--out is required" in p.stderr


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


def test_every_command_is_registered_once():
    from seedlings.cli import COMMANDS, build_parser

    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]
    assert names == list(COMMANDS) == ["data", "models", "train", "evaluate", "predict", "results", "export",
                                                   "serve", "runs", "feedback", "promote"]
