"""`seedlings train`: every flag is a TrainConfig setting of the same name (also under torchrun)."""

from __future__ import annotations

import argparse
import dataclasses

from seedlings.cli.command import Command
from seedlings.config import FINETUNE, AugmentConfig, TrainConfig

NOT_SETTINGS = ("command", "config", "resume")  # the parser's other destinations


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a classifier on a labelled folder (also under torchrun)")
    p.add_argument("--data", action="append", metavar="DIR",
                   help="folder with one sub-folder of images per species; repeat it to train on several as one "
                        "(classes joined; a photo also in a later folder is kept once, as the later folder's)")
    p.add_argument("--out", help="run folder to write (weights, model.json, metrics, plots)")
    p.add_argument("--config", help="YAML file of settings; flags given here override it")
    p.add_argument("--model", help="backbone (see `seedlings models`)")
    p.add_argument("--epochs", type=int, help="passes over the training images")
    p.add_argument("--min-steps", type=int, dest="min_steps",
                   help="small data sets: a smaller batch and more epochs until this many optimizer steps (0: off; "
                        "the fine-tuning recipe, --pretrained/--init: 200; from scratch: 0)")
    p.add_argument("--image-size", type=int, dest="image_size", help="input size in pixels (square)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch, split across processes")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW), after the warm-up")
    p.add_argument("--weight-decay", type=float, dest="weight_decay", help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, dest="warmup_epochs",
                   help="linear warm-up of the learning rate, then cosine decay")
    p.add_argument("--label-smoothing", type=float, dest="label_smoothing", help="label smoothing of the loss")
    p.add_argument("--teacher", metavar="FILE",
                   help="distil from out-of-fold predictions: an oof.csv of `train --folds K` (or a "
                        "val_predictions.csv) with a row for every training image; each image's target mixes its "
                        "label with that row's probabilities (classes matched by name)")
    p.add_argument("--teacher-weight", type=float, dest="teacher_weight", metavar="A",
                   help="α of --teacher: target = (1 − α)·one-hot label + α·teacher's probabilities, α in [0, 1] "
                        "(no effect without --teacher)")
    p.add_argument("--mixup", type=float, help="mixup Beta α (0 = off)")
    p.add_argument("--cutmix", type=float, help="CutMix Beta α (0 = off)")
    p.add_argument("--drop-path", type=float, dest="drop_path", help="stochastic depth rate")
    p.add_argument("--balance", choices=["loss", "sampler", "none"],
                   help="rare species: weight the loss, sample them more often, or neither")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="arithmetic (auto: bf16 on GPUs and CPUs with AMX/AVX512-BF16, fp16 on older GPUs, else fp32)")
    p.add_argument("--val-fraction", type=float, dest="val_fraction",
                   help="share of each species held out for validation (0: every image trains and the last "
                        "epoch ships; see --calibrate-from)")
    p.add_argument("--val-data", dest="val_data", help="separate labelled folder for validation")
    p.add_argument("--calibrate-from", dest="calibrate_from", metavar="CV_DIR",
                   help="with --val-fraction 0 (every image trains): take the temperature, the 'not a seedling' "
                        "thresholds and the reported accuracy from this `train --folds K` run of the same recipe "
                        "and data (its out-of-fold predictions)")
    p.add_argument("--folds", type=int, help="stratified K-fold cross-validation (from --split-seed): with --fold I "
                                              "trains fold I; alone, trains every fold in --out/fold-I "
                                              "(resumable) and writes the out-of-fold predictions")
    p.add_argument("--fold", type=int, help="the fold (0 … K-1) that validates this run")
    p.add_argument("--keep", choices=["best", "last"],
                   help="the weights the run ships: the best validation epoch or the last one (--folds: the last)")
    p.add_argument("--seed", type=int, help="seed of the weights, shuffles and augmentations")
    p.add_argument("--split-seed", type=int, dest="split_seed",
                   help="seed of the validation split (default: --seed); ensemble members share one")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="start from ImageNet weights shipped with the train extra (see `seedlings models`)")
    p.add_argument("--init", help="start from an exported seedlings model folder (e.g. the default model's) "
                                  "instead of ImageNet; the classes it knows keep their classifier rows, "
                                  "new ones start afresh")
    p.add_argument("--backbone-lr", type=float, dest="backbone_lr",
                   help="learning-rate multiplier of the pretrained layers")
    p.add_argument("--freeze-epochs", type=int, dest="freeze_epochs",
                   help="train only the new classifier for this many epochs first, the pretrained layers "
                        "and their batch-norm statistics frozen; they then warm up again")
    p.add_argument("--weights", help="local safetensors file of the backbone's ImageNet weights")
    p.add_argument("--no-ema", action="store_false", dest="ema", default=None,
                   help="ship the last weights instead of their exponential moving average")
    p.add_argument("--ema-decay", type=float, dest="ema_decay", help="decay of the weights' moving average")
    p.add_argument("--bad-images", choices=["skip", "fail"], dest="bad_images",
                   help="an unreadable image in --data: skip it (listed) or stop")
    p.add_argument("--cache-dir", dest="cache_dir", help="where prepared images are kept (default: "
                                                         "SEEDLINGS_CACHE_DIR or the user cache folder)")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--grad-clip", type=float, dest="grad_clip", help="clip the gradient norm at this value")
    p.add_argument("--no-channels-last", action="store_false", dest="channels_last", default=None,
                   help="keep the NCHW memory layout (channels-last is faster for convolutions on CPUs)")
    _augment_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    _show_defaults(p)
    return p


