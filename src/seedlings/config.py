"""Typed configuration: defaults → YAML file → command-line flags; the resolved copy is saved per run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seedlings.errors import SeedlingsError, UsageError
from seedlings.fileio import atomic_write_text
from seedlings.models.pretrained import no_weights_error
from seedlings.models.registry import DEFAULT_BACKBONE, init_backbone, resolve_name
from seedlings.preprocess import IMAGE_SIZES, PreprocessSpec


@dataclass
class AugmentConfig:
    """Augmentation for top-down plant photos: any angle, both flips, zoom, colour jitter."""

    rotate: bool = True  # any angle, 0–360°
    right_angles: bool = False  # with rotate off: quarter turns only (0, 90, 180, 270°), no resampling blur
    flip: bool = True  # horizontal and vertical
    scale_min: float = 0.8  # zoom: < 1 shows more context, > 1 crops in
    scale_max: float = 1.25
    translate: float = 0.08  # fraction of the image size
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


@dataclass
class TrainConfig:
    data: str | list[str] = ""  # a folder, or several joined into one data set (data/sources.py)
    out: str = ""
    model: str = DEFAULT_BACKBONE
    pretrained: bool = False
    weights: str | None = None  # local safetensors file of the backbone
    init: str | None = None  # an exported seedlings model folder to start from (implies its backbone)
    backbone_lr: float = 1.0  # learning-rate multiplier of the pretrained layers (with --pretrained/--weights)
    freeze_epochs: int = 0  # first epochs train only the new classifier; the learned layers and their BN stay put
    epochs: int = 150
    min_steps: int = 0  # small data sets: a smaller batch and more epochs until this many optimizer steps
    image_size: int = 64  # the recipe search (bench/recipes/) found 64 px × 150 epochs as good as 96 × 100
    batch_size: int = 64  # global: split across torchrun processes
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    teacher: str | None = None  # an oof.csv (or val_predictions.csv): soft labels for every training image
    teacher_weight: float = 0.5  # α: target = (1 − α)·one-hot + α·teacher's probabilities (needs --teacher)
    mixup: float = 0.0  # Beta(α, α) of mixup; 0 = off
    cutmix: float = 0.0  # Beta(α, α) of CutMix; 0 = off (with both on, each batch takes one at random)
    drop_path: float = 0.0  # stochastic depth rate of the backbone's residual blocks
    grad_clip: float = 2.0
    balance: str = "none"  # loss (class-weighted loss) | sampler (weighted sampling) | none
    ema: bool = True  # evaluate and ship an exponential moving average of the weights
    ema_decay: float = 0.998
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    val_fraction: float = 0.15
    val_data: str | None = None  # a separate labelled folder for validation instead of a split
    calibrate_from: str | None = None  # with val_fraction 0: the recipe's K-fold run (training/final.py)
    folds: int = 0  # K ≥ 2: stratified K-fold from --split-seed instead of --val-fraction (0 = off)
    fold: int | None = None  # which fold validates (0 … K-1); None with --folds: train every fold in turn
    keep: str = "best"  # best | last: the weights shipped (last: the held-out images choose nothing)
    seed: int = 0
    split_seed: int | None = None  # seed of the stratified validation split; None = seed
    bad_images: str = "skip"
    cache_dir: str | None = None
    threads: int | None = None  # torch intra-op threads per process (default: cores / processes)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    CHOICES = {"balance": ("loss", "sampler", "none"), "precision": ("auto", "fp32", "bf16", "fp16"),
               "bad_images": ("skip", "fail"), "keep": ("best", "last")}

    def validate(self) -> TrainConfig:
        """A checked copy with the backbone's canonical name (``--init``'s when given); raises UsageError with
        the flag and the rule for anything unusable. The object itself is left as it is."""
        data = self._checked_data()
        if not self.out:
            raise UsageError("--out is required: the run folder to write")
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose one of "
                                 f"{', '.join(choices)}")
        checks = [("epochs", self.epochs >= 1, "≥ 1"), ("min_steps", self.min_steps >= 0, "≥ 0"),
                  ("batch_size", self.batch_size >= 1, "≥ 1"),
                  ("image_size", IMAGE_SIZES[0] <= self.image_size <= IMAGE_SIZES[1],
                   f"between {IMAGE_SIZES[0]} and {IMAGE_SIZES[1]}"),
                  ("lr", self.lr > 0, "> 0"), ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("teacher_weight", 0 <= self.teacher_weight <= 1, "in [0, 1]"),
                  ("mixup", self.mixup >= 0, "≥ 0"), ("cutmix", self.cutmix >= 0, "≥ 0"),
                  ("drop_path", 0 <= self.drop_path < 1, "in [0, 1)"),
                  ("backbone_lr", 0 <= self.backbone_lr <= 10, "in [0, 10]"),
                  ("freeze_epochs", 0 <= self.freeze_epochs < self.epochs,
                   f"in [0, --epochs) so that some epochs train the whole network (--epochs is {self.epochs})")]
        for name, ok, rule in checks:
            if not ok:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be {rule}")
        self._check_folds()
        self._check_calibrate_from()
        if self.teacher is not None and not str(self.teacher).strip():
            raise UsageError("--teacher '': empty; name the oof.csv of a `seedlings train --folds K` run, or drop "
                             "--teacher")
        if self.freeze_epochs and not (self.pretrained or self.weights or self.init):
            raise UsageError(f"--freeze-epochs {self.freeze_epochs}: freezing only makes sense for learned "
                             "layers; add --pretrained, --weights or --init, or drop --freeze-epochs")
        backbone = resolve_name(self._init_backbone())
        if self.pretrained and not backbone.has_imagenet_weights:
            raise no_weights_error(backbone.name)
        if self.image_size % backbone.space_to_depth:
            raise UsageError(f"--image-size {self.image_size}: {backbone.name} folds {backbone.space_to_depth}×"
                             f"{backbone.space_to_depth} pixel blocks into channels, so the size must be a "
                             f"multiple of {backbone.space_to_depth}")
        return dataclasses.replace(self, model=backbone.name, data=data)  # a checked copy: this one is unchanged

    def data_folders(self) -> list[str]:
        """--data as a list: one folder, or the several joined into this run's data set."""
        return [str(self.data)] if isinstance(self.data, (str, Path)) else [str(d) for d in self.data]

    def _checked_data(self) -> str | list[str]:
        """--data as config.yaml records it: one folder as a string (as before several were possible), several
        as a list, each given once."""
        if not self.data or not isinstance(self.data, (str, Path, list, tuple)):
            raise UsageError("--data is required: the folder with one sub-folder per species (repeat --data, or "
                             "give a YAML list, to train on several)")
        folders = self.data_folders()
        for i, folder in enumerate(folders):
            if not folder or folder in folders[:i]:
                raise UsageError(f"--data {folder!r}: " + ("given twice; name each folder once" if folder else
                                                           "empty; name a folder with one sub-folder per species"))
        return folders[0] if len(folders) == 1 else folders

    def _check_folds(self) -> None:
        if self.folds == 0 and self.fold is None:
            return
        if self.folds < 2:
            raise UsageError(f"--fold {self.fold}: needs --folds K (K ≥ 2), the number of folds it is one of"
                             if self.folds == 0 else f"--folds {self.folds}: must be at least 2 (or 0: no folds)")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise UsageError(f"--fold {self.fold}: must be in 0 … {self.folds - 1} (--folds {self.folds})")
        if self.val_data:
            raise UsageError("--folds splits --data into folds; it cannot be combined with --val-data")

    def _check_calibrate_from(self) -> None:
        if self.calibrate_from is None:
            return
        if not str(self.calibrate_from).strip():
            raise UsageError("--calibrate-from '': empty; name the `seedlings train --folds K` run of this recipe")
        if self.val_fraction != 0 or self.val_data or self.folds:
            raise UsageError("--calibrate-from calibrates a model trained on every image: use it with "
                             "--val-fraction 0 (no --val-data, no --folds); a run that holds images out "
                             "calibrates on them")

    def _init_backbone(self) -> str:
        """The backbone to train: ``--init MODEL_DIR``'s (a different --model is a contradiction), else --model."""
        if not self.init:
            return self.model
        if self.pretrained or self.weights:
            raise UsageError("--init starts from a seedlings model; it cannot be combined with --pretrained "
                             "or --weights")
        backbone = init_backbone(self.init)
        if self.model not in (TrainConfig.model, backbone):
            raise UsageError(f"--model {self.model}: --init {self.init} is a {backbone}; omit --model")
        return backbone

    def preprocess_spec(self) -> PreprocessSpec:
        """How an image becomes this run's input: the size set here, the mean and std the backbone's
        weights expect. The cache is prepared with it and model.json carries it to export and serving."""
        backbone = resolve_name(self.model)
        return PreprocessSpec(image_size=self.image_size, mean=backbone.mean, std=backbone.std)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> TrainConfig:
        d = dict(d)
        aug = d.pop("augment", None) or {}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        unknown_aug = set(aug) - {f.name for f in dataclasses.fields(AugmentConfig)}
        if unknown or unknown_aug:
            names = sorted(unknown) + [f"augment.{k}" for k in sorted(unknown_aug)]
            raise SeedlingsError(f"{where}: unknown setting(s) {', '.join(names)}; "
                                 f"valid: {', '.join(f.name for f in dataclasses.fields(cls))}")
        try:
            return cls(**d, augment=AugmentConfig(**aug))
        except TypeError as exc:
            raise SeedlingsError(f"{where}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_yaml(path: str | Path, flag: str = "--config") -> dict:
    """A YAML mapping from a user's file, or an error that names the flag, the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SeedlingsError(f"{flag} {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SeedlingsError(f"{flag} {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SeedlingsError(f"{flag} {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


# Fine-tuning learned weights needs another recipe than training from scratch: a backbone that has
# ImageNet weights, fewer epochs, a lower learning rate. Measured in docs/MODEL_CARD.md: on all 4,027 images
# (5 folds, two weight seeds each) 192 px scores 0.9655 out-of-fold against 0.9593-0.9613 at 160 px, so the
# shipped default is trained with --image-size 192 (session 17); the recipe keeps 160 px, which costs 1.4x less
# per step, because a user's run (--pretrained, --init) must finish a folder of 16 photos a species in
# 5 minutes on 2 cores (model card, Session 13).
FINETUNE = {"model": "efficientnet_lite0", "image_size": 160, "epochs": 10, "batch_size": 48, "lr": 1e-3,
            "warmup_epochs": 1.0, "ema_decay": 0.99, "min_steps": 200,
            "augment": {"rotate": False, "right_angles": True, "flip": True, "scale_min": 1.0, "scale_max": 1.0,
                        "translate": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0}}


def recipe(values: dict) -> dict:
    """The defaults that apply: FINETUNE when the run starts from learned weights (--pretrained or
    --init), the from-scratch defaults otherwise. --init keeps its model's backbone. K-fold runs keep their
    last epoch: the fold that scores a model must not choose its epoch."""
    folds = {"keep": "last"} if values.get("folds") else {}
    if not (values.get("pretrained") or values.get("init")):
        return folds
    return {**folds, **{k: v for k, v in FINETUNE.items() if not (k == "model" and values.get("init"))}}


def resolve(config_file: str | None, overrides: dict) -> TrainConfig:
    """Defaults, the fine-tuning recipe when it applies, then the YAML file, then every flag the user gave."""
    base = TrainConfig().to_dict()
    file_values = load_yaml(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    finetune = recipe({**file_values, **given})
    aug = {**base["augment"], **finetune.pop("augment", {}), **(file_values.pop("augment", None) or {}),
           **(given.pop("augment", None) or {})}
    base.update(finetune)
    base.update(file_values)
    base.update(given)
    base["augment"] = aug
    return TrainConfig.from_dict(base, where=config_file or "settings").validate()
