"""--teacher: distillation from out-of-fold soft labels (training/teacher.py, the loss in loop.py, the run record)."""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.helpers import SYNTH_CLASSES, make_dataset

from seedlings.data import Subset
from seedlings.errors import SeedlingsError, UsageError
from seedlings.training.folds import write_predictions
from seedlings.training.loop import _loss, mix_batch, soft_cross_entropy, soft_targets
from seedlings.training.teacher import read_teacher

# -- the loss ----------------------------------------------------------------------------------------------


def test_the_soft_target_loss_equals_a_hand_computed_value():
    logits = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    labels, teacher, alpha = [0, 2], [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], 0.5
    expected = 0.0
    for z, y, p in zip(logits, labels, teacher):
        log_norm = math.log(sum(math.exp(v) for v in z))
        q = [(1 - alpha) * (c == y) + alpha * p[c] for c in range(3)]  # (0.85, 0.1, 0.05), (0.05, 0.15, 0.8)
        expected += -sum(q[c] * (z[c] - log_norm) for c in range(3)) / 2
    target = soft_targets(torch.tensor(labels), torch.tensor(teacher), alpha)
    assert torch.allclose(target, torch.tensor([[0.85, 0.1, 0.05], [0.05, 0.15, 0.8]]))
    assert soft_cross_entropy(torch.tensor(logits), target).item() == pytest.approx(expected, rel=1e-6)
    # Worked out on paper: image 1, −log p = (0.16985, 2.16985, 3.16985), loss 0.51985; image 2, −log p =
    # (0.95803, 0.95803, 1.45803), loss 1.35803; the mean 0.93894.
    assert expected == pytest.approx(0.93894, abs=1e-4)


