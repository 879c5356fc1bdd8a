"""The online observer and tuner against the emulator and a real Prometheus."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import requests

from tests.online.conftest import LEGACY, MAX_BATCH, TOKENS, TRUTH, WINDOW_S, Stack, online_config
from tests.online.promstack import bearer_proxy, prometheus
from tuner.observers.prometheus import MEASUREMENTS, PrometheusObserver
from tuner.online import OnlineTuner
from tuner.queueing import capacity_rpm

pytestmark = pytest.mark.prometheus

LOADS = (0.15, 0.5)
"""Fractions of each server's capacity, alternated so that α and β can be told apart."""
STEPS = 12


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.gets += 1
        return super().get(*args, **kwargs)


def _set_load(stack: Stack, fraction: float) -> None:
    for server, (alpha, beta) in TRUTH.items():
        rpm = float(capacity_rpm(alpha, beta, TOKENS, MAX_BATCH)) * fraction
        stack.emulator.control(server=server, rpm=round(rpm, 1))


def test_two_servers_converge_independently_with_five_queries_a_cycle(stack: Stack) -> None:
    session = CountingSession()
    online = OnlineTuner(PrometheusObserver(stack.settings(), session=session), online_config())
    servers_seen = []
    for k in range(STEPS):
        _set_load(stack, LOADS[k % len(LOADS)])
        time.sleep(WINDOW_S + 0.6)  # a window that lies wholly after the change
        before = session.gets
        cycle = online.cycle()
        assert cycle.ok, cycle.status
        assert session.gets - before == len(MEASUREMENTS)  # 5 queries for 3 servers
        servers_seen.append(len(cycle.records))
    assert min(servers_seen) == 3  # the two main servers and the legacy one, from the same queries
    errors = {}
    for server, (alpha, beta) in TRUTH.items():
        estimate = online.tuners[server].state
        errors[server] = (estimate[0] / alpha - 1.0, estimate[1] / beta - 1.0)
        history = online.histories[server].frame()
        assert (history["status"] == "accepted").all(), history["reason"].tolist()
    print("\nconvergence after", STEPS, "windows: " + ", ".join(
        f"{s}: alpha {100 * ea:+.2f} %, beta {100 * eb:+.2f} %" for s, (ea, eb) in errors.items()))  # fmt: skip
    for server, (ea, eb) in errors.items():
        assert abs(ea) < 0.05 and abs(eb) < 0.05, (server, errors)
    # Independent: each server's estimate is near its own truth, not the other's.
    a0, a1 = (online.tuners[s].state for s in TRUTH)
    assert not np.allclose(a0, a1, rtol=0.2)


def test_legacy_server_falls_back_to_time_per_output_token(stack: Stack) -> None:
    new_name = stack.prometheus.query(f'vllm:inter_token_latency_seconds_count{{pod="{LEGACY}"}}')
    old_name = stack.prometheus.query(f'vllm:time_per_output_token_seconds_count{{pod="{LEGACY}"}}')
    assert new_name == [] and len(old_name) == 1  # only the old name exists for this server
    scrape = PrometheusObserver(stack.settings()).scrape()
    window = scrape.window(LEGACY)
    assert window is not None and window.usable, window
    assert 10.0 < float(window.env.itl_ms) < 10.0 + 0.4 * MAX_BATCH  # α + β·b for b in 0..B


def test_unknown_metric_skips_the_step_and_keeps_the_state(stack: Stack) -> None:
    queries = {"wait_ms": "sum by ($label) (rate(vllm:no_such_metric_seconds_sum{$selector}[$window]))"}
    online = OnlineTuner(PrometheusObserver(stack.settings(queries=queries)), online_config())
    cycle = online.cycle()
    assert cycle.ok and len(cycle.records) == 3
    initial = np.array(online_config().init_state)
    for server, record in cycle.records.items():
        assert not record.accepted
        assert "no series for wait_ms" in (record.reason or ""), record.reason
        np.testing.assert_allclose(online.tuners[server].state, initial)


def test_no_matching_server_is_a_clear_failed_cycle(stack: Stack) -> None:
    online = OnlineTuner(PrometheusObserver(stack.settings(model="llama-70b")), online_config())
    cycle = online.cycle()
    assert not cycle.ok
    assert "no series match" in cycle.status and "llama-70b" in cycle.status


def test_wrong_or_missing_token_is_reported_and_never_echoed(stack: Stack) -> None:
    secret = "s3cret-t0ken-value"
    with bearer_proxy(stack.prometheus.url, secret) as url:
        good = OnlineTuner(PrometheusObserver(stack.settings(address=url, token=secret)), online_config())
        assert good.cycle().ok, good.last.status if good.last else None
        kept = {s: t.state.copy() for s, t in good.tuners.items()}
        # The same tuner, with a token that the proxy refuses: nothing stepped, estimates kept.
        good.observer = PrometheusObserver(stack.settings(address=url, token="wrong-token-value"))
        cycle = good.cycle()
        assert not cycle.ok and "rejected the token (HTTP 403)" in cycle.status
        assert "wrong-token-value" not in cycle.status and "wrong-token-value" not in repr(good.observer.settings)
        for server, state in kept.items():
            np.testing.assert_array_equal(good.tuners[server].state, state)
        anonymous = OnlineTuner(PrometheusObserver(stack.settings(address=url)), online_config())
        cycle = anonymous.cycle()
        assert not cycle.ok and "requires a token and none was given (HTTP 401)" in cycle.status
        assert secret not in cycle.status


def test_prometheus_stopped_mid_run(stack: Stack) -> None:
    with prometheus(stack.tmp, [stack.emulator.url.split("//")[1]]) as prom:
        prom.wait_for(f"rate(vllm:request_success_total[{int(WINDOW_S)}s])", 2, timeout_s=40)
        online = OnlineTuner(PrometheusObserver(stack.settings(address=prom.url, timeout_s=2.0)), online_config())
        for _ in range(2):
            assert online.cycle().ok, online.last.status if online.last else None
        kept = {s: (t.state.copy(), t.steps) for s, t in online.tuners.items()}
        prom.stop()
        for _ in range(2):
            cycle = online.cycle()
            assert not cycle.ok and "not reachable" in cycle.status, cycle.status
        for server, (state, steps) in kept.items():
            np.testing.assert_array_equal(online.tuners[server].state, state)
            assert online.tuners[server].steps == steps
            assert len(online.histories[server]) == 2


def test_online_command_line(stack: Stack) -> None:
    import json
    import subprocess
    import sys

    from tests.online.conftest import SPEEDUP, WINDOW
    from tests.online.promstack import REPO, free_port

    base = [sys.executable, "-m", "tuner", "online", "--window", WINDOW, "--time-scale", str(SPEEDUP),
            "--max-batch", str(MAX_BATCH), "--interval", "1", "--format", "jsonl"]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_ADDRESS": stack.prometheus.url, "TOKEN": "cli-secret-token"}
    result = subprocess.run([*base, "--steps", "2"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 6 and {r["server"] for r in rows} == {*TRUTH, LEGACY}
    assert {"step", "alpha", "alpha_std", "beta", "beta_std", "observed", "predicted", "nis", "accepted",
            "reason", "server"} <= set(rows[0])  # fmt: skip
    assert [r["step"] for r in rows if r["server"] == LEGACY] == [1, 2]
    down = subprocess.run([*base, "--steps", "1", "--prometheus", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60)  # fmt: skip
    assert down.returncode == 2 and down.stdout == ""
    assert down.stderr.splitlines()[-1].startswith("error: no cycle succeeded")
    assert "not reachable" in down.stderr and "cli-secret-token" not in down.stderr
