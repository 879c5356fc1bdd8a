"""The Service page (AppTest) against a real service subprocess, and against nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from tuner.service.democollector import SimServer, simulated_windows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "4_Service.py")


def run_page(url: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    at.text_input(key="service.url").set_value(url).run()
    assert not at.exception, at.exception
    return at


def test_page_lists_the_servers_of_a_running_service(start_service: Any) -> None:
    svc = start_service("--source", "none", "--period", "0", "--state", "")
    windows = simulated_windows([SimServer("gpu-a", 18.0, 1.0), SimServer("gpu-b", 12.0, 0.6)], seed=2)
    for _ in range(5):
        assert svc.post("/tune", content=json.dumps(windows())).status_code == 200
    at = run_page(svc.url)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["server"]) == ["gpu-a", "gpu-b"]
    served = {s["server_name"]: s for s in svc.get("/servers").json()["servers"]}
    for _, row in table.iterrows():
        assert row["alpha (ms)"] == served[row["server"]]["alpha"]
        assert row["beta (ms)"] == served[row["server"]]["beta"]
        assert row["accepted"] + row["rejected"] + row["skipped"] == 5
    assert "Servers" in [m.label for m in at.metric]

    at.text_input(key="service.filter").set_value("gpu-b").run()
    assert list(at.dataframe[0].value["server"]) == ["gpu-b"]


def test_page_says_when_the_service_is_down() -> None:
    at = run_page(f"http://127.0.0.1:{free_port()}")
    assert len(at.dataframe) == 0
    assert any("not reachable" in e.value for e in at.error)


def test_page_rejects_something_that_is_not_a_tuner_service(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        at = run_page(f"http://127.0.0.1:{server.server_address[1]}")
        assert any("HTTP 404" in e.value for e in at.error)
    finally:
        server.shutdown()
        server.server_close()
