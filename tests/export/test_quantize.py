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
