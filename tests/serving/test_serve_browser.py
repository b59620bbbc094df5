"""The web page in a real headless Chromium: a photo gives bars, a text file gives an error."""

from __future__ import annotations

import re

import pytest
from tests.helpers import require_tool
from tests.serving.conftest import png_bytes, require_module

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def wait_for_model(page) -> None:
    """Wait until the page has shown the model card ("Model NAME VERSION (…)"), so what it set from /v1/model is
    there. Case-sensitive on purpose: :has-text() ignores case and trims, so it matched "Loading the model…"."""
    page.locator("#model-info", has_text=re.compile(r"^Model \S+ \S+ \(")).wait_for(timeout=60_000)


@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium")
    sync_api = require_module("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, offline=False)  # a phone screen
    pg = context.new_page()
    outside = []
    pg.on("request", lambda req: outside.append(req.url) if not req.url.startswith((server.url, "blob:",
                                                                                     "data:")) else None)
    console_errors = []
    pg.on("pageerror", lambda exc: console_errors.append(str(exc)))
    pg.goto(server.url + "/")
    yield pg
    assert not outside, f"the page fetched outside resources: {outside}"
    assert not console_errors, console_errors
    context.close()


def test_upload_shows_top5_bars(page):
    wait_for_model(page)
    assert page.locator("#species-list dt").count() >= 3  # a description of each species the model knows
    page.set_input_files("#file-input", files=[{"name": "seedling.png", "mimeType": "image/png",
                                                 "buffer": png_bytes()}])
    card = page.locator(".card").first
    card.locator(".bars .row").first.wait_for(timeout=60_000)
    rows = card.locator(".bars .row")
    assert 1 <= rows.count() <= 5
    assert card.locator(".row .pct").first.inner_text().endswith("%")
    verdict = card.locator(".verdict").inner_text()
    assert verdict and verdict != "Identifying…"
    assert card.locator(".preview").get_attribute("src").startswith("blob:")
    assert card.locator(".file").inner_text() == "seedling.png"
    assert card.locator(".error").is_hidden()


def test_text_file_shows_an_error(page):
    page.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                 "buffer": b"this is not a photo"}])
    error = page.locator(".card .error").first
    error.wait_for(state="visible", timeout=60_000)
    assert "not an image" in error.inner_text()
    assert error.get_attribute("role") == "alert"


def test_several_files_and_keyboard(page):
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file-input"  # the first control takes the focus
    page.set_input_files("#file-input", files=[{"name": f"{i}.png", "mimeType": "image/png",
                                                 "buffer": png_bytes()} for i in range(3)])
    for i in range(3):  # locators, not wait_for_function: the page's CSP forbids eval
        page.locator(".card").nth(i).locator(".bars .row").first.wait_for(timeout=60_000)
    assert page.locator(".card").count() == 3
    page.click("#clear")
    assert page.locator(".card").count() == 0


def test_docs_render_with_the_network_cut_off(browser, server):
    """/docs lists the operations while every request to another host is aborted (an offline machine)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked, failed, problems = [], [], []

    def route(r):
        if r.request.url.startswith(server.url + "/"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: problems.append(str(exc)))
    pg.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    pg.on("requestfailed", lambda req: failed.append(req.url))
    pg.goto(server.url + "/docs", timeout=180_000)  # a 1.7 MB script: slow on a busy CI machine
    pg.locator(".opblock-summary-path", has_text="/v1/predict").first.wait_for(timeout=60_000)
    pg.locator(".opblock-summary-path", has_text="/v2/models/{name}/infer").first.wait_for(timeout=10_000)
    assert pg.locator(".opblock").count() >= 10
    assert pg.locator(".swagger-ui .info .title").inner_text().startswith("seedlings")
    context.close()
    assert not blocked, f"/docs tried to reach outside hosts: {blocked}"
    assert not failed, f"requests failed: {failed}"
    assert not problems, problems


def test_drag_and_drop_a_photo(page):
    """A photo dropped anywhere on the page is identified like a chosen one."""
    transfer = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
            return transfer;
        }""", list(png_bytes()))
    page.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": transfer})
    assert "dragging" in page.locator("#drop-zone").get_attribute("class")
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    card = page.locator(".card").first
    card.locator(".bars .row").first.wait_for(timeout=60_000)
    assert card.locator(".file").inner_text() == "dropped.png"
    assert "dragging" not in page.locator("#drop-zone").get_attribute("class")


def test_unknown_is_said_plainly(page):
    """When the model flags a photo as unknown the page says so in words, not only with a low bar."""
    species = page.locator("#species-list dt").first.inner_text()
    answer = {"predictions": [{"species": species, "confidence": 0.31, "unknown": True,
                               "top_k": [{"species": species, "probability": 0.31}]}],
              "model": {"name": "m", "version": "1"}}
    page.route("**/v1/predict*", lambda route: route.fulfill(json=answer))
    page.set_input_files("#file-input", files=[{"name": "odd.png", "mimeType": "image/png", "buffer": png_bytes()}])
    card = page.locator(".card").first
    card.locator(".bars .row").first.wait_for(timeout=60_000)
    assert "unknown" in card.get_attribute("class")
    verdict = card.locator(".verdict").inner_text()
    assert verdict.startswith("Not sure") and species in verdict and "31" in verdict


