"""A real browser on the test Label Studio: Debian's chromium driven by Playwright (no
browser download), one page per test, and a screenshot in tests/artifacts/ when a test
fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, need_service

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--no-first-run",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, so the page fixture knows it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import Error, sync_playwright

    if not CHROMIUM.exists():
        need_service(
            "chromium (/usr/bin/chromium; apt-get install -y chromium)",
            FileNotFoundError(str(CHROMIUM)),
        )
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            need_service("chromium", exc)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, label_studio, request):
    """A logged-in page: the login form filled like a user would."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{label_studio.url}/user/login/")
    page.fill("input[name=email]", label_studio.email)
    page.fill("input[name=password]", label_studio.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / (re.sub(r"[^\w.-]+", "_", request.node.name) + ".png")
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failed page: {path}")
    context.close()
