"""`seedlings runs`: compare finished runs (the sweep's leaderboard) and train one sweep experiment.

`compare` reads only what every finished run folder holds (model.json, metrics.jsonl), so it works
on a laptop over a copy of the runs volume as well as inside the cluster. `sweep-item` is what each
pod of the sweep Indexed Job runs: its completion index picks one experiment from a YAML file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from seedlings.artifact import ModelFile
from seedlings.config import TrainConfig, load_yaml, resolve
from seedlings.errors import SeedlingsError, UsageError
from seedlings.evaluation.plots import figures, save_png
from seedlings.fileio import atomic_write_text
from seedlings.tables import is_terminal, print_plain

HEADER = [
    "run",
    "backbone",
    "image",
    "epochs",
    "val micro-F1",
    "val macro-F1",
    "params (M)",
    "train wall",
    "img/s",
    "world",
]
EXPERIMENT_KEYS = {"name", "dataset", "subdir"}  # sweep-only keys; everything else is a train setting


# ---------------------------------------------------------------- compare


def find_runs(root: Path) -> tuple[list[Path], list[Path]]:
    """Finished runs (model.json + metrics.jsonl) and unfinished ones (checkpoint only), 3 levels deep."""
    finished, unfinished = [], []
    for depth in ("*", "*/*", "*/*/*"):
        for d in sorted(root.glob(depth)):
            if not d.is_dir() or any(part.startswith(".") for part in d.relative_to(root).parts):
                continue
            if (d / "model.json").is_file() and (d / "metrics.jsonl").is_file():
                finished.append(d)
            elif (d / "checkpoint.safetensors").is_file():
                unfinished.append(d)
    return finished, unfinished


def _read_metrics(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SeedlingsError(
                    f"{path}:{n}: not a JSON line ({exc.msg}); is the file truncated?"
                ) from exc
    return rows


def summarize(run: Path, root: Path) -> dict:
    """One leaderboard row from a run folder; missing optional fields become None."""
    model_file = ModelFile.load(run)
    rows = _read_metrics(run / "metrics.jsonl")
    metrics, training = model_file.metrics, model_file.training
    speeds = [r["train_images_per_s"] for r in rows if r.get("train_images_per_s")]
    params = model_file.get("params", training.get("params"))
    return {
        "run": str(run.relative_to(root)) if run != root else run.name,
        "backbone": model_file.backbone,
        "image_size": model_file.image_size,
        "epochs": max((r.get("epoch", 0) for r in rows), default=training.get("epochs")),
        "f1_micro": metrics.get("f1_micro"),
        "f1_macro": metrics.get("f1_macro"),
        "params_m": params / 1e6 if isinstance(params, (int, float)) and params > 1000 else params,
        "wall_s": training.get("wall_s"),
        "images_per_s": sum(speeds) / len(speeds) if speeds else None,
        "world_size": training.get("world_size"),
        "best_epoch": metrics.get("best_epoch"),
    }


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _wall(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [
        [
            r["run"],
            r["backbone"] or "?",
            _fmt(r["image_size"], "d"),
            _fmt(r["epochs"], "d"),
            _fmt(r["f1_micro"], ".4f"),
            _fmt(r["f1_macro"], ".4f"),
            _fmt(r["params_m"], ".2f"),
            _wall(r["wall_s"]),
            _fmt(r["images_per_s"], ".0f"),
            _fmt(r["world_size"], "d"),
        ]
        for r in rows
    ]


def print_leaderboard(title: str, rows: list[list[str]], file=None) -> None:
    """A rich table whose names and numbers never wrap mid-word (tables.print_table folds them); plain rows
    when the output is not a terminal."""
    out = file or sys.stdout
    if not is_terminal(out):
        print_plain(title, HEADER, rows, out)
        return
    table = Table(title=title)
    for i, h in enumerate(HEADER):
        table.add_column(h, no_wrap=i < 2, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*r)
    Console(file=out, width=max(120, Console().width)).print(table)


def markdown(rows: list[dict], unfinished: list[str]) -> str:
    lines = [
        "# Leaderboard",
        "",
        "Finished runs, best validation micro-F1 first.",
        "",
        "| # | " + " | ".join(HEADER) + " |",
        "|" + "---|" * (len(HEADER) + 1),
    ]
    lines += [f"| {i} | " + " | ".join(cells) + " |" for i, cells in enumerate(table_rows(rows), 1)]
    if unfinished:
        lines += ["", f"Not finished yet: {', '.join(unfinished)}."]
    return "\n".join(lines) + "\n"


def plot_leaderboard(rows: list[dict], path: Path) -> bool:
    """Bar chart of micro- and macro-F1 per run; False when matplotlib (train extra) is missing."""
    try:
        plt = figures()
    except ImportError:
        return False
    names = [r["run"] for r in rows][::-1]
    micro = [r["f1_micro"] or 0.0 for r in rows][::-1]
    macro = [r["f1_macro"] or 0.0 for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], micro, height=0.4, label="micro-F1")
    ax.barh([i - 0.2 for i in y], macro, height=0.4, label="macro-F1")
    ax.set_yticks(list(y), names)
    ax.set_xlim(0, 1)
    ax.set_xlabel("validation F1")
    ax.legend(loc="lower right")
    ax.set_title("seedlings leaderboard")
    save_png(fig, path)
    return True


def compare(runs_dir: str, out: str | None = None, file=None) -> int:
    """Print the leaderboard of the finished runs under runs_dir; write leaderboard.md and .png."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise UsageError(f"runs compare {runs_dir}: no such folder")
    finished, unfinished = find_runs(root)
    if not finished:
        raise SeedlingsError(
            f"{runs_dir}: no finished run folder (one with model.json and metrics.jsonl) "
            f"in it or 3 levels below; {len(unfinished)} unfinished"
        )
    rows = sorted((summarize(r, root) for r in finished), key=lambda r: -(r["f1_micro"] or -1.0))
    pending = [str(u.relative_to(root)) for u in unfinished]
    print_leaderboard(f"Leaderboard: {len(rows)} finished run(s) in {runs_dir}", table_rows(rows), file)
    dest = Path(out) if out else root
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest / "leaderboard.md", markdown(rows, pending))
    wrote = ["leaderboard.md"] + (
        ["leaderboard.png"] if plot_leaderboard(rows, dest / "leaderboard.png") else []
    )
    note = f"; not finished: {', '.join(pending)}" if pending else ""
    print(f"wrote {', '.join(str(dest / w) for w in wrote)}{note}", file=file or sys.stdout)
    return 0


