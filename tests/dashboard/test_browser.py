"""A real browser: `streamlit run app.py` on a free loopback port, driven by headless Chromium.

Each page is loaded, Step is clicked, the charts must have drawn their traces and no error or
exception element may be shown. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, TIMEOUT_MS, require_chromium, streamlit_app

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_app(ARTIFACTS / "streamlit-dashboard.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _wait_for_charts(page: object, count: int) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "n => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= n", arg=count,
        timeout=TIMEOUT_MS)


def _assert_clean(page: object) -> None:
    exceptions = page.locator('[data-testid="stException"]').count()  # type: ignore[attr-defined]
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()  # type: ignore[attr-defined]
    assert exceptions == 0, "an exception is shown"
    assert errors == [], errors


def _progress_text(page: object) -> str:
    return page.locator('[data-testid="stProgress"]').first.inner_text()  # type: ignore[attr-defined]


def _open(browser: object, url: str) -> object:
    # Tall enough for the whole page: Streamlit scrolls inside its own container, so a
    # full-page screenshot only holds the viewport.
    context = browser.new_context(viewport={"width": 1400, "height": 3000})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector('[data-testid="stProgress"]')
    return page


def _step_and_check(page: object, name: str, expected_total: int) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5", timeout=TIMEOUT_MS)
    plots = page.locator(".js-plotly-plot")  # type: ignore[attr-defined]
    assert plots.count() == 5
    assert "Step 0 of" in _progress_text(page)
    page.get_by_role("button", name="Step", exact=True).click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('[data-testid=\"stProgress\"]')].some(e => "
        "e.innerText.includes('Step 1 of'))", timeout=TIMEOUT_MS)
    assert f"Step 1 of {expected_total}" in _progress_text(page)
    # After a step every figure holds data: observed/predicted lines, band + estimate (+ truth), NIS.
    _wait_for_charts(page, 2 + 2 + 2 + 2 + 1)
    page.wait_for_timeout(500)  # let plotly finish drawing before the screenshot
    _assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_home_opens_on_the_simulated_mode(server: str, browser: object) -> None:
    page = _open(browser, server)
    assert page.locator("h1").first.inner_text().strip() == "model-tuner"  # type: ignore[attr-defined]
    links = page.locator('[data-testid="stPageLink"] a').all_inner_texts()  # type: ignore[attr-defined]
    assert any("Simulated" in t for t in links) and any("Offline" in t for t in links)
    _step_and_check(page, "home", 60)


def test_simulated_page(server: str, browser: object) -> None:
    page = _open(browser, f"{server}/Simulated")
    _step_and_check(page, "simulated", 60)
    page.get_by_role("button", name="Run to end", exact=True).click()  # type: ignore[attr-defined]
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stProgress\"]').innerText.includes('Step 60 of 60')",
        timeout=TIMEOUT_MS)
    page.wait_for_timeout(800)
    _assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / "simulated-end.png"), full_page=True)  # type: ignore[attr-defined]
    with page.expect_download() as download_info:  # type: ignore[attr-defined]
        page.get_by_role("button", name="Download the history (60 steps, CSV)").click()  # type: ignore[attr-defined]
    download = download_info.value
    lines = Path(download.path()).read_text().splitlines()
    assert download.suggested_filename == "simulated-history.csv"
    assert lines[0].startswith("step,alpha,alpha_std,beta,beta_std") and len(lines) == 61
    assert "true_alpha" in lines[0]


def test_offline_page_and_a_bad_upload(server: str, browser: object, tmp_path: Path) -> None:
    page = _open(browser, f"{server}/Offline")
    _step_and_check(page, "offline", 60)
    page.get_by_text("Upload a CSV", exact=True).click()  # type: ignore[attr-defined]
    bad = tmp_path / "broken.csv"
    bad.write_bytes(b"rpm,avg_tokens,max_batch,wait_ms\n1,2,3,4\n")
    uploader = page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]')  # type: ignore[attr-defined]
    uploader.wait_for(state="attached", timeout=TIMEOUT_MS)
    uploader.set_input_files(str(bad))
    error = page.locator('[data-testid="stAlertContentError"]')  # type: ignore[attr-defined]
    error.first.wait_for(timeout=TIMEOUT_MS)
    text = error.first.inner_text()
    assert "broken.csv: missing column(s) itl_ms" in text and "is kept" in text
    assert page.locator('[data-testid="stException"]').count() == 0  # type: ignore[attr-defined]
    assert "Step 1 of 60" in _progress_text(page)  # the history survived the bad upload
    _wait_for_charts(page, 9)
    page.screenshot(path=str(ARTIFACTS / "offline-bad-upload.png"), full_page=True)  # type: ignore[attr-defined]


def test_run_to_end_can_be_paused(server: str, browser: object, tmp_path: Path) -> None:
    rows = (ROOT / "sample_data" / "trace-seed-demo.csv").read_text().splitlines()
    long_trace = tmp_path / "long.csv"
    long_trace.write_text("\n".join([rows[0], *(rows[1:] * 500)]) + "\n")  # 30,000 windows: ~15 s flat out,
    # so a Pause click that a busy browser delivers seconds late still lands mid-run
    page = _open(browser, f"{server}/Offline")
    page.get_by_text("Upload a CSV", exact=True).click()  # type: ignore[attr-defined]
    uploader = page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]')  # type: ignore[attr-defined]
    uploader.wait_for(state="attached", timeout=TIMEOUT_MS)
    uploader.set_input_files(str(long_trace))
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelector('[data-testid=\"stProgress\"]').innerText.includes('Step 0 of 30,000')",
        timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Run to end", exact=True).click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelector('[data-testid=\"stProgress\"]').innerText.includes('running to step 30,000')",
        timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Pause", exact=True).click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => !document.querySelector('[data-testid=\"stProgress\"]').innerText.includes('running to')",
        timeout=TIMEOUT_MS)
    paused_at = _progress_text(page)
    page.wait_for_timeout(2500)
    assert _progress_text(page) == paused_at, "the run went on after Pause"
    steps = int(paused_at.split(" of ")[0].removeprefix("Step ").replace(",", ""))
    assert 0 < steps < 30_000
    _assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / "offline-paused.png"), full_page=True)  # type: ignore[attr-defined]
