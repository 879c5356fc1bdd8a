"""The Online page in headless Chromium, against the emulator and a real Prometheus: connect,
see every server, and let the fragment's auto-refresh step the tuner without any click."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.online.conftest import SPEEDUP, WINDOW, Stack
from tests.online.promstack import free_port

pytestmark = [pytest.mark.browser, pytest.mark.prometheus]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def streamlit_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_ADDRESS": stack.prometheus.url}
    env.pop("TOKEN", None)
    with log_path.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer on {url} within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_online_page_in_a_real_browser_refreshes_by_itself(streamlit_url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{streamlit_url}/Online")
            page.get_by_label("Query window", exact=True).fill(WINDOW)
            page.get_by_label("Max batch size", exact=True).fill("16")
            page.get_by_label("Refresh every (s)", exact=True).fill("2")
            page.get_by_text("Emulator", exact=True).click()
            page.get_by_label("Time scale (emulator --speedup)", exact=True).fill(str(SPEEDUP))
            page.get_by_role("button", name="Connect").click()
            page.wait_for_selector('[data-testid="stAlertContentSuccess"]:has-text("updated from 5 queries")')
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 5")
            # No click from here on: the fragment's run_every must step the tuner again.
            page.wait_for_selector('[data-testid="stAlertContentSuccess"]:has-text("cycle 3 ")', timeout=30_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stAlertContentError"]').all_inner_texts() == []
            metrics = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            assert any("alpha (ms)" in m for m in metrics) and any("beta" in m for m in metrics)
            assert page.get_by_text("All servers").count() == 1
            artifacts = ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "online.png"), full_page=True)
        finally:
            browser.close()