# ---------------------------------------------------------------- sweeps


def load_experiment(path: str, index: int) -> dict:
    """Experiment ``index`` of a sweep file, merged over its defaults."""
    doc = load_yaml(path, "--experiments")
    experiments = doc.get("experiments") if isinstance(doc, dict) else None
    if not isinstance(experiments, list) or not all(isinstance(e, dict) for e in experiments):
        raise SeedlingsError(
            f"--experiments {path}: expected a mapping with a list `experiments` of mappings"
        )
    if not 0 <= index < len(experiments):
        raise UsageError(
            f"--index {index}: {path} has {len(experiments)} experiment(s), so 0–"
            f"{len(experiments) - 1}; does the Job's `completions` match the file?"
        )
    return {**(doc.get("defaults") or {}), **experiments[index]}


def experiment_overrides(exp: dict, runs_dir: str, data_root: str) -> dict:
    """`seedlings train` settings for one experiment: its data folder and run folder filled in."""
    if "dataset" not in exp:
        raise SeedlingsError(
            "experiment has no `dataset` (a folder under --data-root); set it in the "
            "experiment or in `defaults`"
        )
    default = TrainConfig()
    name = exp.get("name") or (f"{exp.get('model', default.model)}-{exp.get('image_size', default.image_size)}-"
                               f"{exp['dataset']}")
    data = Path(data_root) / str(exp["dataset"])
    if exp.get("subdir"):
        data = data / str(exp["subdir"])
    settings = {k: v for k, v in exp.items() if k not in EXPERIMENT_KEYS}
    return {**settings, "data": str(data), "out": str(Path(runs_dir) / str(name))}


def sweep_item(
    experiments: str,
    index: int,
    runs_dir: str,
    data_root: str,
    cache_dir: str | None = None,
    threads: int | None = None,
) -> int:
    """Train one experiment; resumable, and a no-op when its run already finished (Job retries are safe)."""
    overrides = experiment_overrides(load_experiment(experiments, index), runs_dir, data_root)
    for key, value in (("cache_dir", cache_dir), ("threads", threads)):
        if value is not None:
            overrides[key] = value
    out = Path(overrides["out"])
    if (out / "model.json").is_file():
        print(f"experiment {index}: {out} already finished; nothing to do", file=sys.stderr)
        return 0
    print(
        f"experiment {index}: {json.dumps({k: v for k, v in overrides.items()}, default=str)}",
        file=sys.stderr,
        flush=True,
    )
    from seedlings.training.fit import train  # lazy: `runs compare` works without the train extra

    # A Job may restart this pod: resume from the run's checkpoint rather than start over.
    train(sweep_config(overrides, f"{experiments}[{index}]"), resume=True)
    return 0


def sweep_config(overrides: dict, where: str) -> TrainConfig:
    """An experiment's settings resolved as `seedlings train` resolves flags (`pretrained: true` selects
    the fine-tuning recipe)."""
    try:
        return resolve(None, overrides)
    except SeedlingsError as exc:
        raise type(exc)(f"{where}: {exc}") from exc
