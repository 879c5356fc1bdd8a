"""The Prometheus observer's settings, queries and error handling, against small local HTTP stubs."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tuner.errors import ObserverError
from tuner.observers.prometheus import (
    DEFAULT_QUERIES,
    MEASUREMENTS,
    PrometheusObserver,
    PrometheusSettings,
    load_query_templates,
)

Reply = tuple[int, Any]
"""(HTTP status, body: a JSON-able object or raw bytes)."""


def vector(values: dict[str, str], label: str = "pod") -> dict[str, Any]:
    result = [{"metric": {label: server}, "value": [1.0, v]} for server, v in values.items()]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def measurement_of(query: str) -> str:
    for name, marker in (("rpm", "request_success_total{"), ("avg_tokens", "generation_tokens"),
                         ("batch_size", "num_requests_running"), ("wait_ms", "queue_time"),
                         ("itl_ms", "inter_token")):  # fmt: skip
        if marker in query and (name != "rpm" or "generation" not in query):
            return name
    return "other"


GOOD = {"rpm": "120", "avg_tokens": "100", "batch_size": "3.5", "wait_ms": "1.5", "itl_ms": "9.1"}


@contextlib.contextmanager
def stub(answer: Callable[[str, dict[str, str]], Reply]) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """A local HTTP server answering /api/v1/query with ``answer(query, headers)``; yields its URL and the log."""
    log: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query).get("query", [""])[0]
            headers = dict(self.headers)
            log.append((self.path, headers))
            status, body = answer(query, headers)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def per_measurement(table: dict[str, dict[str, str]]) -> Callable[[str, dict[str, str]], Reply]:
    return lambda query, headers: (200, vector(table.get(measurement_of(query), {})))


# --- settings and queries ------------------------------------------------------------------------


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_ADDRESS", "prometheus.example:9090/")
    monkeypatch.setenv("TOKEN", "tok-from-env")
    s = PrometheusSettings.from_env().validated()
    assert s.address == "http://prometheus.example:9090"
    assert s.token == "tok-from-env" and "tok-from-env" not in repr(s)
    assert (s.namespace, s.model, s.window) == ("platform-opt", "opt-125", "1m")
    assert (s.max_batch, s.server_label) == (256, "pod")
    monkeypatch.delenv("TOKEN")
    assert PrometheusSettings.from_env(window="15s").token is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window": "1 minute"}, "Prometheus duration"),
        ({"address": ""}, "address is empty"),
        ({"address": "ftp://x"}, "http:// or https://"),
        ({"address": "http://user:pw@host:9090"}, "token field"),
        ({"max_batch": 0}, "at least 1"),
        ({"server_label": "pod name"}, "label name"),
        ({"queries": {"latency": "x"}}, "unknown query name"),
        ({"queries": {"rpm": "rate(x[$range])"}}, "bad placeholder"),
    ],
)
def test_bad_settings_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ObserverError, match=message):
        PrometheusObserver(PrometheusSettings(**{"address": "http://localhost:9090", **changes}))


def test_one_grouped_query_per_measurement_with_escaped_matchers() -> None:
    s = PrometheusSettings("http://p:9090", namespace='ns"x', model=r"opt-125m\b", window="15s",
                           server_label="instance")
    queries = PrometheusObserver(s).queries
    assert list(queries) == list(MEASUREMENTS)
    for q in queries.values():
        assert "by (instance)" in q and "[15s]" in q
        assert 'namespace="ns\\"x"' in q and 'model_name=~".*(?:opt-125m\\\\b).*"' in q
    assert "vllm:time_per_output_token_seconds_sum" in queries["itl_ms"] and " or " in queries["itl_ms"]
    custom = PrometheusObserver(PrometheusSettings("http://p:9090", queries={"rpm": "sum by ($label) (x{$selector})"}))
    assert custom.queries["rpm"].startswith("sum by (pod) (x{namespace=")
    assert custom.queries["wait_ms"] == PrometheusObserver(s.__class__("http://p:9090")).queries["wait_ms"]


def test_query_templates_from_a_file(tmp_path: Path) -> None:
    good = tmp_path / "q.yaml"
    good.write_text("prometheus:\n  queries:\n    wait_ms: 'sum by ($label) (my_wait{$selector})'\n")
    assert load_query_templates(good) == {"wait_ms": "sum by ($label) (my_wait{$selector})"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("latency: x\n")
    with pytest.raises(ObserverError, match="unknown query name"):
        load_query_templates(bad)
    with pytest.raises(ObserverError, match="cannot read"):
        load_query_templates(tmp_path / "missing.yaml")
    assert set(DEFAULT_QUERIES) == set(MEASUREMENTS)


# --- replies ---------------------------------------------------------------------------------------


def test_good_windows_for_every_server_and_token_only_in_the_header() -> None:
    table = {k: {"a": v, "b": v} for k, v in GOOD.items()}
    with stub(per_measurement(table)) as (url, log):
        obs = PrometheusObserver(PrometheusSettings(url, token="secret-123", max_batch=64, time_scale=2.0))
        scrape = obs.scrape()
    assert scrape.servers == ("a", "b") and scrape.queries_sent == 5 and len(log) == 5
    env = scrape.environments()["a"]
    figures = (env.rpm, env.avg_tokens, env.max_batch, env.batch_size, env.wait_ms, env.itl_ms)
    assert figures == (60, 100, 64, 3.5, 1.5, 9.1)
    assert all(w.usable for w in scrape.windows)
    for path, headers in log:
        assert headers["Authorization"] == "Bearer secret-123" and "secret-123" not in path
    with stub(per_measurement(table)) as (url, log):
        PrometheusObserver(PrometheusSettings(url)).scrape()
    assert all("Authorization" not in headers for _, headers in log)


def test_unusable_windows_have_reasons_and_nan_fields() -> None:
    table = {
        "rpm": {"idle": "0", "nan": "60", "gone": "60", "ok": "60"},
        "avg_tokens": {"idle": "NaN", "nan": "100", "gone": "100", "ok": "100"},
        "batch_size": {"idle": "0", "nan": "1", "ok": "1"},
        "wait_ms": {"idle": "NaN", "nan": "NaN", "gone": "1", "ok": "0"},
        "itl_ms": {"idle": "NaN", "nan": "+Inf", "ok": "9"},
    }
    with stub(per_measurement(table)) as (url, _):
        scrape = PrometheusObserver(PrometheusSettings(url, window="5m")).scrape()
    reasons = {w.server: w.reason for w in scrape.windows}
    assert reasons["ok"] is None
    assert reasons["idle"] == "no request completed in the last 5m"
    assert reasons["nan"] is not None and "wait_ms is nan" in reasons["nan"]
    assert reasons["gone"] == "no series for itl_ms in the last 5m"
    assert scrape.environments()["gone"].invalid_reason() is not None  # the tuner skips it too


@pytest.mark.parametrize(
    ("reply", "token", "message"),
    [
        ((401, {"status": "error"}), None, "requires a token and none was given (HTTP 401)"),
        ((403, b"Forbidden"), "tok", "rejected the token (HTTP 403)"),
        ((400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}), None,
         "HTTP 400 to the rpm query: parse error at char 3"),
        ((503, b"<html>down</html>"), None, "HTTP 503"),
        ((200, b"<html>login</html>"), None, "malformed reply to the rpm query (not JSON)"),
        ((200, {"status": "success", "data": {"resultType": "matrix", "result": []}}), None, "result type 'matrix'"),
        ((200, {"status": "success", "data": {}}), None, "no data.result"),
        ((200, {"status": "error", "error": "query timed out"}), None, "failed the rpm query: query timed out"),
        ((200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2"]}]}}),
         None, "without the server label 'pod'"),
        ((200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"pod": "a"}}]}}),
         None, "not [time, value]"),
        ((200, vector({})), None, "no series match"),
    ],
)  # fmt: skip
def test_failed_cycles_raise_clear_observer_errors(reply: Reply, token: str | None, message: str) -> None:
    with stub(lambda q, h: reply) as (url, _):
        obs = PrometheusObserver(PrometheusSettings(url, token=token))
        with pytest.raises(ObserverError, match=re.escape(message)) as info:
            obs.scrape()
    assert "tok" not in str(info.value).replace("token", "")


def test_down_and_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ObserverError, match="is not reachable"):
        PrometheusObserver(PrometheusSettings(f"http://127.0.0.1:{port}")).scrape()
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ObserverError, match=re.escape("did not answer within 0.3 s")):
            PrometheusObserver(PrometheusSettings(url, timeout_s=0.3)).scrape()
