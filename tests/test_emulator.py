"""The emulator's simulation, exposition and control, without Prometheus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tuner.config import default_config
from tuner.emulator.exposition import ServerLabels, render_metrics
from tuner.emulator.server import Emulator, schedule_from_scenario
from tuner.emulator.simulation import (
    REQUEST_LATENCY_BUCKETS_S,
    TOKEN_LATENCY_BUCKETS_S,
    ServerParams,
    ServerSim,
    simulate_windows,
    window_environment,
)
from tuner.queueing import capacity_rpm, solve_queue
from tuner.scenario import parse_scenario
from tuner.tuner import Tuner

ROOT = Path(__file__).resolve().parents[1]


def _long_run(alpha: float, beta: float, tokens: float, batch: int, load: float, seed: int = 1, hours: float = 3.0):
    rpm = float(capacity_rpm(alpha, beta, tokens, batch)) * load
    sim = ServerSim(ServerParams(rpm, tokens, alpha, beta, batch), np.random.default_rng(seed))
    sim.advance(600e3)
    before = sim.counters()
    sim.advance(600e3 + hours * 3600e3)
    return window_environment(before, sim.counters(), batch), rpm


@pytest.mark.parametrize("load", [0.3, 0.6, 0.85])
def test_geometric_tokens_reproduce_the_analytic_queue(load: float) -> None:
    env, rpm = _long_run(8.0, 0.3, 100, 16, load)
    q = solve_queue(8.0, 0.3, env.rpm, env.avg_tokens, 16)
    assert env.rpm == pytest.approx(rpm, rel=0.02)
    assert env.avg_tokens == pytest.approx(100, rel=0.02)
    assert env.itl_ms == pytest.approx(float(q.itl_ms), rel=0.003)
    assert env.batch_size == pytest.approx(float(q.mean_batch), rel=0.02)
    assert env.wait_ms == pytest.approx(float(q.wait_ms), rel=0.15, abs=0.5)


def test_fixed_tokens_show_model_mismatch_but_stay_sane() -> None:
    rpm = float(capacity_rpm(8.0, 0.3, 100, 16)) * 0.85
    sim = ServerSim(ServerParams(rpm, 100, 8.0, 0.3, 16, token_distribution="fixed"), np.random.default_rng(2))
    before = sim.counters()
    sim.advance(3600e3)
    env = window_environment(before, sim.counters(), 16)
    assert env.avg_tokens == pytest.approx(100, rel=0.01)
    q = solve_queue(8.0, 0.3, env.rpm, env.avg_tokens, 16)
    assert 0 <= env.wait_ms < float(q.wait_ms)  # deterministic service queues less than exponential
    assert 8.0 < env.itl_ms < 8.0 + 0.3 * 16


def test_same_seed_same_run_and_counters_are_consistent() -> None:
    def run(seed: int):
        sim = ServerSim(ServerParams(400, 50, 10, 0.5, 8), np.random.default_rng(seed))
        sim.advance(120e3)
        return sim.counters()

    a, b, c = run(7), run(7), run(8)
    assert a == b and a != c
    assert a.queue_time_s.count >= a.requests_success  # admitted ≥ completed
    assert a.generation_tokens >= a.requests_success
    # every generated token but a request's first is one inter-token gap; at most one first token
    # per admitted request, at least one per completed request
    gaps = a.inter_token_latency_s.count
    assert a.generation_tokens - a.queue_time_s.count <= gaps <= a.generation_tokens - a.requests_success
    assert sum(a.queue_time_s.counts) == a.queue_time_s.count


def test_parameter_change_applies_from_then_on() -> None:
    sim = ServerSim(ServerParams(300, 100, 8, 0.3, 16), np.random.default_rng(3))
    sim.advance(1800e3)
    mid = sim.counters()
    sim.set_params(ServerParams(300, 100, 16, 0.6, 16))
    sim.advance(1800e3 * 2)
    first = window_environment(sim.counters().__class__(**{**mid.__dict__}), mid, 16)  # empty window
    assert np.isnan(first.itl_ms)
    second = window_environment(mid, sim.counters(), 16)
    q = solve_queue(16, 0.6, second.rpm, second.avg_tokens, 16)
    assert second.itl_ms == pytest.approx(float(q.itl_ms), rel=0.02)
    with pytest.raises(ValueError, match="alpha_ms"):
        sim.set_params(ServerParams(300, 100, -1, 0.3, 16))


def test_simulate_windows_feeds_the_tuner() -> None:
    scenario = parse_scenario(
        {
            "defaults": {"steps": 10, "avg_tokens": 100, "max_batch": 16, "noise": 0, "alpha": 8, "beta": 0.3},
            "phases": [{"rpm": [110, 370]}, {"rpm": [110, 370], "alpha": 10}],
        }
    )
    windows = list(simulate_windows(scenario, np.random.default_rng(0), window_s=300))
    assert len(windows) == 20 and [w.phase for w in windows] == [0] * 10 + [1] * 10
    assert windows[0].env.rpm == pytest.approx(110, rel=0.15) and windows[1].env.rpm == pytest.approx(370, rel=0.1)
    assert windows[-1].true_alpha == 10 and not any(w.saturated for w in windows)
    tuner = Tuner(default_config())
    records = [tuner.step(w.env) for w in windows]
    assert all(r.reason is None or "rejected" in r.reason for r in records)
    assert np.isfinite(tuner.state).all()


def _parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) vllm:[a-z0-9_]+ .+", line), line
            continue
        m = re.fullmatch(r'(vllm:[a-z0-9_]+)\{((?:[a-z_]+="[^"]*",?)+)\} (\S+)', line)
        assert m, line
        samples[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return samples


def test_exposition_has_vllm_names_labels_and_cumulative_buckets() -> None:
    sim = ServerSim(ServerParams(600, 100, 8, 0.3, 16), np.random.default_rng(4))
    sim.advance(300e3)
    labels = ServerLabels(model_name="facebook/opt-125m", server_label="pod", server="a-0", namespace="platform-opt")
    text = render_metrics([(labels, sim.counters())], itl_metric="both")
    samples = _parse(text)
    assert "# TYPE vllm:request_success_total counter" in text
    assert "# TYPE vllm:inter_token_latency_seconds histogram" in text
    assert "# TYPE vllm:time_per_output_token_seconds histogram" in text
    base = 'model_name="facebook/opt-125m",namespace="platform-opt",pod="a-0"'
    for name, bounds in (("vllm:request_queue_time_seconds", REQUEST_LATENCY_BUCKETS_S),
                         ("vllm:inter_token_latency_seconds", TOKEN_LATENCY_BUCKETS_S)):  # fmt: skip
        buckets = [samples[f'{name}_bucket{{{base},le="{b!r}"}}'] for b in bounds]
        buckets.append(samples[f'{name}_bucket{{{base},le="+Inf"}}'])
        assert buckets == sorted(buckets) and buckets[-1] == samples[f"{name}_count{{{base}}}"] > 0
    assert samples[f'vllm:request_success_total{{{base},finished_reason="length"}}'] > 0
    only_old = render_metrics([(labels, sim.counters())], itl_metric="time_per_output_token")
    assert "inter_token_latency" not in only_old and "time_per_output_token_seconds_sum" in only_old


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_emulator_speedup_schedule_and_control() -> None:
    clock = FakeClock()
    scenario = parse_scenario({"defaults": {"steps": 1, "avg_tokens": 100, "max_batch": 16, "noise": 0, "beta": 0.3},
                               "phases": [{"rpm": 100, "alpha": 8}, {"rpm": 200, "alpha": 12}]})  # fmt: skip
    params = [ServerParams(50, 100, 8, 0.3, 16)] * 2
    emu = Emulator(params, ["s-0", "s-1"], np.random.default_rng(5), speedup=60, clock=clock,
                   schedule=schedule_from_scenario(scenario, step_s=60))  # fmt: skip
    assert emu.status()["servers"]["s-0"]["rpm"] == 100  # the first step applies at t = 0
    clock.now += 1.5  # 90 emulated seconds: the second step (at 60 s) has applied
    status = emu.status()
    assert status["emulated_s"] == pytest.approx(90)
    assert status["servers"]["s-1"]["alpha_ms"] == 12 and status["servers"]["s-1"]["rpm"] == 200
    status = emu.control({"server": "s-1", "rpm": 30, "tokens": 50})
    assert status["servers"]["s-1"]["rpm"] == 30 and status["servers"]["s-1"]["avg_tokens"] == 50
    assert status["servers"]["s-0"]["rpm"] == 200
    for bad, message in (({"rpm": -1}, "rpm"), ({"server": "nope", "rpm": 1}, "no server"),
                         ({"speed": 2}, "unknown key"), ({"alpha": "x"}, "must be a number")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            emu.control(bad)
    assert emu.status()["servers"]["s-0"]["rpm"] == 200  # a bad request changes nothing
    assert emu.metrics().count('vllm:num_requests_running{model_name="facebook/opt-125m",') == 2


def test_command_line_errors_are_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "tuner.emulator", "--servers", "3", "--alpha", "1,2"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --alpha has 2 values but --servers is 3"
