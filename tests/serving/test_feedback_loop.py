"""The whole loop on a real server: corrections of a species the model does not know, the first made on the web
page in Chromium, the others over HTTP → `seedlings feedback export` → `seedlings train --init CURRENT
--data BASE --data FEEDBACK` → `export` → `seedlings promote` into the registry the service follows → the
service answers with the new version, which knows the new species, without a restart. (The page's other
cases are in tests/serving/test_serve_browser.py; the promotion rule in tests/cli/test_promote.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from tests.helpers import make_dataset, require_tool, seedlings_cli
from tests.serving.conftest import require_module
from tests.serving.test_serve_browser import CHROMIUM_ARGS, wait_for_model

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NEW = "Maize"


def square_photo(rng: np.random.Generator, size: int = 48) -> bytes:
    """The new species: a blue square on soil, a shape none of the three synthetic species has."""
    base = rng.integers(60, 110, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(base)
    c, r = size // 2 + int(rng.integers(-4, 5)), size // 4
    ImageDraw.Draw(img).rectangle((c - r, c - r, c + r, c + r), fill=(40, 80, 220))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def wait_for_version(url: str, version: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        card = httpx.get(url + "/v1/model", timeout=10).json()
        if card["version"] == version:
            return card
        time.sleep(0.2)
    raise AssertionError(f"the service still serves {card['version']}, not {version}")


def correct_on_the_page(url: str, photo: bytes, species: str) -> None:
    """What a user does: choose the photo, open "Wrong species?", type a species the model does not know, send."""
    sync_api = require_module("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_tool("chromium"), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.goto(url + "/")
        wait_for_model(page)
        page.set_input_files("#file-input", files=[{"name": "field.png", "mimeType": "image/png", "buffer": photo}])
        card = page.locator(".card").first
        card.locator(".bars .row").first.wait_for(timeout=60_000)
        card.locator(".feedback summary").click()
        card.locator(".other-name").fill(species)
        card.locator(".feedback-form button[type=submit]").click()
        card.locator(".thanks").wait_for(state="visible", timeout=30_000)
        browser.close()


def run_ok(*args, timeout=600):
    proc = seedlings_cli(*args, timeout=timeout)
    assert proc.returncode == 0, f"seedlings {' '.join(map(str, args[:2]))}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


def test_corrections_become_the_served_model(start_server, trained_run, exported_model, tmp_path):
    base = json.loads((trained_run / "model.json").read_text())["training"]["data"]
    registry, db = tmp_path / "registry", f"sqlite:///{tmp_path / 'feedback.db'}"
    fixed_test = make_dataset(tmp_path / "fixed-test", per_class=6, seed=5)
    run_ok("promote", exported_model, "--registry", registry, "--test", fixed_test, "--as-version", "v1")
    srv = start_server("--model", str(registry), "--registry-poll", "0.5", "--feedback-db", db,
                       "--feedback-per-minute", "1000")
    assert NEW not in wait_for_version(srv.url, "v1")["classes"]

    rng = np.random.default_rng(11)
    first = square_photo(rng)
    correct_on_the_page(srv.url, first, NEW)
    for _ in range(15):  # more people tell the service about the species it does not know
        r = httpx.post(srv.url + "/v1/feedback", files={"file": ("m.png", square_photo(rng), "image/png")},
                       data={"species": f"other:{NEW}", "predicted": "Sugar beet", "model_version": "v1"}, timeout=30)
        assert r.status_code == 201, r.text
    stats = json.loads(run_ok("feedback", "stats", "--db", db, "--json").stdout)
    assert stats["votes"] == 16 and stats["labels"][0]["label"] == f"other:{NEW}"

    feedback = tmp_path / "feedback"
    run_ok("feedback", "export", "--db", db, "--out", feedback, "--holdout", "0.25")
    summary = json.loads((feedback / "export.json").read_text())
    assert summary["new_species"] == [NEW] and summary["train"] and summary["test"]
    labels = (feedback / "labels.csv").read_text()
    assert f"/{NEW}/{hashlib.sha256(first).hexdigest()[:16]}.png" in labels  # the page's correction is exported

    run_ok("train", "--init", exported_model, "--data", base, "--data", feedback / "train", "--out",
           tmp_path / "run2", "--epochs", "3", "--min-steps", "0", "--image-size", "32", "--batch-size", "16",
           "--threads", "1")
    trained = json.loads((tmp_path / "run2" / "model.json").read_text())
    assert NEW in trained["classes"] and "kept 3 of 4 classes" in trained["init"]["classifier"]
    run_ok("export", tmp_path / "run2", "--out", tmp_path / "candidate")

    promoted = run_ok("promote", tmp_path / "candidate", "--registry", registry, "--test", fixed_test,
                      "--test", feedback / "test", "--as-version", "v2", "--force", "--reason", "loop test", "--json")
    outcome = json.loads(promoted.stdout)
    assert outcome["switched"] and outcome["current"] == "v1"

    card = wait_for_version(srv.url, "v2")  # the running service, never restarted
    assert NEW in card["classes"]
    answer = httpx.post(srv.url + "/v1/predict", files={"file": ("m.png", square_photo(rng), "image/png")},
                        timeout=30)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "v2"
    assert srv.proc.poll() is None
