"""The Online page in Streamlit's AppTest, against the emulator and a real Prometheus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.online.conftest import LEGACY, SPEEDUP, TRUTH, WINDOW, WINDOW_S, Stack
from tests.online.promstack import free_port

pytestmark = pytest.mark.prometheus

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "3_Online.py")


def _connect(at: AppTest, address: str, token: str = "") -> AppTest:
    at.text_input(key="online.address").set_value(address)
    at.text_input(key="online.token").set_value(token)
    at.text_input(key="online.window").set_value(WINDOW)
    at.number_input(key="online.max_batch").set_value(16)
    at.number_input(key="online.refresh").set_value(1.0)
    at.number_input(key="online.scale").set_value(SPEEDUP)
    next(b for b in at.button if b.label == "Connect").click()
    return at.run()


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning") for e in at.get(kind)]
    parts += [str(m.value) + str(m.label) for m in at.metric]
    return "\n".join(map(str, parts))


def test_online_page_connects_steps_every_server_and_shows_the_operator_view(stack: Stack) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    assert "connection form" in at.info[0].value
    at = _connect(at, stack.prometheus.url)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "ok: 3 of 3 server(s) updated from 5 queries" in at.success[0].value
    options = at.selectbox(key="online.server").options
    assert set(options) == {*TRUTH, LEGACY}
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["alpha (ms)", "beta (ms / request)", "σ alpha / σ beta (ms)", "last step"]
    assert at.metric[3].value == "accepted"
    assert len(at.get("plotly_chart")) == 5
    table = at.dataframe[0].value
    assert sorted(table["server"]) == sorted(options) and (table["steps"] == 1).all()

    at.run()  # a rerun within the window (the 1 s refresh is shorter than it) does not step
    assert at.session_state["online.tuner"].cycles == 1
    assert f"a step per fresh {WINDOW} window (every {WINDOW_S:g} s)" in _texts(at)
    time.sleep(WINDOW_S)  # a fresh window: the next run steps again
    at.run()
    online = at.session_state["online.tuner"]
    assert online.cycles == 2 and all(len(h) == 2 for h in online.histories.values())

    # Paused, nothing steps by itself; Step now steps at once, every time.
    next(b for b in at.button if b.label == "Pause auto-refresh").click()
    at.run()
    time.sleep(WINDOW_S)
    at.run()
    assert at.session_state["online.tuner"].cycles == 2
    for expected in (3, 4):
        next(b for b in at.button if b.label == "Step now").click()
        at.run()
        assert at.session_state["online.tuner"].cycles == expected

    at.selectbox(key="online.server").set_value(LEGACY).run()  # changing the view does not step
    assert at.session_state["online.tuner"].cycles == 4
    assert not at.exception and not at.error


def test_online_page_shows_a_down_prometheus_and_never_the_token(stack: Stack) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at = _connect(at, f"http://127.0.0.1:{free_port()}", token="page-secret-token-123")
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("not reachable" in e and "estimates kept" in e for e in errors), errors
    assert "page-secret-token-123" not in _texts(at)
    # The same page, pointed at the real Prometheus afterwards, recovers.
    at = _connect(at, stack.prometheus.url)
    assert at.success and "updated" in at.success[0].value


def test_local_demo_button_fills_the_form_takes_the_emulator_config_and_connects() -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    next(b for b in at.button if b.label == "Use the local emulator demo").click()
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="online.window").value == "30s"
    assert at.number_input(key="online.max_batch").value == 64
    assert at.number_input(key="online.scale").value == 10.0
    config = at.session_state["online.config"]
    assert config.error_level == (0.5, 0.05) and config.expected_observations == (5000.0, 2.0)
    online = at.session_state["online.tuner"]
    assert online.config is config and online.cycles == 1  # connected and stepped once (localhost:9090 is not up)