def test_class_weights_and_smoothing_weigh_each_term_by_hand():
    """With weights w and smoothing s: Σ_i Σ_c w_c·((1 − s)·q_ic + s/C)·(−log p_ic) / Σ_i Σ_c w_c·q_ic."""
    logits, target = torch.tensor([[1.0, -1.0], [0.0, 2.0]]), torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    w, s = [2.0, 0.5], 0.2
    num = den = 0.0
    for z, q in zip(logits.tolist(), target.tolist()):
        log_norm = math.log(sum(math.exp(v) for v in z))
        num += sum(w[c] * ((1 - s) * q[c] + s / 2) * (log_norm - z[c]) for c in range(2))
        den += sum(w[c] * q[c] for c in range(2))
    got = soft_cross_entropy(logits, target, torch.tensor(w), s).item()
    assert got == pytest.approx(num / den, rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_alpha_zero_is_plain_cross_entropy(weighted, smoothing):
    """α = 0 turns the soft target into the one-hot label: PyTorch's cross-entropy on class indices, with its
    weighted mean and label smoothing, up to rounding."""
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(16, 5, generator=gen) * 3, torch.randint(0, 5, (16,), generator=gen)
    weight = torch.rand(5, generator=gen) + 0.2 if weighted else None
    teacher = torch.softmax(torch.randn(16, 5, generator=gen), 1)
    plain = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
    soft = soft_cross_entropy(logits, soft_targets(labels, teacher, 0.0), weight, smoothing)
    assert soft.item() == pytest.approx(plain.item(), rel=1e-5)
    other = soft_cross_entropy(logits, soft_targets(labels, teacher, 0.5), weight, smoothing)
    assert abs(other.item() - plain.item()) > 1e-3  # the teacher does change the loss


def test_the_loss_without_a_teacher_is_the_plain_cross_entropy_bit_for_bit():
    """Class indices take F.cross_entropy itself, as before --teacher existed, not the soft formula with a
    one-hot target: that one differs in the last bits on some inputs (checked here, so this test can tell)."""
    gen = torch.Generator().manual_seed(1)
    differs = 0
    for _ in range(20):
        logits, labels = torch.randn(32, 4, generator=gen) * 4, torch.randint(0, 4, (32,), generator=gen)
        for weight in (None, torch.rand(4, generator=gen) + 0.2):
            for smoothing in (0.0, 0.1):
                state = SimpleNamespace(class_weights=weight, cfg=SimpleNamespace(label_smoothing=smoothing))
                plain = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
                assert torch.equal(_loss(logits, labels, state), plain)
                onehot = F.one_hot(labels, 4).float()
                differs += not torch.equal(soft_cross_entropy(logits, onehot, weight, smoothing), plain)
    assert differs > 0


def test_mixup_pairs_the_soft_rows_as_it_pairs_the_labels():
    from seedlings.config import TrainConfig

    x, labels = torch.rand(8, 3, 8, 8), torch.arange(8) % 3
    rows = soft_targets(labels, torch.softmax(torch.randn(8, 3), 1), 0.5)
    cfg = TrainConfig(mixup=0.4, cutmix=1.0)
    for seed in range(4):
        _, partner, lam = mix_batch(x, labels, cfg, torch.Generator().manual_seed(seed))
        _, partner_rows, lam_rows = mix_batch(x, rows, cfg, torch.Generator().manual_seed(seed))
        assert lam_rows == lam and torch.equal(partner_rows.argmax(1), partner)
        assert torch.equal(partner_rows, rows[torch.tensor([int((partner_rows[i] == rows).all(1).nonzero()[0])
                                                            for i in range(8)])])


# -- the file ----------------------------------------------------------------------------------------------

CLASSES = list(SYNTH_CLASSES)  # Black-grass, Common Chickweed, Sugar beet


def _subset() -> Subset:
    """9 images, 3 a class; the first two of each class train, the third validates."""
    files = [f"{c}/img_{i}.png" for c in CLASSES for i in range(3)]
    labels = np.repeat(np.arange(3), 3)
    return Subset(np.zeros((9, 2, 2, 3), np.uint8), labels, np.asarray([0, 1, 3, 4, 6, 7]), files)


def _probs(label: int, n: int = 3) -> np.ndarray:
    p = np.full(n, 0.2 / (n - 1))
    p[label] = 0.8
    return p


def _oof(path, files=None, classes=CLASSES, true=None, probs=None):
    """An oof.csv written by the same code as `train --folds K`'s."""
    subset = _subset()
    files = subset.files if files is None else files
    true = [CLASSES[int(subset.labels[subset.files.index(f)])] for f in files] if true is None else true
    probs = np.stack([_probs(classes.index(t), len(classes)) for t in true]) if probs is None else probs
    write_predictions(path, classes, files, true, probs)
    return path


def test_columns_are_matched_by_name_and_only_training_images_need_rows(tmp_path):
    """Another column order than the run's; no row for the validation images; rows beyond the data are fine."""
    subset = _subset()
    order = [CLASSES[2], CLASSES[0], CLASSES[1]]
    train_files = [subset.files[r] for r in subset.rows]
    true = [CLASSES[int(subset.labels[r])] for r in subset.rows] + ["Sugar beet"]
    probs = np.stack([_probs(order.index(t)) for t in true])
    path = _oof(tmp_path / "oof.csv", train_files + ["Sugar beet/elsewhere.png"], order, true, probs)
    teacher = read_teacher(path, CLASSES, subset)
    assert teacher.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and teacher.rows == 7
    assert teacher.used == 6 and teacher.probs.dtype == np.float32
    for r in subset.rows:
        assert teacher.probs[r].argmax() == subset.labels[r] and teacher.probs[r].sum() == pytest.approx(1)
    assert not teacher.probs[[2, 5, 8]].any()  # validation rows: none needed, zeros


def test_a_val_predictions_file_is_a_teacher_too(tmp_path):
    from seedlings.training.run_folder import write_predictions

    subset = _subset()
    whole = Subset(subset.images, subset.labels, np.arange(9), subset.files)
    probs = np.stack([_probs(int(y)) for y in subset.labels])
    write_predictions(tmp_path / "val_predictions.csv", whole, CLASSES, probs)
    teacher = read_teacher(tmp_path / "val_predictions.csv", CLASSES, subset)
    assert np.allclose(teacher.probs[subset.rows], probs[subset.rows], atol=1e-6)


def _error(path, subset=None) -> str:
    with pytest.raises(SeedlingsError) as info:
        read_teacher(path, CLASSES, subset or _subset())
    return str(info.value)


def _text(tmp_path, text: str, name="oof.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_missing_an_empty_or_a_folder_teacher_says_what_to_give(tmp_path):
    message = _error(tmp_path / "nope.csv")
    assert f"--teacher {tmp_path / 'nope.csv'}: no such file" in message and "seedlings train --folds K" in message
    assert "is empty" in _error(_text(tmp_path, "\n\n"))
    _oof(tmp_path / "oof.csv")
    assert f"is a folder; give the CSV file itself (e.g. {tmp_path / 'oof.csv'})" in _error(tmp_path)


def test_a_file_that_is_not_a_predictions_csv_is_refused(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert "not a CSV text file" in _error(png)
    message = _error(_text(tmp_path, "species,score\na,1\n"))
    assert "not a predictions CSV" in message and "file,true" in message
    assert "line 2 is not valid CSV (field larger than field limit" in _error(
        _text(tmp_path, "file,true,predicted," + ",".join(CLASSES) + "\n" + "x" * 200_000 + "\n"))
    unclosed = _text(tmp_path, "file,true,predicted," + ",".join(CLASSES) + '\n"Black-grass/img_0.png,B\n')
    assert "line 2 has 1 fields, the header 6; the file is damaged" in _error(unclosed)


def test_class_columns_must_be_the_runs_by_name(tmp_path):
    path = _oof(tmp_path / "oof.csv", classes=[*CLASSES[:2], "Maize"], probs=np.full((9, 3), 1 / 3),
                true=["Black-grass"] * 9)
    message = _error(path)
    assert "column(s) Maize are not classes of this run" in message
    assert "class(es) Sugar beet of this run have no column" in message
    header = "file,true,predicted," + ",".join(CLASSES) + ",Black-grass\n"
    assert "column(s) Black-grass appear twice" in _error(_text(tmp_path, header))


def test_every_training_image_needs_a_row(tmp_path):
    subset = _subset()
    files = [f for f in subset.files if f not in ("Black-grass/img_1.png", "Sugar beet/img_0.png")]
    message = _error(_oof(tmp_path / "oof.csv", files))
    assert "no row for 2 of the 6 training images" in message
    assert "(first: Black-grass/img_1.png, Sugar beet/img_0.png)" in message
    assert "same --data folders in the same order" in message


def test_a_repeated_row_names_both_lines(tmp_path):
    subset = _subset()
    message = _error(_oof(tmp_path / "oof.csv", [*subset.files, subset.files[4]]))
    assert "line 11: Common Chickweed/img_1.png is also on line 6; one row per image" in message


@pytest.mark.parametrize("row, expected", [
    ("0.8,0.1,x", "line 2 (Black-grass/img_0.png): a probability is not a number"),
    ("0.8,0.3,-0.1", "line 2 (Black-grass/img_0.png): probabilities must be finite and ≥ 0"),
    ("nan,0.5,0.5", "line 2 (Black-grass/img_0.png): probabilities must be finite"),
    ("0.8,0.1,0.2", "line 2 (Black-grass/img_0.png): probabilities sum to 1.1, not 1"),
    ("0.8,0.2", "line 2 has 5 fields, the header 6"),
])
def test_each_probability_row_is_checked(tmp_path, row, expected):
    lines = ["file,true,predicted," + ",".join(CLASSES), "Black-grass/img_0.png,Black-grass,Black-grass," + row]
    message = _error(_text(tmp_path, "\n".join(lines) + "\n"))
    assert message.startswith(f"--teacher {tmp_path / 'oof.csv'}: {expected}")


def test_a_probability_sum_within_the_tolerance_is_renormalised(tmp_path):
    subset = _subset()
    probs = np.stack([_probs(int(subset.labels[subset.files.index(f)])) for f in subset.files]) * 1.0008
    teacher = read_teacher(_oof(tmp_path / "oof.csv", probs=probs), CLASSES, subset)
    assert np.allclose(teacher.probs[subset.rows].sum(1), 1, atol=1e-6)


def test_a_teacher_of_another_labelling_is_refused(tmp_path):
    subset = _subset()
    true = [CLASSES[int(y)] for y in subset.labels]
    true[3] = "Sugar beet"  # Common Chickweed/img_0.png, a training image
    message = _error(_oof(tmp_path / "oof.csv", true=true))
    assert "line 5: Common Chickweed/img_0.png is labelled 'Sugar beet' there but 'Common Chickweed' in --data" \
        in message and "another labelling" in message
    true = [CLASSES[int(y)] for y in subset.labels]
    true[2] = "Sugar beet"  # a validation image: not the student's business
    read_teacher(_oof(tmp_path / "oof.csv", true=true), CLASSES, subset)


def test_teacher_settings_are_flags_and_checked():
    from seedlings.cli import build_parser
    from seedlings.cli.train import settings_of
    from seedlings.config import TrainConfig, resolve

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--teacher", "t.csv",
                                      "--teacher-weight", "0.3"])
    cfg = resolve(None, settings_of(args))
    assert (cfg.teacher, cfg.teacher_weight) == ("t.csv", 0.3)
    for bad in (-0.1, 1.5):
        with pytest.raises(UsageError, match=r"--teacher-weight .*: must be in \[0, 1\]"):
            TrainConfig(data="d", out="o", teacher="t.csv", teacher_weight=bad).validate()
    with pytest.raises(UsageError, match="--teacher '': empty"):
        TrainConfig(data="d", out="o", teacher="").validate()
    TrainConfig(data="d", out="o", teacher_weight=0.9).validate()  # no teacher: allowed, no effect


# -- runs --------------------------------------------------------------------------------------------------

def _data_teacher(tmp_path, per_class=5):
    """A synthetic data set and an oof.csv for all of its images (the teacher is confident and right)."""
    data = make_dataset(tmp_path / "d", per_class=per_class)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    true = [f.split("/")[0] for f in files]
    order = [CLASSES[1], CLASSES[2], CLASSES[0]]  # not the run's order: matched by name
    probs = np.stack([_probs(order.index(t)) for t in true])
    return data, _write_oof(tmp_path / "oof.csv", order, files, true, probs)


def _write_oof(path, classes, files, true, probs):
    write_predictions(path, classes, files, true, probs)
    return path


def _common(tmp_path, data, **extra):
    return {"data": str(data), "image_size": 24, "batch_size": 8, "threads": 1, "cache_dir": str(tmp_path / "cache"),
            "progress": False, **extra}


def test_a_run_with_a_teacher_trains_and_records_it(tmp_path):
    import yaml

    from seedlings.models.checkpoint import load_checkpoint
    from seedlings.training.fit import train

    data, oof = _data_teacher(tmp_path)
    run = train(out=str(tmp_path / "run"), epochs=1, teacher=str(oof), teacher_weight=0.3, mixup=0.2, cutmix=1.0,
                balance="loss", **_common(tmp_path, data))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["teacher"], config["teacher_weight"]) == (str(oof), 0.3)
    record = json.loads((run / "model.json").read_text())["training"]["teacher"]
    n_train = len(json.loads((run / "split.json").read_text())["train"])
    assert record == {"file": str(oof), "sha256": hashlib.sha256(oof.read_bytes()).hexdigest(), "weight": 0.3,
                      "rows": 15, "training_images": n_train}
    assert load_checkpoint(run / "checkpoint.safetensors")[3]["teacher_sha256"] == record["sha256"]


