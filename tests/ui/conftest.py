"""Browser tests: headless Debian Chromium driven by Playwright, and the ops API served on a free port.

Playwright never downloads a browser here: it drives the system's `/usr/bin/chromium` (scripts/test installs the
Debian package in CI). Screenshots land in `var/screenshots/` for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from leadbot.config import settings

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("LEADBOT_CHROMIUM", "/usr/bin/chromium")
API_KEY = "ui-test-ops-key"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def browser_context_factory() -> Iterator:
    """`new_page()` in a fresh Chromium profile; the browser is shared by the session's tests."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="leadbot-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000}, locale="de-DE", timezone_id="Europe/Berlin",
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context_factory):
    page = browser_context_factory.new_page()
    yield page
    page.close()


@pytest.fixture
def ops_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real ops API app (`leadbot.api.app`) in a uvicorn thread against the test database; yields its URL."""
    monkeypatch.setenv("OPS_API_KEY", API_KEY)
    settings.cache_clear()
    from leadbot.api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ops-api", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        raise RuntimeError("ops API did not start")
    yield url
    server.should_exit = True
    thread.join(timeout=10)
    monkeypatch.undo()
    settings.cache_clear()


def enter_api_key(page, key: str = API_KEY) -> None:
    page.fill("#api-key-input", key)
    page.click("#api-key-submit")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
