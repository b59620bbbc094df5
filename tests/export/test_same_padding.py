"""export/same_padding.py: TensorFlow "same" padding exported as constant Conv pads."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from seedlings.export.onnx import export_onnx
from seedlings.export.same_padding import _same_pads, fixed_same_padding


@pytest.mark.parametrize("size", [7, 8, 31, 32, 33])
@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (3, 1), (5, 1)])
def test_pads_match_timms_run_time_padding(size, kernel, stride):
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    conv = Conv2dSame(4, 4, kernel, stride)
    assert list(_same_pads((size, size + 1), conv)) == pad_same_arg((size, size + 1), (kernel, kernel),
                                                                    (stride, stride), (1, 1))


def test_lite_exports_one_conv_per_layer_with_the_same_outputs(tmp_path):
    import onnx
    import onnxruntime as ort

    from seedlings.models import create_model

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, 72, path)
    graph = onnx.load(str(path)).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["Pad"] == 0 and ops["Shape"] == 0 and ops["Ceil"] == 0, ops
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads  # 72 px → the first stride-2 convolution pads only the bottom and right
    x = np.random.default_rng(0).normal(size=(3, 3, 72, 72)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.allclose(got, want, atol=1e-4)
    assert "forward" not in vars(model.conv_stem)  # the model is itself again after the export


def test_a_model_without_same_padding_is_left_alone():
    from seedlings.models import create_model

    model = create_model("resnet10t", 3).eval()
    with fixed_same_padding(model, 32) as same:
        assert same is model and not any("forward" in vars(m) for m in model.modules())
