"""The `seedlings` command: thin subcommands; each imports its part only when it runs."""

from __future__ import annotations

import argparse
import sys

from seedlings import __version__
from seedlings.errors import SeedlingsError


def _add_train(sub) -> None:
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
    p.add_argument("--seed", type=int)
    p.add_argument("--split-seed", type=int, dest="split_seed",
                   help="seed of the validation split (default: --seed); ensemble members share one")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="start from ImageNet weights shipped with the train extra (see `seedlings models`)")
    p.add_argument("--backbone-lr", type=float, dest="backbone_lr",
                   help="learning-rate multiplier of the pretrained layers (default 1)")
    p.add_argument("--weights", help="local safetensors file of the backbone's ImageNet weights")
    p.add_argument("--no-ema", action="store_false", dest="ema", default=None)
    p.add_argument("--ema-decay", type=float, dest="ema_decay", help="decay of the weights' moving average")
    p.add_argument("--bad-images", choices=["skip", "fail"], dest="bad_images")
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def cmd_train(args) -> int:
    from seedlings.training.fit import train_from_cli

    keys = ["data", "out", "model", "epochs", "image_size", "batch_size", "lr", "weight_decay", "warmup_epochs",
            "label_smoothing", "mixup", "cutmix", "drop_path", "balance", "precision", "val_fraction", "val_data",
            "seed", "split_seed", "pretrained", "backbone_lr", "weights", "ema", "ema_decay", "bad_images",
            "cache_dir", "threads"]
    train_from_cli(args.config, {k: getattr(args, k) for k in keys}, resume=args.resume)
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect or prepare a labelled image folder")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    i = dsub.add_parser("inspect", help="counts per class, image sizes, duplicates, problems")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    q = dsub.add_parser("prepare", help="decode and resize every image once into the cache")
    q.add_argument("dir")
    q.add_argument("--image-size", type=int, default=128, dest="image_size")
    q.add_argument("--cache-dir", dest="cache_dir")
    q.add_argument("--bad-images", choices=["skip", "fail"], default="skip", dest="bad_images")
    q.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")


def cmd_data(args) -> int:
    if args.data_cmd == "inspect":
        from seedlings.data.inspect import inspect_folder, print_inspection

        result = inspect_folder(args.dir)
        if args.json:
            import json

            print(json.dumps(result, indent=2, ensure_ascii=False))
        else:
            print_inspection(result)
        return 0
    from seedlings.data import prepare

    data = prepare(args.dir, args.image_size, cache_root=args.cache_dir, bad_images=args.bad_images,
                   force=args.force)
    state = "built" if data.rebuilt else "up to date"
    print(f"cache {state}: {data.cache_dir} ({len(data.files)} images at {data.image_size}px, "
          f"{len(data.classes)} classes, {len(data.bad)} skipped)")
    for b in data.bad:
        print(f"  skipped {b['path']}: {b['reason']}", file=sys.stderr)
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list backbones with parameters and FLOPs")
    p.add_argument("--image-size", type=int, default=128, dest="image_size")
    p.add_argument("--json", action="store_true")


def cmd_models(args) -> int:
    from seedlings.models import describe_models
    from seedlings.tables import print_table

    rows = describe_models(args.image_size)
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    print_table(f"Backbones (12 classes, {args.image_size}px)",
                ["name", "family", "params (M)", "GFLOPs", "timm", "note"],
                [[r["name"] + (" *" if r["default"] else ""), r["family"], f"{r['params_m']:.2f}",
                  f"{r['gflops']:.2f}", r["timm"], r["note"]] for r in rows])
    return 0


COMMANDS = {"train": cmd_train, "data": cmd_data, "models": cmd_models}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedlings", description="Identify plant seedlings from photos.")
    parser.add_argument("--version", action="version", version=f"seedlings {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data, _add_models, _add_train):
        add(sub)
    from seedlings import cli_more

    cli_more.add_commands(sub, COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SeedlingsError as exc:
        print(f"seedlings {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"seedlings {args.command}: interrupted", file=sys.stderr)
        return 130
