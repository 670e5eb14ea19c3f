"""The chat page (server/web) in a real headless Chromium, driven by Playwright, over real HTTP.

The browser is Debian's `chromium` package (`/usr/bin/chromium`, installed by `.ci/run` when
missing); Playwright only drives it (`executable_path`; no browser download). Set
`SWITCHBOARD_SCREENSHOT=docs/web-page.png` to write the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect, sync_playwright

from tests.integration.auth_support import make_keys
from tests.integration.helpers import create_user
from tests.support import make_settings, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FALCONS = """# Falconry field guide

The peregrine falcon dives at over 320 km/h when it hunts, which makes it the fastest animal
on Earth. Falconers fly peregrines to a lure swung on a long cord.
"""
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)  # embedding a first upload can take seconds here


@pytest.fixture(scope="module")
def web_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server whose offline model streams slowly enough to watch, with a short run lease so
    a stop request is seen within a second."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        offline_token_delay_s=0.05,
        run_lease_s=1.5,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium with an empty profile of its own."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here: `apt-get install -y chromium` to run the browser tests")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    tab = browser.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    try:
        yield tab
    finally:
        tab.close()
    assert not errors, f"the page logged errors: {errors}"


def _open(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready]")


def _sign_up(page: Page, name: str, email: str) -> None:
    dialog = page.locator("#user-dialog")
    if not dialog.is_visible():
        page.click("#new-user")
    page.fill("#user-name", name)
    page.fill("#user-email", email)
    page.click("#create-user")
    expect(dialog).to_be_hidden()
    expect(page.locator("#status")).to_have_text(f"Hello, {name}.")
    expect(page.locator("#user option:checked")).to_contain_text(email)


def _watch_answers(page: Page) -> None:
    """Record the text of the streaming answer at every DOM change (tokens included)."""
    page.evaluate(
        """() => {
            window.__answers = [];
            new MutationObserver(() => {
                const answers = document.querySelectorAll('.message.agent .answer');
                const last = answers[answers.length - 1];
                if (last) window.__answers.push(last.textContent);
            }).observe(document.getElementById('log'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )


def _ask(page: Page, question: str) -> None:
    page.fill("#message", question)
    page.press("#message", "Enter")


def test_page_is_served_with_a_content_security_policy(web_url: str) -> None:
    with httpx.Client(base_url=web_url) as http:
        page = http.get("/")
        script = http.get("/web/app.js")
        missing = http.get("/web/../settings.py")
        unknown = http.get("/web/secrets.txt")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert "innerHTML" not in script.text
    assert "eval(" not in script.text
    assert missing.status_code == 404
    assert unknown.status_code == 404


def test_a_question_streams_tokens_cites_its_source_and_the_conversation_survives_a_reload(
    page: Page, web_url: str, tmp_path: Path
) -> None:
    _open(page, web_url)
    _sign_up(page, "Ada", f"ada-{time.time_ns()}@example.com")

    # Upload a document to a collection of its own, through the page.
    guide = tmp_path / "falconry.md"
    guide.write_text(FALCONS)
    page.fill("#collection", "birds")
    page.set_input_files("#file", str(guide))
    page.click("#upload")
    expect(page.locator("#status")).to_contain_text("falconry.md: created")
    expect(page.locator("#documents")).to_contain_text("Falconry field guide")

    _watch_answers(page)
    question = "How fast does the peregrine falcon dive?"
    _ask(page, question)
    answer = page.locator(".message.agent").last
    expect(answer.locator(".citation").first).to_contain_text("falconry.md")
    expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
    final = answer.locator(".answer").text_content() or ""
    assert "[1]" in final
    seen: list[str] = page.evaluate("window.__answers")
    partial = {text for text in seen if text and text != final}
    assert len(partial) >= 2, f"the answer did not stream: {seen[:5]}"
    assert all(final.startswith(text) for text in partial)  # tokens, in order

    screenshot = os.environ.get("SWITCHBOARD_SCREENSHOT")
    if screenshot:  # the README's picture: a tool call too, and a question being typed
        _ask(page, "What is 12 * 12?")
        expect(page.locator(".message.agent").last).not_to_have_class(re.compile("streaming"))
        page.locator(".message.agent .tool").last.click()
        page.fill("#message", "And how do falconers train them?")
        page.screenshot(path=screenshot)
        page.fill("#message", "")

    page.reload()
    page.wait_for_selector("body[data-ready]")
    title = page.locator("#conversations .conversation .title", has_text=question)
    expect(title).to_be_visible()
    page.click("#new-chat")
    expect(page.locator("#log .message")).to_have_count(0)
    title.click()
    expect(page.locator("#log .message.user").first).to_have_text(question)
    expect(page.locator("#log .message.agent .citation").first).to_contain_text("falconry.md")
    expect(page.locator("#log .message.agent .answer").first).to_have_text(final)


def _last_run_once_stopped(web_url: str, conversation: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=web_url) as http:
        while True:
            runs: list[dict[str, Any]] = http.get(f"/threads/{conversation}/runs").json()
            if runs and runs[0]["status"] not in ("pending", "running"):
                return runs[0]
            assert time.monotonic() < deadline, f"the run did not stop: {runs}"
            time.sleep(0.1)


def _answer_cancel_late(route: Route) -> None:
    """Send the cancel, but hand its answer to the page only a second later: the run's end
    (an error event, UserInterrupt) reaches the page first."""
    response = route.fetch()
    time.sleep(1.0)
    route.fulfill(response=response)


def test_stop_ends_the_running_turn_with_one_outcome(page: Page, web_url: str) -> None:
    _open(page, web_url)
    _sign_up(page, "Grace", f"grace-{time.time_ns()}@example.com")
    for turn in range(3):  # the run's cancellation (an error event) races the Stop each time
        if turn == 1:
            page.route("**/runs/*/cancel", _answer_cancel_late)
        if turn == 2:
            page.unroute("**/runs/*/cancel")
        _ask(page, f"Tell me everything you know about Switchboard and its durable runs ({turn}).")
        answer = page.locator(".message.agent").last
        expect(answer.locator(".answer")).not_to_have_text("")
        page.click("#stop")
        expect(answer.locator(".note")).to_have_text(["Stopped."])
        expect(page.locator("#send")).to_be_enabled()
        conversation = page.evaluate("location.hash").split("=", 1)[1]
        assert _last_run_once_stopped(web_url, conversation)["status"] == "interrupted"
        # The run is over: nothing it sent after the Stop shows (no UserInterrupt note).
        expect(answer.locator(".note")).to_have_text(["Stopped."])
        expect(answer.locator(".note.error")).to_have_count(0)


def test_memories_are_listed_and_forgotten(page: Page, web_url: str) -> None:
    with httpx.Client(base_url=web_url, timeout=30) as http:
        user = create_user(http, name="Linus")
        put = http.put(
            f"/users/{user['id']}/memories/diet", json={"value": {"text": "I am vegetarian"}}
        )
        assert put.status_code == 200, put.text
    _open(page, web_url)
    page.select_option("#user", user["id"])
    memories = page.locator("#memories")
    expect(memories).to_contain_text("I am vegetarian")
    page.get_by_role("button", name="Forget: I am vegetarian").click()
    expect(memories).to_contain_text("Nothing remembered yet.")
    with httpx.Client(base_url=web_url) as http:
        assert http.get(f"/users/{user['id']}/memories").json()["items"] == []


def test_on_a_server_that_wants_a_key_the_page_asks_for_one_and_then_works(
    browser: BrowserContext, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(database_url, {"kai@example.com": False, "other@example.com": False})
    settings = make_settings(database_url, tmp_path, migrate_on_start=False, auth="builtin")
    with running_server(settings) as url:
        page = browser.new_page()  # its first requests get 401s, which the console reports
        page.set_default_timeout(WAIT_MS)
        crashes: list[str] = []
        page.on("pageerror", lambda error: crashes.append(str(error)))
        page.goto(url)
        expect(page.locator("details.settings")).to_have_attribute("open", "")
        expect(page.locator("#status")).to_contain_text("needs an API key")
        page.fill("#api-key", keys["kai@example.com"])
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("body[data-ready]")
        # Kai is the only user Kai sees, and the turn runs with Kai's key.
        expect(page.locator("#user option")).to_have_count(1)
        expect(page.locator("#user option:checked")).to_contain_text("kai@example.com")
        _ask(page, "What is 12 * 12?")
        answer = page.locator(".message.agent").last
        expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
        expect(answer.locator(".answer")).to_contain_text("144")
        conversation = page.evaluate("location.hash").split("=", 1)[1]
        with httpx.Client(base_url=url) as http:
            other = {"Authorization": f"Bearer {keys['other@example.com']}"}
            assert http.get(f"/conversations/{conversation}", headers=other).status_code == 404
            mine = {"Authorization": f"Bearer {keys['kai@example.com']}"}
            assert http.get(f"/conversations/{conversation}", headers=mine).status_code == 200
        page.close()
    assert not crashes
