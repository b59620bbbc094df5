"""TensorFlow "same" padding as a constant in the exported graph.

The EfficientNet-Lite weights come from TensorFlow, so timm builds those backbones with ``Conv2dSame``:
every stride-2 convolution pads its input by an amount computed from the input's size at run time
(more at the bottom and right than at the top and left). Exported as it is, each such layer becomes a
dozen shape-arithmetic nodes and a Pad in front of the Conv, and ONNX Runtime can fuse neither.

An exported model has one input size, so the padding is known at export time. Inside
:func:`fixed_same_padding` each ``Conv2dSame`` computes the same numbers in torch and exports as one
ONNX ``Conv`` with asymmetric ``pads`` (lite0 at 160 px, one image through ``Model.probabilities``:
7.9 → 6.3 ms in one measurement).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


class _PaddedConv(torch.autograd.Function):
    """conv2d(pad(x)) in torch; one Conv node with asymmetric pads in ONNX."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, dilation, groups, pads):  # pads: left, right, top, bottom
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, stride, dilation, groups, pads):
        left, right, top, bottom = pads
        inputs = [x, weight] if bias is None else [x, weight, bias]
        kernel = weight.type().sizes()[-2:]
        return g.op("Conv", *inputs, kernel_shape_i=list(kernel), strides_i=list(stride),
                    dilations_i=list(dilation), group_i=groups, pads_i=[top, left, bottom, right])


def _same_pads(size: tuple[int, int], conv) -> tuple[int, int, int, int]:
    """TensorFlow's "same" padding of ``conv`` for an input of ``size`` (height, width): left, right, top, bottom."""
    pads = []
    for n, k, s, d in zip(size, conv.weight.shape[-2:], conv.stride, conv.dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


@contextlib.contextmanager
def fixed_same_padding(model: torch.nn.Module, image_size: int):
    """Within the block, every timm ``Conv2dSame`` of ``model`` pads by the constant its input size at
    ``image_size`` gives, and exports as one Conv. Models without them are left alone."""
    from timm.layers.conv2d_same import Conv2dSame  # lazy: timm builds every backbone, export needs it anyway

    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    if not convs:
        yield model
        return
    sizes = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(mod, tuple(args[0].shape[-2:])))
             for m in convs]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    for conv in convs:
        pads = _same_pads(sizes[conv], conv)
        conv.forward = (lambda c, p: lambda x: _PaddedConv.apply(x, c.weight, c.bias, c.stride, c.dilation,
                                                                  c.groups, p))(conv, pads)
    try:
        yield model
    finally:
        for conv in convs:
            del conv.forward
