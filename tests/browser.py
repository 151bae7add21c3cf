"""A real headless Chromium for the tests, driven by Playwright: Debian's /usr/bin/chromium.

Not a browser of Playwright's own: `playwright install` downloads one, and this machine (like the
developers' and CI's) reaches no host but the package registries, so that download fails. Debian's
chromium comes from apt, which `make install-dev` runs when /usr/bin/chromium is missing; the
Python package (its wheel brings Playwright's driver) is pinned in requirements-dev.txt.

Chromium's own background traffic (component updates, sync, field trials, QUIC probes) goes to
hosts that the closed network refuses, hence the flags in CHROMIUM_ARGS.

A test module imports the fixtures it uses (ruff sees an unused import, then parameters that
redefine it)::

    from tests.browser import page_for  # noqa: F401

    def test_page(page_for: PageFor) -> None:  # noqa: F811

or tests/conftest.py names this module once for all: ``pytest_plugins = ["tests.browser"]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Default for every wait of a page (navigation, locators, expect...), in milliseconds.
PAGE_TIMEOUT_MS = 10_000


class PageFor(Protocol):
    """The `page_for` fixture: a new page in a browser context of its own."""

    def __call__(self, locale: str = "en-US", timezone_id: str | None = None) -> Page: ...


def _missing(what: str) -> NoReturn:
    """Under CI=true a missing browser fails the run; elsewhere the test is skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; `make install-dev` installs it")
    pytest.skip(f"{what} is missing; install it with `make install-dev`")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched once for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package playwright (requirements-dev.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Debian's chromium ({CHROMIUM}, apt package chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page_for(browser: Browser) -> Iterator[PageFor]:
    """page_for(locale="en-US", timezone_id=None): a new page; its context is closed after the test."""
    contexts: list[BrowserContext] = []

    def new_page(locale: str = "en-US", timezone_id: str | None = None) -> Page:
        context = browser.new_context(locale=locale, timezone_id=timezone_id)
        contexts.append(context)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        return page

    try:
        yield new_page
    finally:
        for context in contexts:
            context.close()
