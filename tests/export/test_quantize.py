"""export/quantize.py: the int8 graph keeps the "not a seedling" distance in float."""

from __future__ import annotations

import onnx

from seedlings.export.quantize import distance_only_nodes


def test_int8_leaves_the_distance_branch_float(trained_run, tmp_path):
    from seedlings.export.onnx import export_run

    model = export_run(trained_run, tmp_path / "model", precision="int8", log=lambda m: None)
    fp32, int8 = (onnx.load(str(model / f)).graph for f in ("model.onnx", "model.int8.onnx"))
    branch = distance_only_nodes(int8)
    assert len(branch) > 5 and distance_only_nodes(fp32)  # whitening, squares, sums, the cosine, the max
    ops = {n.name: n.op_type for n in int8.node}
    assert not {ops[n] for n in branch} & {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul"}
    assert any(op == "QLinearConv" or op == "DequantizeLinear" for op in ops.values())  # the backbone is int8


def test_a_graph_without_a_distance_output_has_no_branch():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["logits"], name="r")], "g", [x], [y])
    assert distance_only_nodes(graph) == []


def test_parity_and_int8_images_cover_every_class_of_a_run_in_class_order():
    """A run's rows are in class order; the first 64 validation images were one or two species (int8 calibrated on
    them lost 0.5 points on a Lite0 fold, spread over all twelve 0.1: bench/int8_calibration.py). Validation images
    first, training images for a run that holds none out, noise only when the data is not here."""
    import numpy as np

    from seedlings.data.split import Subset
    from seedlings.export.onnx import sample_images

    labels = np.repeat(np.arange(12), 40)  # 480 rows, class by class
    images = np.zeros((len(labels), 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = labels  # each image knows its class
    val = Subset(images, labels, np.arange(0, 480, 2))
    train = Subset(images, labels, np.arange(1, 480, 2))
    picked, what = sample_images(val, 8)
    assert what == "64 validation images of the run" and len(picked) == 64
    assert set(picked[:, 0, 0, 0].tolist()) == set(range(12))  # every species, not the first one or two
    picked, what = sample_images(Subset(images, labels, np.arange(0)), 8, train_set=train)
    assert what == "64 training images of the run (it holds none out)" and set(picked[:, 0, 0, 0]) == set(range(12))
    picked, what = sample_images(None, 8)
    assert what == "16 random images (data not found)" and picked.shape == (16, 8, 8, 3)
