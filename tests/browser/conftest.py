"""A real browser on the real dashboard: Debian's headless Chromium driven by Selenium
through Debian's chromedriver (nothing is downloaded), against `clerk dashboard` running
as its own process on 127.0.0.1 (a free port) over the test PostgreSQL.

Screenshots go to BROWSER_ARTIFACTS (default var/browser/, which git ignores); CI keeps
them as artifacts, and two of them are the README's docs/screenshots/.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.acceptance import conftest as acceptance
from tests.acceptance.conftest import CLERK_BIN, REPO, subprocess_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or REPO / "var" / "browser")
WAIT_SECONDS = 90  # a loaded 2-core machine: generous bounds, never a timing assertion

# clerk's fixtures (settings and CLI on the test database, a city web site), as in the
# acceptance tests
clerk_env, settings, city = acceptance.clerk_env, acceptance.settings, acceptance.city
make_pipeline, pipeline, cli = acceptance.make_pipeline, acceptance.pipeline, acceptance.cli


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the session (its start is the slow part)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver "
                    "(bash .ci/setup installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    if os.geteuid() == 0:  # Chromium refuses to run as root inside its sandbox
        options.add_argument("--no-sandbox")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Dashboard:
    """`clerk dashboard` in its own process, and the browser looking at it."""

    url: str
    browser: WebDriver
    process: subprocess.Popen[str]

    def open(self, path: str) -> None:
        """Load a page, and mark the window: a reload would drop the mark (no_reload)."""
        self.browser.get(self.url + path)
        self.browser.execute_script("window.__dashboardMark = arguments[0];", path)

    def no_reload(self, path: str) -> bool:
        """True when the page loaded by open(path) is still the one shown (not reloaded)."""
        return bool(self.browser.execute_script("return window.__dashboardMark") == path)

    def wait(self, condition: Callable[[WebDriver], object], message: str) -> object:
        return WebDriverWait(self.browser, WAIT_SECONDS, poll_frequency=0.25).until(
            condition, message)

    def text(self, css: str) -> str:
        return str(self.browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
            css))

    def screenshot(self, name: str) -> Path:
        """The whole page (beyond the window's height), as a PNG in the artifacts."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        metrics = self.browser.execute_cdp_cmd("Page.getLayoutMetrics", {})  # type: ignore[attr-defined]
        size = metrics["cssContentSize"]
        shot = self.browser.execute_cdp_cmd("Page.captureScreenshot", {  # type: ignore[attr-defined]
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000),
                     "scale": 1}})
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@pytest.fixture
def dashboard(browser: WebDriver, clerk_env: dict[str, str]) -> Iterator[Dashboard]:
    """The real command on a free port of 127.0.0.1, up when the fixture returns."""
    port = free_port()
    process = subprocess.Popen([str(CLERK_BIN), "dashboard", "--port", str(port)],
                               env=subprocess_env(clerk_env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the app is built, before it listens
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/" in line, line + (process.stderr.read() if process.poll() else "")
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                httpx.get(url + "/sites", timeout=10)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)
        browser.delete_all_cookies()
        yield Dashboard(url, browser, process)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def keep_screenshot(source: Path, name: str) -> None:
    """Copy a screenshot into docs/screenshots/ (for the README) when asked to:
    UPDATE_SCREENSHOTS=1 pytest tests/browser."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "screenshots" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
