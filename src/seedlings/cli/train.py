"""`seedlings train`: every flag is a TrainConfig setting of the same name (also under torchrun)."""

from __future__ import annotations

import argparse

from seedlings.cli.command import Command

NOT_SETTINGS = ("command", "config", "resume")  # the parser's other destinations


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a classifier on a labelled folder (also under torchrun)")
    p.add_argument("--data", help="folder with one sub-folder of images per species")
    p.add_argument("--out", help="run folder to write (weights, model.json, metrics, plots)")
    p.add_argument("--config", help="YAML file of settings; flags given here override it")
    p.add_argument("--model", help="backbone (see `seedlings models`; default resnet10t)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int, dest="image_size")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch, split across processes")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float, dest="weight_decay")
    p.add_argument("--warmup-epochs", type=float, dest="warmup_epochs")
    p.add_argument("--label-smoothing", type=float, dest="label_smoothing")
    p.add_argument("--mixup", type=float, help="mixup Beta α (0 = off)")
    p.add_argument("--cutmix", type=float, help="CutMix Beta α (0 = off)")
    p.add_argument("--drop-path", type=float, dest="drop_path", help="stochastic depth rate")
    p.add_argument("--balance", choices=["loss", "sampler", "none"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--val-fraction", type=float, dest="val_fraction")
    p.add_argument("--val-data", dest="val_data", help="separate labelled folder for validation")
    p.add_argument("--folds", type=int, help="stratified K-fold cross-validation (from --split-seed): with --fold I "
                                              "trains fold I; alone, trains every fold in --out/fold-I "
                                              "(resumable) and writes the out-of-fold predictions")
    p.add_argument("--fold", type=int, help="the fold (0 … K-1) that validates this run")
    p.add_argument("--keep", choices=["best", "last"],
                   help="the weights the run ships: the best validation epoch (default) or the last one")
    p.add_argument("--seed", type=int)
    p.add_argument("--split-seed", type=int, dest="split_seed",
                   help="seed of the validation split (default: --seed); ensemble members share one")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="start from ImageNet weights shipped with the train extra (see `seedlings models`)")
    p.add_argument("--init", help="start from an exported seedlings model folder (e.g. the default model's) "
                                  "instead of ImageNet; its classifier is replaced when the classes differ")
    p.add_argument("--backbone-lr", type=float, dest="backbone_lr",
                   help="learning-rate multiplier of the pretrained layers (default 1)")
    p.add_argument("--freeze-epochs", type=int, dest="freeze_epochs",
                   help="train only the new classifier for this many epochs first, the pretrained layers "
                        "and their batch-norm statistics frozen; they then warm up again (default 0)")
    p.add_argument("--weights", help="local safetensors file of the backbone's ImageNet weights")
    p.add_argument("--no-ema", action="store_false", dest="ema", default=None)
    p.add_argument("--ema-decay", type=float, dest="ema_decay", help="decay of the weights' moving average")
    p.add_argument("--bad-images", choices=["skip", "fail"], dest="bad_images")
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    return p


def run(args: argparse.Namespace) -> int:
    from seedlings.training.fit import train_from_cli  # lazy: torch is the train extra

    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    train_from_cli(args.config, settings, resume=args.resume)
    return 0


COMMAND = Command("train", add_parser, run)
