"""`seedlings promote`, run as a user runs it: the table, the exit codes, the record, --force, --rollback, --json.

Two distinguishable models from the session's exported one (tests/model_variants.py): "good" and the same network
with two species' names exchanged ("swapped": wrong on those two species).
"""

from __future__ import annotations

import json

import pytest
from tests.helpers import make_dataset
from tests.helpers import seedlings_cli as run
from tests.model_variants import SWAP, model_variant


@pytest.fixture(scope="module")
def models(exported_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-variants")
    return {"good": model_variant(exported_model, base / "good", "1.1"),
            "swapped": model_variant(exported_model, base / "swapped", "1.0", swap=SWAP),
            "swapped2": model_variant(exported_model, base / "swapped2", "1.2", swap=SWAP)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cli-photos") / "test", per_class=10, seed=5)


def current(registry) -> dict:
    return json.loads((registry / "current.json").read_text())


def history(registry) -> list[dict]:
    return [json.loads(line) for line in (registry / "promotions.jsonl").read_text().splitlines()]


def test_promote_accept_refuse_force_and_rollback(models, photos, tmp_path):
    reg = tmp_path / "registry"
    p = run("promote", models["swapped"], "--registry", reg, "--test", photos)
    assert p.returncode == 0, p.stderr
    assert "the registry was empty: 1.0 is now current" in p.stdout and current(reg)["version"] == "1.0"

    p = run("promote", models["good"], "--registry", reg, "--test", photos)
    assert p.returncode == 0, p.stderr
    table = p.stdout.splitlines()
    assert table[1].split() == ["species", "photos", "current", "1.0", "candidate", "1.1", "difference"]
    assert any(line.startswith("overall micro-F1  30") for line in table), p.stdout
    assert "exact McNemar:" in p.stdout and "the candidate is better" in p.stdout
    assert "accepted: 1.1 is now current (was 1.0)" in p.stdout and current(reg)["previous"] == "1.0"

    p = run("promote", models["swapped2"], "--registry", reg, "--test", photos, "--max-class-drop", "0.1")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("seedlings promote: error: refused 1.2: overall micro-F1")
    assert all(f"{species}: F1" in p.stderr for species in SWAP) and "--force --reason TEXT" in p.stderr
    assert "drop over 0.1" in p.stdout and "refused: 1.1 stays current" in p.stdout
    assert current(reg)["version"] == "1.1"

    p = run("promote", models["swapped2"], "--registry", reg, "--test", photos, "--force")
    assert p.returncode == 2 and "--force needs --reason" in p.stderr

    p = run("promote", models["swapped2"], "--registry", reg, "--test", photos, "--force", "--reason", "label fix")
    assert p.returncode == 0, p.stderr
    assert "refused by the rule but forced: 1.2 is now current" in p.stdout
    assert (current(reg)["version"], current(reg)["forced"], current(reg)["reason"]) == ("1.2", True, "label fix")

    p = run("promote", "--rollback", "--registry", reg, "--reason", "customers saw wrong names")
    assert p.returncode == 0, p.stderr
    assert "rolled back: 1.1 is current again" in p.stdout and current(reg)["version"] == "1.1"

    assert [(r["from"], r["to"], r["decision"], r["switched"], r["forced"], r["reason"]) for r in history(reg)] == [
        (None, "1.0", "first", True, False, None), ("1.0", "1.1", "accepted", True, False, None),
        ("1.1", "1.2", "refused", False, False, None), ("1.1", "1.2", "refused", True, True, "label fix"),
        ("1.2", "1.1", "rollback", True, False, "customers saw wrong names")]
    refused = history(reg)[2]["figures"]
    assert refused["max_class_drop"] == 0.1 and refused["n"] == 30
    assert refused["candidate"]["f1_micro"] < refused["current"]["f1_micro"]


def test_json_output_and_a_version_that_exists_with_other_content(models, photos, tmp_path):
    reg = tmp_path / "registry"
    p = run("promote", models["good"], "--registry", reg, "--test", photos, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["decision"], out["version"], out["switched"], out["figures"]["n"]) == ("first", "1.1", True, 30)
    p = run("promote", models["swapped"], "--registry", reg, "--test", photos, "--as-version", "1.1")
    assert p.returncode == 1 and "already in the registry with other content" in p.stderr, p.stderr
    p = run("promote", models["swapped"], "--registry", reg, "--test", photos, "--as-version", "1.1-swapped",
            "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["decision"] == "refused"
    assert json.loads((reg / "1.1-swapped" / "model.json").read_text())["version"] == "1.1-swapped"


@pytest.mark.parametrize(("args", "message"), [
    (["--rollback", "CANDIDATE"], "--rollback takes only --registry"),
    (["CANDIDATE"], "give --test DATA"),
    ([], "give the CANDIDATE"),
    (["CANDIDATE", "--test", "DATA", "--max-class-drop", "5"], "between 0 and 1"),
])
def test_usage_errors_exit_2(args, message, tmp_path):
    p = run("promote", *args, "--registry", tmp_path / "registry")
    assert p.returncode == 2 and message in p.stderr, p.stderr


def test_rollback_of_an_empty_or_mistyped_registry_says_so(tmp_path):
    (tmp_path / "registry").mkdir()
    p = run("promote", "--rollback", "--registry", tmp_path / "registry")
    assert p.returncode == 1 and "no current model; nothing to roll back" in p.stderr, p.stderr
    p = run("promote", "--rollback", "--registry", tmp_path / "regsitry")
    assert p.returncode == 1 and "regsitry: no such registry folder" in p.stderr, p.stderr
    assert not (tmp_path / "regsitry").exists()  # a typo does not make an empty registry
