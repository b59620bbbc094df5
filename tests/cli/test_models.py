"""`seedlings models`: the backbones, their cost, which have ImageNet weights here; plain rows to a pipe."""

from __future__ import annotations

import json

import pytest
from tests.helpers import seedlings_cli as run


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