def test_a_missing_teacher_stops_the_run_before_the_data_is_prepared(tmp_path):
    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "d", per_class=3, size=24)
    with pytest.raises(SeedlingsError, match="no such file"):
        train(out=str(tmp_path / "run"), epochs=1, teacher=str(tmp_path / "nope.csv"), **_common(tmp_path, data))
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*")), "the images were prepared before the teacher was read"


def test_the_teacher_changes_training_and_alpha_zero_or_no_teacher_does_not(tmp_path):
    """Same seed and data: α = 0 with a teacher, and --teacher-weight without a teacher, give the plain run's
    weights byte for byte (the shuffles and augmentations are untouched); α = 0.5 gives other weights."""
    from seedlings.training.fit import train

    data, oof = _data_teacher(tmp_path, per_class=6)

    def weights(name, **extra):  # 4 steps, class weights and smoothing: the paths where rounding could differ
        settings = _common(tmp_path, data, batch_size=4, balance="loss", label_smoothing=0.1, **extra)
        return (train(out=str(tmp_path / name), epochs=1, **settings) / "weights.safetensors").read_bytes()

    plain = weights("plain")
    assert weights("alpha0", teacher=str(oof), teacher_weight=0.0) == plain
    assert weights("weight-only", teacher_weight=0.9) == plain
    assert weights("alpha05", teacher=str(oof), teacher_weight=0.5) != plain


