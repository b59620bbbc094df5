"""Start training from an exported seedlings model (``train --init MODEL_DIR``) instead of ImageNet.

A model folder may hold only ``model.onnx`` (the default model does): its exporter folded every
BatchNorm into the convolution before it, so the graph has one weight and one bias per
convolution. Those are put back into the network by position (each shape checked), and each
BatchNorm is set so that the network computes exactly what the ONNX graph computes (checked
against ONNX Runtime on the same input). Its running statistics are then measured on training
images, so that in training mode, where BatchNorm normalises with the batch's statistics, the
layers start where the exported model left them instead of being re-normalised to unit scale.

A folder with ``weights.safetensors`` (a finished run) is loaded by name, as trained.
The classifier is kept when the classes are the same, in the same order. Otherwise each class the model
already knows (matched by name, in any order) keeps its row of the final layer, weight and bias, at its new
position; a class new to it starts from small weights, N(0, 0.01²), and the model's mean bias, so its logit
starts near that bias whatever the image, not at a random projection of the features (timm's default init
for the layer: std 0.025 on resnet10t, 0.16 on efficientnet_lite0); a class the new list leaves out is
dropped. No class shared: the framework's fresh classifier, as before. The model's calibration and "not a
seedling" detector are not carried over: they belong to its classes, and training fits both anew.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seedlings.artifact import ONNX_FILES, WEIGHTS, ModelFile
from seedlings.errors import SeedlingsError

PARITY_TOLERANCE = 1e-3  # max |Δprob| between the rebuilt network and the ONNX graph


def load_init(model_dir: str | Path, create, classes: list[str], calibration_batches) -> tuple[torch.nn.Module, dict]:
    """A network from ``create(n_classes)`` with ``model_dir``'s weights, its classifier sized for
    ``classes``. ``calibration_batches``: float input batches for BatchNorm statistics. Returns the
    model and the ``init`` record for model.json."""
    model_dir = Path(model_dir)
    meta = ModelFile.load(model_dir)
    source = create(len(meta.classes))
    if WEIGHTS in meta.files:
        from safetensors.torch import load_file

        source.load_state_dict(load_file(str(meta.verify_file(model_dir, WEIGHTS))))
        how = WEIGHTS
    elif ONNX_FILES["fp32"] in meta.files:
        load_onnx_weights(source, meta.verify_file(model_dir, ONNX_FILES["fp32"]), calibration_batches)
        how = "model.onnx (BatchNorm folded back out)"
    else:
        raise SeedlingsError(f"--init {model_dir}: lists neither weights.safetensors nor model.onnx")
    record = {"kind": "model", "name": meta.name, "version": meta.version, "backbone": meta.backbone, "from": how}
    if list(meta.classes) == list(classes):
        return source, {**record, "classifier": "kept"}
    model = create(len(classes))  # a network of the new size (not reset_classifier: SpaceToDepth has none)
    model.load_state_dict(carry_over(source, model, list(meta.classes), list(classes), model_dir))
    return model, {**record, **classifier_record(list(meta.classes), list(classes))}


NEW_ROW_STD = 0.01  # weights of a class new to the initial model (its bias: the model's mean bias)


def carry_over(source: torch.nn.Module, target: torch.nn.Module, old: list[str], new: list[str],
               where: Path) -> dict[str, torch.Tensor]:
    """``target``'s state: ``source``'s tensors, its classifier's rows moved to the classes of ``new``
    (by name); rows of classes ``source`` does not know are new (small weights), or ``target``'s own fresh
    classifier when no class is shared."""
    state, fresh = source.state_dict(), target.state_dict()
    prefix = classifier_prefix(target)
    pairs = [(new.index(c), old.index(c)) for c in new if c in old]
    for name, value in fresh.items():
        if not name.startswith(prefix):
            continue
        if name not in state or state[name].shape[1:] != value.shape[1:] or state[name].shape[0] != len(old):
            raise SeedlingsError(f"--init {where}: classifier tensor {name} does not fit "
                                 f"{len(old)} classes; the model folder is not this architecture")
        state[name] = new_rows(state[name], len(new), pairs) if pairs else value
    return state


def new_rows(rows: torch.Tensor, n: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """``n`` rows: the initial ``rows[o]`` at position ``n_`` for each ``(n_, o)`` of ``pairs``; the others
    new, small (a weight matrix) or the initial rows' mean (a bias)."""
    if rows.dim() == 1:
        out = rows.mean().expand(n).clone()
    else:
        out = torch.randn((n, *rows.shape[1:]), dtype=rows.dtype) * NEW_ROW_STD
    to, frm = (list(t) for t in zip(*pairs))
    out[to] = rows[frm]
    return out


def classifier_prefix(model: torch.nn.Module) -> str:
    """The state-dict prefix of the model's classifier (``fc.``, ``classifier.``, ``net.fc.``)."""
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head) + "."


