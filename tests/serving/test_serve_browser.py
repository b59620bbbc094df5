"""The web page in a real headless Chromium: a photo gives bars, a text file gives an error."""

from __future__ import annotations

import pytest
from tests.helpers import require_tool
from tests.serving.conftest import png_bytes, require_module

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


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
    page.wait_for_selector("#model-info:has-text('Model ')")
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
    pg.goto(server.url + "/docs")
    pg.locator(".opblock-summary-path", has_text="/v1/predict").first.wait_for(timeout=60_000)
    pg.locator(".opblock-summary-path", has_text="/v2/models/{name}/infer").first.wait_for(timeout=10_000)
    assert pg.locator(".opblock").count() >= 10
    assert pg.locator(".swagger-ui .info .title").inner_text().startswith("seedlings")
    context.close()
    assert not blocked, f"/docs tried to reach outside hosts: {blocked}"
    assert not failed, f"requests failed: {failed}"
    assert not problems, problems
