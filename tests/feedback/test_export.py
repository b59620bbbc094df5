"""Stats and export from a database of votes (SQLite and a real PostgreSQL): majority, conflicts, new species,
the holdout, Label Studio's format, and the CLI that wraps them."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image
from tests.helpers import seedlings_cli

from seedlings.data.index import index_folder
from seedlings.feedback.export import export, holdout_of
from seedlings.feedback.stats import stats
from seedlings.feedback.store import Store


def photo(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (i * 37 % 256, i * 91 % 256, 80)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def filled(db_url) -> Store:
    """Five photos: two agreed Charlock, one 2-against-1 Maize, one tie, one new species, one not a seedling."""
    store = Store(db_url)
    add = store.add
    add(photo(1), "PNG", (24, 24), "Charlock", predicted="Charlock", model_version="1")
    add(photo(2), "PNG", (24, 24), "Charlock", predicted="Maize", model_version="1")
    for label in ("Maize", "Charlock", "Maize"):
        add(photo(3), "PNG", (24, 24), label, predicted="Charlock", model_version="2")
    add(photo(4, "JPEG"), "JPEG", (24, 24), "Maize", predicted="Maize", model_version="2")
    add(photo(4, "JPEG"), "JPEG", (24, 24), "Fat Hen", predicted="Maize", model_version="2")  # a tie: latest wins
    add(photo(5), "PNG", (24, 24), "other:Common Poppy", predicted="Charlock", model_version="2")
    add(photo(6), "PNG", (24, 24), "not-a-seedling", predicted="Maize", model_version="2")
    return store


def test_stats_count_labels_models_agreement_and_confusions(filled):
    found = stats(filled)
    assert (found["images"], found["votes"]) == (6, 9)
    assert {r["label"]: r["votes"] for r in found["labels"]} == {
        "Charlock": 3, "Maize": 3, "Fat Hen": 1, "other:Common Poppy": 1, "not-a-seedling": 1}
    per_version = {r["version"]: (r["confirmed"], r["corrected"]) for r in found["models"]}
    assert per_version == {"1": (1, 1), "2": (2, 5)}
    assert found["agreement"] == pytest.approx(3 / 9)
    assert found["confused"][0] == {"predicted": "Charlock", "label": "Maize", "votes": 2}


def test_export_is_a_training_folder_with_majority_labels(filled, tmp_path):
    out = tmp_path / "fb"
    summary = export(filled, out, label_studio=True)
    assert summary["species"] == {"Charlock": 2, "Common Poppy": 1, "Fat Hen": 1, "Maize": 1}
    assert summary["new_species"] == ["Common Poppy"] and summary["skipped"] == {"not-a-seedling": 1}
    assert summary["conflicts"] == 2
    index = index_folder(out)  # the training code reads it as it is
    assert sorted(index.classes) == ["Charlock", "Common Poppy", "Fat Hen", "Maize"]
    assert len(index) == 5
    conflicts = list(csv.DictReader((out / "conflicts.csv").open()))
    tie = next(c for c in conflicts if c["tie"] == "True")
    assert tie["chosen"] == "Fat Hen" and json.loads(tie["votes"]) == {"Maize": 1, "Fat Hen": 1}
    assert any(f.suffix == ".jpg" for f in (out / "Fat Hen").iterdir())
    tasks = json.loads((out / "label-studio.json").read_text())
    assert len(tasks) == 5 and all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks)
    first = tasks[0]["annotations"][0]["result"][0]
    assert first["type"] == "choices" and first["from_name"] == "species" and first["to_name"] == "image"
    assert '<Choice value="Common Poppy"/>' in (out / "label-studio.xml").read_text()


def test_min_votes_since_and_holdout(filled, tmp_path):
    assert export(filled, tmp_path / "a", min_votes=2)["species"] == {"Maize": 1}
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert export(filled, tmp_path / "b", since=future)["exported"] == 0
    summary = export(filled, tmp_path / "c", holdout=0.5)
    assert summary["train"] + summary["test"] == 5
    rows = list(csv.DictReader((tmp_path / "c" / "labels.csv").open()))
    for r in rows:  # the split follows the photo's hash: stable from export to export
        assert r["file"].startswith("test/" if holdout_of(r["file"].split("/")[-1][:16] + "0" * 48, 0.5) else "train/")


def test_export_replaces_an_earlier_export_but_never_another_folder(filled, tmp_path):
    out = tmp_path / "fb"
    export(filled, out)
    (out / "Charlock" / "stale.png").write_bytes(b"x")
    export(filled, out)
    assert not (out / "Charlock" / "stale.png").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(Exception, match="not an earlier feedback export"):
        export(filled, other)
    assert (other / "mine.txt").read_text() == "keep me"


def test_cli_migrate_stats_export(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    migrated = seedlings_cli("feedback", "migrate", "--db", url)
    assert migrated.returncode == 0 and "→ 0001" in migrated.stdout, migrated.stderr
    assert "already at 0001" in seedlings_cli("feedback", "migrate", "--db", url).stdout
    Store(url).add(photo(1), "PNG", (24, 24), "Charlock", predicted="Maize", model_version="1")
    env_stats = seedlings_cli("feedback", "stats", "--json", env={**__import__("os").environ,
                                                                    "SEEDLINGS_FEEDBACK_DB": url})
    assert json.loads(env_stats.stdout)["corrected"] == 1, env_stats.stderr
    table = seedlings_cli("feedback", "stats", "--db", url)
    assert "Maize" in table.stdout and "agreement 0.0%" in table.stdout
    exported = seedlings_cli("feedback", "export", "--db", url, "--out", tmp_path / "out")
    assert exported.returncode == 0 and "1 photo(s) of 1 species" in exported.stdout, exported.stderr
    no_db = seedlings_cli("feedback", "stats", env={k: v for k, v in __import__("os").environ.items()
                                                   if k != "SEEDLINGS_FEEDBACK_DB"})
    assert no_db.returncode == 2 and "--db URL" in no_db.stderr
    bad = seedlings_cli("feedback", "export", "--db", url, "--out", tmp_path / "x", "--since", "last week")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr


def test_a_label_not_written_by_the_service_never_becomes_a_path(db_url, tmp_path):
    """A row written by other means (SQL by hand) with a path for a label: skipped, nothing written outside."""
    store = Store(db_url)
    store.add(photo(1), "PNG", (24, 24), "../../escaped")
    store.add(photo(2), "PNG", (24, 24), "other:../up")
    store.add(photo(3), "PNG", (24, 24), "Charlock")
    summary = export(store, tmp_path / "out" / "fb")
    assert summary["skipped"] == {"unusable_label": 2} and summary["species"] == {"Charlock": 1}
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == [p.name for p in (tmp_path / "out/fb/Charlock").iterdir()]
