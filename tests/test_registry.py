"""The model registry (seedlings/registry.py) and promote's rule (seedlings/promotion.py), on real exported models.

The models: the session's tiny exported model ("good", right on ~90 % of the synthetic test photos) and the same
network with two species' names exchanged in model.json ("swapped": wrong on those two species). Both run with ONNX
Runtime, as `seedlings promote` runs them.
"""

from __future__ import annotations

import json
import os

import pytest
from tests.helpers import make_dataset
from tests.model_variants import SWAP, flip_a_byte, model_variant

from seedlings.artifact import ModelFileError
from seedlings.errors import SeedlingsError
from seedlings.promotion import Answers, compare, decide, promote
from seedlings.registry import CURRENT, HISTORY, Registry, RegistryError, check_version, is_registry


@pytest.fixture(scope="module")
def models(exported_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("variants")
    return {
        "good": model_variant(exported_model, base / "good", "good"),
        "good2": model_variant(exported_model, base / "good2", "good2"),
        "swapped": model_variant(exported_model, base / "swapped", "swapped", swap=SWAP),
        "swapped2": model_variant(exported_model, base / "swapped2", "swapped2", swap=SWAP),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("test-photos") / "test", per_class=10, seed=5)


# -- the folder: versions in, the pointer, the history ---------------------------------------------------------
def test_add_copies_a_verified_model_once_and_refuses_a_version_with_other_content(models, tmp_path):
    registry = Registry(tmp_path / "registry")
    assert registry.add(models["good"]) == ("good", True)
    assert (registry.version_dir("good") / "model.onnx").read_bytes() == (models["good"] / "model.onnx").read_bytes()
    assert registry.add(models["good"]) == ("good", False)  # the same content again: nothing to do
    with pytest.raises(RegistryError, match="already in the registry with other content.*--as-version"):
        registry.add(models["swapped"], "good")
    assert registry.versions() == ["good"]
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".incoming")] == []
    assert registry.current() is None  # adding is not promoting


def test_as_version_rewrites_the_copy_s_model_json_so_the_service_names_it(models, tmp_path):
    registry = Registry(tmp_path / "registry")
    assert registry.add(models["good"], "2.0") == ("2.0", True)
    assert json.loads((registry.version_dir("2.0") / "model.json").read_text())["version"] == "2.0"
    assert json.loads((models["good"] / "model.json").read_text())["version"] == "good"  # the source untouched