def classifier_record(old: list[str], new: list[str]) -> dict:
    """What ``init`` says about the classifier: which classes kept their rows, which are new, which dropped."""
    kept = [c for c in new if c in old]
    fresh = [c for c in new if c not in old]
    dropped = [c for c in old if c not in new]
    lists = {"classes_kept": kept, "classes_new": fresh, "classes_dropped": dropped}
    if not kept:
        return {"classifier": f"replaced ({len(old)} → {len(new)} classes)", **lists,
                "new_rows": "the framework's default initialisation"}
    text = f"kept {len(kept)} of {len(new)} classes" + (f"; new: {', '.join(fresh)}" if fresh else "")
    text += f"; dropped: {', '.join(dropped)}" if dropped else ""
    record = {"classifier": text if fresh or dropped else text + " (reordered)", **lists}
    if fresh:
        record["new_rows"] = f"weights N(0, {NEW_ROW_STD}²), bias the mean of the model's biases"
    return record


def load_onnx_weights(model: torch.nn.Module, onnx_path: Path, calibration_batches) -> None:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast"}  # float16 weights

    def tensor(name: str) -> np.ndarray | None:
        name = alias.get(name, name)
        return inits.get(name)

    convs = [(tensor(n.input[1]), tensor(n.input[2]) if len(n.input) > 2 else None)
             for n in graph.node if n.op_type == "Conv"]
    pairs = conv_bn_pairs(model)
    if len(convs) != len(pairs):
        raise SeedlingsError(f"--init {onnx_path}: {len(convs)} convolutions in the graph, {len(pairs)} in the "
                             "backbone; the model folder is not this architecture")
    with torch.no_grad():
        for i, ((w, b), (conv, bn)) in enumerate(zip(convs, pairs)):
            _set_conv(conv, bn, w, b, f"--init {onnx_path}: convolution {i}")
        _set_classifier(model, inits, onnx_path)
    check_parity(model, onnx_path)
    recalibrate(model, pairs, calibration_batches)


def conv_bn_pairs(model: torch.nn.Module) -> list[tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d | None]]:
    """Each convolution with the BatchNorm that follows it (None when another convolution comes first)."""
    pairs: list = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            pairs.append([module, None])
        elif isinstance(module, torch.nn.BatchNorm2d) and pairs and pairs[-1][1] is None:
            pairs[-1][1] = module
    return [tuple(p) for p in pairs]


def _set_conv(conv, bn, w: np.ndarray | None, b: np.ndarray | None, where: str) -> None:
    if w is None or tuple(w.shape) != tuple(conv.weight.shape):
        raise SeedlingsError(f"{where}: weight shape {None if w is None else tuple(w.shape)} does not fit "
                             f"{tuple(conv.weight.shape)}; the model folder is not this architecture")
    conv.weight.copy_(torch.from_numpy(w))
    bias = torch.from_numpy(b) if b is not None else torch.zeros(conv.out_channels)
    if bn is None:
        if conv.bias is None and b is not None and np.abs(b).max() > 0:
            raise SeedlingsError(f"{where}: has a bias the backbone has no place for")
        if conv.bias is not None:
            conv.bias.copy_(bias)
        return
    if conv.bias is not None:
        conv.bias.zero_()
    bn.weight.fill_(1.0)  # an identity BatchNorm that adds the folded bias: exactly the ONNX graph
    bn.bias.copy_(bias)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def _set_classifier(model, inits: dict, onnx_path: Path) -> None:
    head = model.get_classifier()
    for name, param in head.named_parameters():
        found = [v for k, v in inits.items() if k.endswith(f".{name}") and tuple(v.shape) == tuple(param.shape)]
        if len(found) != 1:
            raise SeedlingsError(f"--init {onnx_path}: no classifier {name} of shape {tuple(param.shape)} in the "
                                 "graph; re-export the model with this version of seedlings")
        param.copy_(torch.from_numpy(found[0]))


def check_parity(model: torch.nn.Module, onnx_path: Path) -> None:
    """The rebuilt network must give the ONNX graph's probabilities (else the mapping was wrong)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    size = shape[-1] if isinstance(shape[-1], int) else 64
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        want = model(x).softmax(1).numpy()
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]).softmax(1).numpy()
    delta = float(np.abs(want - got).max())
    if not delta < PARITY_TOLERANCE:
        raise SeedlingsError(f"--init {onnx_path}: the rebuilt network differs from the graph (max |Δprob| "
                             f"{delta:.2e}); the model folder is not this architecture")


@torch.no_grad()
def recalibrate(model: torch.nn.Module, pairs, batches) -> None:
    """Move each folded BatchNorm's scale into its statistics: the eval function stays the same, and
    training-mode normalisation starts close to it (per-channel mean and std measured on ``batches``)."""
    stats: dict[int, list] = {}

    def hook(index):
        def record(module, inputs, output):
            y = output.float().transpose(0, 1).reshape(output.shape[1], -1)
            stats.setdefault(index, []).append((y.mean(1), (y * y).mean(1)))
        return record

    handles = [conv.register_forward_hook(hook(i)) for i, (conv, bn) in enumerate(pairs) if bn is not None]
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    for i, (_conv, bn) in enumerate(pairs):
        if bn is None or i not in stats:
            continue
        mean = torch.stack([m for m, _ in stats[i]]).mean(0)
        var = (torch.stack([s for _, s in stats[i]]).mean(0) - mean * mean).clamp_min(1e-6)
        # BN(y) = (y - mean) / √(var + ε) · √(var + ε) + (bias + mean) = y + bias: the same function
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.add_(mean)
