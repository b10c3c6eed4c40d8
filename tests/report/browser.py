"""Headless Chromium for the report tests, the screenshots and the scale benchmark (Selenium).

Uses the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); Selenium Manager is never asked to download anything.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and not shutil.which(Path(path).name):
            return (
                f"{path} not found: install the Debian packages chromium and chromium-driver "
                "(make test does)"
            )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile and the browser console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gradlog-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_report(driver: Any, path: Path, timeout: float = 30.0) -> float:
    """Load ``path`` and wait until every figure is drawn; returns the seconds it took."""
    t0 = time.perf_counter()
    driver.get(path.resolve().as_uri())
    while time.perf_counter() - t0 < timeout:
        if driver.execute_script("return !!(window.gradlogReport && window.gradlogReport.ready)"):
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not finish drawing in {timeout} s")


def console_errors(driver: Any) -> list[str]:
    """SEVERE entries of the browser console since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver: Any, out: Path, width: int = 1280, max_height: int = 4000) -> None:
    """A PNG of the current page from its top, ``width`` CSS pixels wide and as tall as the page
    (at most ``max_height``).

    The viewport itself is resized (DevTools device metrics), not the window: a window's size
    includes browser chrome that headless Chromium still subtracts, which cut off the bottom.
    """
    metrics = {"width": width, "height": 600, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(0.2)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics["height"] = min(height, max_height)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    driver.save_screenshot(str(out))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
