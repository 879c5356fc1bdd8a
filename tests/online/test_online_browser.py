"""The Online page in headless Chromium, against the emulator and a real Prometheus: connect,
see every server, and let the fragment's auto-refresh step the tuner without any click."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, TIMEOUT_MS, require_chromium, streamlit_app
from tests.online.conftest import SPEEDUP, WINDOW, Stack

pytestmark = [pytest.mark.browser, pytest.mark.prometheus]

@pytest.fixture(scope="module")
def streamlit_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_chromium()
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with streamlit_app(log_path, {"PROMETHEUS_ADDRESS": stack.prometheus.url, "TOKEN": ""}) as url:
        yield url


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
            page.get_by_text("Emulator and query templates", exact=True).click()
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
