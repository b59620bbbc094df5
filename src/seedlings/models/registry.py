"""The backbone registry over timm: the seed's five classic networks and compact CPU-friendly ones.

Torch-free at import: config.py validates backbone names with it, and `seedlings models --help` loads it;
torch, timm and safetensors are imported inside the functions that build a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seedlings.artifact import ModelFile
from seedlings.errors import SeedlingsError, UsageError, missing_extra
from seedlings.models.pretrained import has_local_weights, imagenet_state, no_weights_error
from seedlings.preprocess import IMAGENET_MEAN, IMAGENET_STD

_HALF = (0.5, 0.5, 0.5)  # the TensorFlow EfficientNet-Lite weights expect inputs in [-1, 1]


@dataclass(frozen=True)
class Backbone:
    name: str  # our name, used on the command line and in model.json
    timm_name: str
    family: str  # "classic" (the seed's), "compact" (trains from scratch on a CPU) or "modern"
    note: str
    space_to_depth: int = 1  # > 1: each s×s block of pixels is folded into channels before the network
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation the backbone's ImageNet weights expect
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def has_imagenet_weights(self) -> bool:
        return has_local_weights(self.name)


BACKBONES: dict[str, Backbone] = {b.name: b for b in [
    Backbone("resnet10t", "resnet10t", "compact", "default: 5 M params, fast from scratch on a CPU"),
    Backbone("resnet10t_s2d", "resnet10t", "compact", "resnet10t with 2×2 pixel blocks folded into "
             "channels: 128 px at the cost of 64 px", space_to_depth=2),
    Backbone("resnet14t", "resnet14t", "compact", "deeper ResNet-T, ~1.5× the cost of resnet10t"),
    Backbone("resnet18d", "resnet18d", "compact", "ResNet-18-D: a strong small baseline"),
    Backbone("mobilenetv3", "mobilenetv3_large_100", "compact", "MobileNetV3-Large: phones and edge"),
    Backbone("efficientnet_b0", "efficientnet_b0", "modern", "EfficientNet-B0"),
    Backbone("efficientnet_lite0", "tf_efficientnet_lite0", "modern", "EfficientNet-Lite0: mobile-friendly "
             "(no SE, ReLU6); ImageNet weights ship with the train extra", mean=_HALF, std=_HALF),
    Backbone("efficientnet_lite1", "tf_efficientnet_lite1", "modern", "EfficientNet-Lite1 (ImageNet weights "
             "ship with the train extra)", mean=_HALF, std=_HALF),
    Backbone("efficientnet_lite2", "tf_efficientnet_lite2", "modern", "EfficientNet-Lite2 (ImageNet weights "
             "ship with the train extra)", mean=_HALF, std=_HALF),
    Backbone("convnext_atto", "convnext_atto", "modern", "ConvNeXt-Atto: a modern ConvNet"),
    Backbone("xception", "legacy_xception", "classic", "Xception (Chollet 2017), the seed's main model"),
    Backbone("inception_v3", "inception_v3", "classic", "Inception-v3; needs images ≥ 75 px"),
    Backbone("resnet50", "resnet50", "classic", "ResNet-50"),
    Backbone("vgg16", "vgg16", "classic", "VGG-16: large (138 M params at 224 px)"),
    Backbone("mobilenetv2", "mobilenetv2_100", "classic", "MobileNetV2 (width 1.0)"),
]}
ALIASES = {"mobilenet_v2": "mobilenetv2", "mobilenetv2_100": "mobilenetv2", "inceptionv3": "inception_v3",
           "legacy_xception": "xception", "mobilenetv3_large_100": "mobilenetv3", "mobilenet_v3": "mobilenetv3"}
DEFAULT_BACKBONE = "resnet10t"


def resolve_name(name: str) -> Backbone:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKBONES:
        raise UsageError(f"--model {name!r}: unknown backbone; choose one of {', '.join(BACKBONES)} "
                         "(see `seedlings models`)")
    return BACKBONES[key]


def init_backbone(model_dir: str | Path) -> str:
    """The backbone an exported model was trained with (``--init MODEL_DIR`` implies it): read from its
    model.json, so config.py can check ``--init`` without torch."""
    meta = ModelFile.load(model_dir)
    if meta.extra.get("ensemble") or "+" in meta.backbone:
        raise SeedlingsError(f"--init {model_dir}: an ensemble of several networks; start from one of its "
                             "members' run folders instead")
    return meta.backbone


def _timm():
    try:
        import timm  # lazy: the train extra
    except ImportError as exc:
        raise missing_extra("train", "timm") from exc
    return timm


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str | Path | None = None,
                 drop_path: float = 0.0):
    """A timm model with a fresh ``num_classes`` head.

    ``pretrained`` loads the ImageNet weights shipped in a pinned package (models/pretrained.py; never
    a hub); ``weights`` loads a local safetensors file of the backbone (its classifier head is dropped).
    Without either: from scratch.
    ``drop_path`` (stochastic depth) only acts in training mode; the weights are the same either way.
    """
    backbone = resolve_name(name)
    timm = _timm()
    extra = {"drop_path_rate": drop_path} if drop_path else {}
    if backbone.space_to_depth > 1:
        if pretrained:
            raise SeedlingsError(f"--pretrained: {backbone.name} takes {3 * backbone.space_to_depth ** 2} input "
                                 "channels; no ImageNet weights fit it. Train it from scratch, or pass "
                                 f"--model {backbone.timm_name} (or another backbone) for ImageNet weights")
        net = timm.create_model(backbone.timm_name, pretrained=False, num_classes=num_classes,
                                in_chans=3 * backbone.space_to_depth ** 2, **extra)
        from seedlings.models.space_to_depth import SpaceToDepth  # lazy: it imports torch

        model = SpaceToDepth(net, backbone.space_to_depth)
        if weights is not None:
            _load_backbone_weights(model, Path(weights))
        return model
    if weights is not None:
        model = timm.create_model(backbone.timm_name, pretrained=False, num_classes=num_classes, **extra)
        _load_backbone_weights(model, Path(weights))
        return model
    if not pretrained:
        return timm.create_model(backbone.timm_name, pretrained=False, num_classes=num_classes, **extra)
    if not backbone.has_imagenet_weights:
        raise no_weights_error(backbone.name)
    model = timm.create_model(backbone.timm_name, pretrained=False, **extra)  # with its 1000-class ImageNet head
    model.load_state_dict(imagenet_state(backbone.name, model.state_dict()))
    model.reset_classifier(num_classes)
    return model


def _load_backbone_weights(model, path: Path) -> None:
    if not path.is_file():
        raise SeedlingsError(f"--weights {path}: no such file")
    if path.suffix != ".safetensors":
        raise SeedlingsError(f"--weights {path}: only .safetensors files are loaded (never pickles); "
                             "convert it with safetensors.torch.save_file")
    from safetensors.torch import load_file  # lazy: it imports torch

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise SeedlingsError(f"--weights {path}: not a readable safetensors file ({exc})") from exc
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    head = {k for k in own if k.startswith(model.default_cfg.get("classifier", "fc"))}
    if len(usable) < (len(own) - len(head)) // 2:
        raise SeedlingsError(f"--weights {path}: only {len(usable)} of {len(own)} tensors match this "
                             "backbone; is it the right architecture?")
    model.load_state_dict({k: v for k, v in usable.items() if k not in head}, strict=False)


def count_flops(model, image_size: int) -> int:
    """Forward FLOPs for one image (multiply-add counted as 2)."""
    import torch  # lazy: the train extra
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return int(counter.get_total_flops())


def describe_models(image_size: int, num_classes: int = 12) -> list[dict]:
    """Name, family, parameters and GFLOPs at ``image_size`` of each backbone (the caller's size: `seedlings
    models` passes config.TrainConfig.image_size, the one default)."""
    rows = []
    for b in BACKBONES.values():
        model = create_model(b.name, num_classes)
        params = sum(p.numel() for p in model.parameters())
        try:
            gflops = count_flops(model, image_size) / 1e9
        except Exception:  # e.g. inception_v3 below 75 px
            gflops = float("nan")
        rows.append({"name": b.name, "timm": b.timm_name, "family": b.family, "params_m": params / 1e6,
                     "gflops": gflops, "default": b.name == DEFAULT_BACKBONE, "imagenet": b.has_imagenet_weights,
                     "note": b.note})
    return rows