def test_phone_screen_has_no_sideways_scrolling(page):
    page.set_input_files("#file-input", files=[{"name": "a-rather-long-file-name-from-a-phone-camera-0001.png",
                                                 "mimeType": "image/png", "buffer": png_bytes()}])
    page.locator(".card .bars .row").first.wait_for(timeout=60_000)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"content {width[0]} px wide on a {width[1]} px screen"
    box = page.locator("label[for='file-input']").bounding_box()
    assert box["height"] >= 32 and box["x"] >= 0 and box["x"] + box["width"] <= width[1]  # a thumb-sized target


@pytest.fixture(scope="module")
def feedback_server(start_server, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('page-feedback') / 'feedback.db'}"
    return start_server("--feedback-db", url), url


@pytest.fixture
def feedback_page(browser, feedback_server):
    srv, _ = feedback_server
    context = browser.new_context(viewport={"width": 390, "height": 844})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(srv.url + "/")
    wait_for_model(pg)
    yield pg
    assert not errors, errors
    context.close()


def _identify(page, name: str, photo: bytes):
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": "image/png", "buffer": photo}])
    card = page.locator(".card").first
    card.locator(".bars .row").first.wait_for(timeout=60_000)
    return card


def test_wrong_species_correction_is_stored(feedback_page, feedback_server):
    """A farmer corrects a prediction on the page: the row is in the database with the photo, the right label
    and what the model said; the page says the photo is kept."""
    from seedlings.feedback.store import Store

    _, url = feedback_server
    assert "kept to improve the model" in feedback_page.locator("#storage-note").inner_text()
    photo = png_bytes()
    card = _identify(feedback_page, "field-7.png", photo)
    predicted = card.locator(".bars .row .name").first.inner_text()
    card.locator(".feedback summary").click()
    assert card.locator(".kept").is_visible()
    options = card.locator(".species-select option").all_inner_texts()
    assert predicted not in options and len(options) >= 2  # the model's answer is not offered as the correction
    right = options[0]
    card.locator(".species-select").select_option(right)
    card.locator(".feedback-form button[type=submit]").click()
    thanks = card.locator(".thanks")
    thanks.wait_for(state="visible", timeout=30_000)
    assert right in thanks.inner_text() and card.locator(".feedback").count() == 0
    (vote,) = [v for v in Store(url).votes() if v.label == right and v.predicted == predicted]
    assert Store(url).image(vote.sha256)[0] == photo


def test_new_species_typed_and_a_bad_name_explained(feedback_page, feedback_server):
    from seedlings.feedback.store import Store

    _, url = feedback_server
    card = _identify(feedback_page, "odd.png", png_bytes(fmt="PNG", compress_level=1))
    card.locator(".feedback summary").click()
    card.locator(".other-name").fill("../etc")  # typing selects "Another species"
    card.locator(".feedback-form button[type=submit]").click()
    error = card.locator(".feedback-error")
    error.wait_for(state="visible", timeout=30_000)
    assert "not a usable species name" in error.inner_text()
    card.locator(".other-name").fill("Common Poppy")
    card.locator(".feedback-form button[type=submit]").click()
    card.locator(".thanks").wait_for(state="visible", timeout=30_000)
    assert "other:Common Poppy" in {v.label for v in Store(url).votes()}


def test_confirming_a_right_answer_is_a_vote(feedback_page, feedback_server):
    """"Right" stores the photo with the model's own answer (what `feedback stats` counts as agreement); a photo
    the model calls unknown has nothing to confirm. The predictions are fixed here, the feedback is real."""
    from seedlings.feedback.store import Store

    _, url = feedback_server
    species = feedback_page.locator("#species-list dt").first.text_content()  # in a closed <details>
    assert species

    def answer(unknown: bool) -> dict:
        return {"predictions": [{"species": species, "confidence": 0.9, "unknown": unknown,
                                 "top_k": [{"species": species, "probability": 0.9}]}],
                "model": {"name": "m", "version": "1"}}

    feedback_page.route("**/v1/predict*", lambda route: route.fulfill(json=answer(True)))
    odd = _identify(feedback_page, "odd.png", png_bytes(fmt="PNG", compress_level=2))
    assert odd.locator(".confirm").count() == 0
    feedback_page.unroute("**/v1/predict*")
    feedback_page.route("**/v1/predict*", lambda route: route.fulfill(json=answer(False)))
    card = _identify(feedback_page, "fine.png", png_bytes(fmt="PNG", compress_level=3))
    card.locator(".confirm").click()
    card.locator(".thanks").wait_for(state="visible", timeout=30_000)
    assert card.locator(".confirm").count() == 0 and card.locator(".feedback").count() == 0
    votes = [v for v in Store(url).votes() if v.label == species and v.predicted == species and v.model_version == "1"]
    assert len(votes) == 1, [(v.label, v.predicted, v.model_version) for v in Store(url).votes()]
