"""`seedlings data inspect|prepare`: counts, duplicates, unreadable files, the prepared cache."""

from __future__ import annotations

import json

from tests.helpers import make_dataset
from tests.helpers import seedlings_cli as run


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