AUGMENT_HELP = {"rotate": "rotate by any angle", "right_angles": "with rotation off: quarter turns only",
                "flip": "horizontal and vertical flips", "scale_min": "zoom range, low end (< 1 shows more)",
                "scale_max": "zoom range, high end (> 1 crops in)", "translate": "shift, a fraction of the size",
                "brightness": "colour jitter", "contrast": "colour jitter", "saturation": "colour jitter"}


def _augment_flags(p: argparse.ArgumentParser) -> None:
    """``--augment-NAME`` for each AugmentConfig setting (``--[no-]augment-NAME`` for the on/off ones)."""
    for f in dataclasses.fields(AugmentConfig):
        flag = "--augment-" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, dest=f"augment.{f.name}", default=None,
                           help=AUGMENT_HELP[f.name])
        else:
            p.add_argument(flag, type=float, dest=f"augment.{f.name}", metavar="X", help=AUGMENT_HELP[f.name])


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Every setting's help ends with its real default (TrainConfig's), and the fine-tuning recipe's where it
    differs: the help cannot drift from the code that applies them."""
    defaults, recipe = TrainConfig().to_dict(), FINETUNE
    for action in p._actions:
        name = action.dest
        group, _, key = name.partition(".")
        value = defaults[group][key] if key else defaults.get(name, _MISSING)
        if value is _MISSING or not action.help:
            continue
        tuned = recipe.get(group, {}).get(key, _MISSING) if key else recipe.get(name, _MISSING)
        action.help += f" (default: {_shown(value)}" + (f"; fine-tuning: {_shown(tuned)}" if tuned is not _MISSING
                                                       and tuned != value else "") + ")"


def _shown(value) -> str:
    return {True: "on", False: "off", None: "none"}.get(value, str(value)) if not isinstance(value, (int, float)) \
        or isinstance(value, bool) else str(value)


_MISSING = object()


def settings_of(args: argparse.Namespace) -> dict:
    """The TrainConfig settings the flags gave (None: not given), augment.* gathered into one dict."""
    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS and not k.startswith("augment.")}
    augment = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("augment.") and v is not None}
    return {**settings, **({"augment": augment} if augment else {})}


def run(args: argparse.Namespace) -> int:
    from seedlings.training.fit import train_from_cli  # lazy: torch is the train extra

    train_from_cli(args.config, settings_of(args), resume=args.resume)
    return 0


COMMAND = Command("train", add_parser, run)