def test_a_version_is_readable_by_the_service_whatever_the_source_s_mode(models, tmp_path):
    """The service may run as another user: a private (0700) export folder still gives a version it can read."""
    private = model_variant(models["good"], tmp_path / "private", "private")
    private.chmod(0o700)
    (private / "model.onnx").chmod(0o600)
    registry = Registry(tmp_path / "registry")
    registry.add(private)
    mask = os.umask(0)
    os.umask(mask)
    folder = registry.version_dir("private")
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (folder / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_corrupt_or_unexported_candidate_never_enters(models, trained_run, tmp_path):
    corrupt = model_variant(models["good"], tmp_path / "corrupt", "corrupt")
    flip_a_byte(corrupt / "model.onnx")
    registry = Registry(tmp_path / "registry")
    with pytest.raises(ModelFileError, match="sha256 .* does not match"):
        registry.add(corrupt)
    with pytest.raises(RegistryError, match="not an exported model.*seedlings export"):
        registry.add(trained_run)  # a run folder: PyTorch weights, no model.onnx
    assert registry.versions() == []


def test_version_names_stay_inside_the_registry(tmp_path):
    for bad in ("../elsewhere", "a/b", ".hidden", "", CURRENT, HISTORY):
        with pytest.raises(RegistryError, match="not a usable version name"):
            check_version(bad)
    registry = Registry(tmp_path)
    (tmp_path / CURRENT).write_text(json.dumps({"version": "../../etc"}))
    with pytest.raises(RegistryError, match="not a usable version name"):
        registry.pointer()
    (tmp_path / CURRENT).write_text('{"version": ')  # cut short by hand: the message names the file
    with pytest.raises(SeedlingsError, match=f"{CURRENT}.*not valid JSON"):
        registry.pointer()


def test_switch_refuses_when_current_changed_while_deciding(models, tmp_path):
    registry = Registry(tmp_path / "registry")
    for name in ("good", "good2", "swapped"):
        registry.add(models[name])
    registry.switch("good", None, "first")
    registry.switch("good2", "good", "accepted")
    with pytest.raises(RegistryError, match="changed from good to good2 while this promotion was deciding"):
        registry.switch("swapped", "good", "accepted")
    assert registry.current() == "good2"
    assert is_registry(registry.root) and not is_registry(models["good"])


def test_rollback_walks_back_through_the_promotions_and_is_recorded(models, tmp_path):
    registry = Registry(tmp_path / "registry")
    for name in ("good", "good2", "swapped"):
        registry.add(models[name])
    registry.switch("good", None, "first")
    registry.switch("good2", "good", "accepted")
    registry.switch("swapped", "good2", "refused", forced=True, reason="urgent")
    assert registry.rollback("swapped is wrong on two species").version == "good2"
    assert registry.pointer().previous == "good"
    assert registry.rollback().version == "good"
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback()
    history = registry.history()
    assert [(r["from"], r["to"], r["decision"], r["forced"]) for r in history] == [
        (None, "good", "first", False), ("good", "good2", "accepted", False), ("good2", "swapped", "refused", True),
        ("swapped", "good2", "rollback", False), ("good2", "good", "rollback", False)]
    assert history[2]["reason"] == "urgent" and history[3]["reason"] == "swapped is wrong on two species"
    pointer = json.loads((registry.root / CURRENT).read_text())
    assert (pointer["version"], pointer["decision"]) == ("good", "rollback")


def test_a_history_line_cut_by_a_crash_is_skipped(models, tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.add(models["good"])
    registry.switch("good", None, "first")
    with open(registry.root / HISTORY, "a") as fh:
        fh.write('{"time": "2030-01-01", "fr')
    assert [r["to"] for r in registry.history()] == ["good"]


# -- the rule ------------------------------------------------------------------------------------------------------
def answers(version: str, classes: list[str], predicted: str) -> Answers:
    return Answers(version, classes, list(predicted))


def test_the_rule_refuses_a_species_drop_over_the_margin_even_when_overall_is_equal():
    truth = list("AAAABBBBCCCC")
    current = answers("1", ["A", "B", "C"], "AAAABBBBCCAA")  # 10 right
    candidate = answers("2", ["A", "B", "C"], "AAAABBBACCCA")  # 10 right too: B loses one, C gains one
    figures = compare(truth, candidate, current)
    assert figures["candidate"]["f1_micro"] == figures["current"]["f1_micro"]
    decision, failures = decide(figures, max_class_drop=0.05)
    assert decision == "refused" and len(failures) == 1 and failures[0].startswith("B: F1 1.000 → 0.857")
    assert decide(figures, max_class_drop=0.15) == ("accepted", [])
    assert figures["mcnemar"] == {"only_candidate_right": 1, "only_current_right": 1, "p": 1.0}


def test_the_rule_refuses_a_candidate_worse_overall_and_says_by_how_much():
    truth = list("AAAABBBB")
    figures = compare(truth, answers("2", ["A", "B"], "AAABBBBB"), answers("1", ["A", "B"], "AAAABBBB"))
    decision, failures = decide(figures, max_class_drop=1.0)  # no species rule: the overall one alone
    assert decision == "refused"
    assert failures == ["overall micro-F1 0.8750 is below the current model's 1.0000 (1 photo(s) only the current "
                        "model gets right, 0 only the candidate; exact McNemar p = 1)"]


def test_a_species_the_current_model_does_not_know_counts_as_its_error():
    """Feedback brought photos of a new species: the current model cannot name them, the candidate learnt it."""
    truth = list("AAAABBBBNN")
    current = answers("1", ["A", "B"], "AAAABBBBAB")
    candidate = answers("2", ["A", "B", "N"], "AAAABBBBNN")
    figures = compare(truth, candidate, current)
    assert figures["current"]["f1_micro"] == 0.8 and figures["candidate"]["f1_micro"] == 1.0
    assert figures["current"]["species_not_known"] == ["N"] and figures["current"]["per_class"]["N"] == 0.0
    assert figures["mcnemar"]["only_candidate_right"] == 2
    assert decide(figures) == ("accepted", [])
    # and the other way round: a candidate that forgot a species loses all its photos
    assert decide(compare(truth, current, candidate))[0] == "refused"


def test_the_first_model_of_an_empty_registry_becomes_current():
    figures = compare(list("AB"), answers("1", ["A", "B"], "AB"), None)
    assert decide(figures) == ("first", [])


# -- promote: copy, compare on real models, switch or refuse, record --------------------------------------------
def test_promote_accepts_a_better_model_refuses_a_worse_one_and_records_both(models, photos, tmp_path):
    registry = Registry(tmp_path / "registry")
    first = promote(registry, models["swapped"], [photos])
    assert (first.decision, first.switched, registry.current()) == ("first", True, "swapped")
    better = promote(registry, models["good"], [photos])
    assert (better.decision, better.switched, registry.current()) == ("accepted", True, "good")
    assert better.figures["candidate"]["f1_micro"] > better.figures["current"]["f1_micro"]
    assert better.figures["mcnemar"]["only_candidate_right"] > better.figures["mcnemar"]["only_current_right"]
    worse = promote(registry, models["swapped2"], [photos])
    assert (worse.decision, worse.switched, registry.current()) == ("refused", False, "good")
    assert worse.failures[0].startswith("overall micro-F1 ")
    assert sorted(f.split(":")[0] for f in worse.failures[1:]) == sorted(SWAP)  # the two species it gets wrong
    forced = promote(registry, models["swapped2"], [photos], force=True, reason="the label fix needs it now")
    assert (forced.decision, forced.switched, forced.forced, registry.current()) == ("refused", True, True, "swapped2")
    records = registry.history()
    assert [(r["to"], r["decision"], r["switched"], r["forced"]) for r in records] == [
        ("swapped", "first", True, False), ("good", "accepted", True, False), ("swapped2", "refused", False, False),
        ("swapped2", "refused", True, True)]
    assert records[-1]["reason"] == "the label fix needs it now"
    assert records[2]["figures"]["n"] == 30 and records[2]["figures"]["test"] == ["test"]
    assert promote(registry, models["swapped2"], [photos]).decision == "unchanged"  # already current: no record
    assert len(registry.history()) == 4


def test_unreadable_photos_are_skipped_for_both_models(models, photos, tmp_path):
    data = tmp_path / "with-a-bad-photo"
    make_dataset(data, per_class=3, seed=9)
    (data / "Sugar beet" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    registry = Registry(tmp_path / "registry")
    promote(registry, models["good"], [data])
    outcome = promote(registry, models["good2"], [data, photos])
    assert outcome.figures["n"] == 9 + 30
    assert [s["file"] for s in outcome.figures["skipped"]] == ["broken.png"]
    assert outcome.decision == "accepted"  # the same network: equal on every photo
