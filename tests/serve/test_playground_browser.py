"""The prompt playground in a real browser: Playwright drives Debian's headless Chromium against the app ``zsgen
serve`` builds from a real serve config, on a real uvicorn, with a scripted LLM on loopback that ranks the candidates
by what the prompt asks (zsgen/testing/playground.py).

Waiting is on the page's own state, never on time: every finished action bumps ``#status``'s ``data-seq``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.conftest import CHROMIUM_ARGS
from zsgen.testing.playground import ALPHABETICAL, LiveApp, serve_playground

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "browser-test-token"
TOKEN_KEY = "zsgen-playground-token"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with serve_playground(tmp_path_factory.mktemp("playground"), token=TOKEN) as live:
        yield live


@pytest.fixture
def page(chromium_path: Path) -> Iterator[Page]:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(chromium_path), args=list(CHROMIUM_ARGS), headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1600, "height": 1000})
            tab.set_default_timeout(120_000)  # a loaded shared machine; no pass/fail depends on it
            yield tab
        finally:
            browser.close()


def settle(page: Page, after: int) -> str:
    """Wait until the action that follows status number ``after`` has finished; return the status line."""
    page.wait_for_selector(f'#status[data-seq="{after + 1}"]', state="attached")
    return str(page.text_content("#status"))


def press(page: Page, button: str) -> str:
    """Click ``button`` and wait for its action to finish; return the status line."""
    seq = int(page.get_attribute("#status", "data-seq") or 0)
    page.click(button)
    return settle(page, seq)


def listed(page: Page, list_id: str) -> list[str]:
    return list(page.eval_on_selector_all(f"#{list_id} li", "items => items.map(i => i.dataset.id)"))


def message_texts(page: Page) -> str:
    return str(page.text_content("#messages"))


def test_edit_render_run_check_try_and_save_in_the_browser(app: LiveApp, page: Page, tmp_path: Path) -> None:
    page.goto(f"{app.base_url}/playground")
    # The page loads without the token; its first API call is refused until one is typed in.
    assert "enter the API token" in settle(page, 0)
    page.fill("#token", TOKEN)
    assert press(page, "#btn-token") == "load done"
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == TOKEN
    assert TOKEN not in page.url
    original = str(page.input_value("#template"))
    assert original.startswith("{#- zsgen") and "You are a recommender system." in original
    assert page.input_value("#template-select") == "listwise"

    # A dataset user, the packaged template: render, then run.
    page.fill("#user-id", "u02")
    assert press(page, "#btn-render") == "render done"
    assert "You are a recommender system." in message_texts(page)
    first_stage = listed(page, "first-stage")
    assert len(first_stage) == 12
    assert press(page, "#btn-run") == "run done"
    before = listed(page, "reranked")
    assert sorted(before) == sorted(first_stage) and before != first_stage
    assert page.text_content("#parse-status") == "ok"
    assert '"ranking"' in str(page.text_content("#raw"))

    # Edit the instructions: the rendered messages show the edit, and the ranking changes.
    edited = original.replace("Reply with the JSON object only.", f"Order them {ALPHABETICAL}LY by title.")
    page.fill("#template", edited)
    assert press(page, "#btn-render") == "render done"
    assert f"Order them {ALPHABETICAL}LY by title." in message_texts(page)
    assert press(page, "#btn-run") == "run done"
    after = listed(page, "reranked")
    assert sorted(after) == sorted(first_stage)
    assert after != before and after != first_stage
    assert listed(page, "first-stage") == first_stage

    # Check: a broken template shows the error with its line number.
    broken = edited.replace("{% endfor %}", "{% endfo %}", 1)
    line = broken.splitlines().index("{% endfo %}") + 1
    page.fill("#template", broken)
    assert press(page, "#btn-check") == "check done"
    problems = str(page.text_content("#problems"))
    assert f"line {line}: syntax error" in problems and "endfo" in problems
    page.click("#problems li.located")  # a problem leads to its line in the template text
    selected = page.evaluate(
        "(() => { const a = document.getElementById('template');"
        " return a.value.substring(a.selectionStart, a.selectionEnd); })()"
    )
    assert selected == "{% endfo %}"
    assert "render failed: line" in press(page, "#btn-render")  # rendering it says the same, with the line
    page.fill("#template", edited)
    assert press(page, "#btn-check") == "check done"
    assert page.text_content("#problems") == "no problems found"

    # Try on a few held-out users.
    page.fill("#try-n", "4")
    assert press(page, "#btn-try") == "try done"
    summary = str(page.text_content("#try-summary"))
    assert summary.startswith("4 users, 12 candidates each: NDCG@10") and "0 fallback(s)" in summary
    assert page.locator("#try-table tbody tr").count() == 4

    # Save into the template folder; a second save without "overwrite" is refused.
    # Save into the template folder (a name without .jinja, as requests name templates); a second save without
    # "overwrite" is refused. The saved template is listed at once, without reloading the page.
    page.fill("#save-name", "from_browser")
    assert press(page, "#btn-save") == "save done"
    assert (app.template_dir / "from_browser.jinja").read_text(encoding="utf-8") == edited
    options = page.eval_on_selector_all("#template-select option", "els => els.map(e => e.value)")
    assert "from_browser" in options and page.input_value("#template-select") == "from_browser"
    assert "exists" in press(page, "#btn-save")
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)


def test_item_and_user_text_stay_text(app: LiveApp, page: Page) -> None:
    page.goto(f"{app.base_url}/playground")
    settle(page, 0)
    page.evaluate(f"sessionStorage.setItem('{TOKEN_KEY}', '{TOKEN}')")
    page.reload()
    assert settle(page, 0) == "load done"
    page.check("#who-typed")
    page.fill("#history", app.dataset.catalog[0].title)
    page.fill("#profile", '<img src=x onerror="document.title=1"><b>bold</b>')
    assert press(page, "#btn-render") == "render done"
    assert '<img src=x onerror="document.title=1"><b>bold</b>' in message_texts(page)
    assert page.locator("#messages img, #messages b").count() == 0
    assert page.title() == "zsgen prompt playground"