def test_resume_continues_with_the_same_teacher_and_refuses_a_changed_one(tmp_path):
    from seedlings.training.fit import train

    data, oof = _data_teacher(tmp_path, per_class=4)
    common = _common(tmp_path, data, teacher=str(oof), mixup=0.2)
    whole = train(out=str(tmp_path / "whole"), epochs=2, **common)
    train(out=str(tmp_path / "parts"), epochs=1, **common)
    parts = train(out=str(tmp_path / "parts"), epochs=2, resume=True, **common)
    assert (whole / "weights.safetensors").read_bytes() == (parts / "weights.safetensors").read_bytes()

    text = oof.read_text().splitlines()
    text[1] = text[1].replace("0.8", "0.7").replace("0.1", "0.15")  # another soft label, still a valid file
    oof.write_text("\n".join(text) + "\n")
    with pytest.raises(SeedlingsError, match=r"--resume: --teacher .*oof.csv changed since .*parts started"):
        train(out=str(tmp_path / "parts"), epochs=3, resume=True, **common)
    no_teacher = {k: v for k, v in common.items() if k != "teacher"}
    with pytest.raises(SeedlingsError, match="was trained with a teacher"):
        train(out=str(tmp_path / "parts"), epochs=3, resume=True, **no_teacher)


def test_every_fold_of_a_student_distils_from_the_same_oof_file(tmp_path):
    from seedlings.training.fit import train

    data, oof = _data_teacher(tmp_path, per_class=4)
    root = train(out=str(tmp_path / "cv-student"), folds=3, epochs=1, teacher=str(oof), **_common(tmp_path, data))
    digest = hashlib.sha256(oof.read_bytes()).hexdigest()
    for i in range(3):
        record = json.loads((root / f"fold-{i}" / "model.json").read_text())["training"]["teacher"]
        assert record["sha256"] == digest and record["training_images"] == 8
    assert (root / "oof.csv").is_file()
