"""Pure logic of the service (no HTTP): parsing, settings, the fleet and its SQLite store."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuner.config import default_config
from tuner.errors import ConfigError
from tuner.service.collector import decode, parse_environments
from tuner.service.democollector import SimServer, simulated_windows, vectorized_windows
from tuner.service.fleet import Fleet
from tuner.service.metrics import CycleReport, ServiceMetrics
from tuner.service.settings import DEFAULT_COLLECTOR_PORT, DEFAULT_TUNER_PORT, load_filter_config, settings_from
from tuner.service.sources import SourceError
from tuner.service.store import Store

GOOD = {"Lambda": 30, "AvgTokensPerRequest": 512, "MaxBatchSize": 32, "BatchSize": 4.5, "AvgQueueTime": 3.0,
        "AvgTokenTime": 12.5}  # fmt: skip


def test_parse_environments_keeps_good_servers_and_names_the_bad() -> None:
    payload = {
        "good": GOOD,
        "no-batch": {k: v for k, v in GOOD.items() if k != "BatchSize"},
        "missing": {"Lambda": 1},
        "text": {**GOOD, "AvgTokenTime": "12"},
        "bool": {**GOOD, "MaxBatchSize": True},
        "list": [1, 2],
        "idle": {**GOOD, "Lambda": 0},
    }
    r = parse_environments(payload)
    assert r.names == ("good", "no-batch", "idle")
    assert r.env.rpm.tolist() == [30.0, 30.0, 0.0]
    assert r.env.itl_ms.tolist() == [12.5, 12.5, 12.5]
    assert math.isnan(r.env.batch_size[1])
    assert set(r.problems) == {"missing", "text", "bool", "list"}
    assert "AvgQueueTime is missing" in r.problems["missing"]
    assert "AvgTokenTime must be a number" in r.problems["text"]
    with pytest.raises(SourceError):
        parse_environments([GOOD])


def test_decode_matches_json_and_rejects_garbage() -> None:
    payload = vectorized_windows(50, seed=3)()
    payload['odd "name" é'] = {"nested": [1, {"x": None}], "s": "a,b}c"}
    for text in (json.dumps(payload), json.dumps(payload, indent=2), " \n" + json.dumps(payload) + "\n"):
        assert decode(text.encode()) == payload
    assert decode(b"{}") == {} and decode(b"[1]") == [1]
    for bad in (b"", b"{", b'{"a":1,}', b'{"a" 1}', b'{"a":1} x', b"\xff\xfe", b"<html>", b'{"a":1 "b":2}'):
        with pytest.raises(SourceError):
            decode(bad)


def test_settings_precedence_and_checks(tmp_path: Path) -> None:
    s = settings_from([], {})
    assert (s.port, s.collector_port) == (DEFAULT_TUNER_PORT, DEFAULT_COLLECTOR_PORT)
    assert s.port != s.collector_port
    env = {"TUNER_PORT": "9000", "COLLECTOR_HOST": "collector.local", "TUNER_PERIOD": "2.5", "TUNER_STATE": ""}
    s = settings_from([], env)
    assert (s.port, s.collector_host, s.period_s, s.state_path) == (9000, "collector.local", 2.5, None)
    assert s.collector_url == "http://collector.local:8080/getenv"
    s = settings_from(["--port", "9100", "--period", "0", "--state", "x.sqlite"], env)
    assert (s.port, s.period_s, s.state_path) == (9100, 0.0, "x.sqlite")
    assert settings_from([], {}).forget_after_s == 86400.0
    assert settings_from([], {"TUNER_FORGET_AFTER": "600"}).forget_after_s == 600.0
    assert settings_from(["--forget-after", "0"], {"TUNER_FORGET_AFTER": "600"}).forget_after_s == 0.0
    for bad in ({"TUNER_PORT": "http"}, {"TUNER_PERIOD": "-1"}, {"COLLECTOR_PORT": "70000"}, {"TUNER_SOURCE": "x"},
                {"TUNER_FORGET_AFTER": "-5"}, {"TUNER_FORGET_AFTER": "soon"}):
        with pytest.raises(ConfigError):
            settings_from([], bad)

    (tmp_path / "config.yaml").write_text(
        "filterData: {gammaFactor: 1, errorLevel: 0.05, tPercentile: 1.96}\n"
        "modelData: {initState: [5, 0.5], percentChange: [0.1, 0.1], expectedObservations: [100, 2]}\n"
    )
    assert load_filter_config(settings_from(["--config", str(tmp_path)], {})).init_state == (5.0, 0.5)
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(ConfigError, match=r"config\.json"):
        load_filter_config(settings_from(["--config", str(tmp_path / "empty-dir")], {}))


def _payloads(seed: int = 1, servers: int = 3) -> Iterator[dict[str, Any]]:
    """/getenv payloads of simulated servers s0, s1, …"""
    truth = [SimServer(f"s{k}", 12.0 + 4 * k, 0.6 + 0.3 * k, rpm=(20.0, 35.0)) for k in range(servers)]
    provide = simulated_windows(truth, seed)
    while True:
        yield provide()


def _readings(seed: int = 1, servers: int = 3) -> Iterator[Any]:
    for payload in _payloads(seed, servers):
        yield parse_environments(payload)


def test_fleet_adds_steps_skips_and_publishes_immutable_snapshots() -> None:
    fleet = Fleet(default_config())
    windows = _readings()
    first = fleet.step(next(windows))
    assert first.added == ("s0", "s1", "s2") and first.stepped == 3
    snap = fleet.current
    with pytest.raises(ValueError):
        snap.alpha_ms[0] = 1.0
    with pytest.raises(TypeError):
        snap.index["x"] = 9  # type: ignore[index]

    bad = parse_environments({"s0": {**GOOD, "Lambda": -1}, "new-idle": {**GOOD, "Lambda": 0}})
    out = fleet.step(bad)
    assert out.skipped == 1 and out.accepted == 0 and "new-idle" in out.not_added and not out.problems
    after = fleet.current
    assert after.version == snap.version + 1
    assert after.alpha_ms[0] == snap.alpha_ms[0] and after.skipped[0] == 1 and after.steps[0] == 2
    assert "new-idle" not in after.index and len(after) == 3
    assert snap.steps[0] == 1  # the old snapshot did not move


class _FailingArrays(Mapping[str, np.ndarray]):
    """A mapping whose iteration fails half-way, as a crash in the middle of a save would."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = dict(arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def __len__(self) -> int:
        return len(self._arrays)

    def __iter__(self) -> Iterator[str]:
        keys = list(self._arrays)
        yield keys[0]
        raise OSError("disk on fire")


def test_store_round_trip_and_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    fleet = Fleet(default_config(), Store(path))
    windows = _readings(seed=7)
    for _ in range(6):
        fleet.step(next(windows))
    saved = fleet.current
    fleet.close()

    again = Fleet(default_config(), Store(path))
    assert again.load() == 3
    snap = again.current
    assert snap.names == saved.names and snap.version == saved.version
    for field in ("alpha_ms", "beta_ms", "alpha_std_ms", "beta_std_ms", "nis", "updated_s", "steps", "accepted"):
        np.testing.assert_array_equal(getattr(snap, field), getattr(saved, field))

    # A restored fleet continues exactly as the original would have.
    twin = Fleet(default_config(), Store(tmp_path / "twin.sqlite"))
    twin._restore(Store(path).load())  # type: ignore[arg-type]
    window = next(windows)
    again.step(window)
    twin.step(window)
    np.testing.assert_array_equal(again.current.alpha_ms, twin.current.alpha_ms)

    # A save that fails half-way leaves the previous state on disk.
    store = Store(path)
    before = store.load()
    assert before is not None
    with pytest.raises(OSError):
        store.save((*before.names, "extra"), _FailingArrays(before.arrays), {"version": "999"})
    after = Store(path).load()
    assert after is not None and after.names == before.names and after.meta["version"] == before.meta["version"]
    for key, value in before.arrays.items():
        np.testing.assert_array_equal(after.arrays[key], value)


def test_metrics_text_is_prometheus_format() -> None:
    fleet = Fleet(default_config())
    fleet.step(parse_environments({'we"ird\\name': GOOD, "plain": GOOD}))
    metrics = ServiceMetrics()
    metrics.error("collector_down", 2)
    metrics.cycle(CycleReport(1, 0.0, 0.3, 0.1, 0.15, 0.05, True, 2, 2, 0, 0, 0, None))
    text = metrics.render(fleet.current)
    assert 'tuner_alpha_ms{server="we\\"ird\\\\name"}' in text
    assert 'tuner_errors_total{kind="collector_down"} 2' in text
    assert 'tuner_cycle_duration_seconds_bucket{le="0.5"} 1' in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])  # every sample value parses (NaN included)


def test_setparams_sets_defaults_and_keeps_values_already_set() -> None:
    import subprocess

    script = Path(__file__).resolve().parents[2] / "setparams.sh"
    shown = 'echo "$TUNER_HOST $TUNER_PORT $COLLECTOR_HOST $COLLECTOR_PORT"'
    fresh = subprocess.run(["bash", "-c", f". {script}; {shown}"], capture_output=True, text=True, env={}, check=True)
    assert fresh.stdout.split() == ["127.0.0.1", str(DEFAULT_TUNER_PORT), "127.0.0.1", str(DEFAULT_COLLECTOR_PORT)]
    kept = subprocess.run(
        ["sh", "-c", f". {script}; {shown}"],
        capture_output=True,
        text=True,
        env={"TUNER_PORT": "9999", "COLLECTOR_HOST": "collector.svc"},
        check=True,
    )
    assert kept.stdout.split() == ["127.0.0.1", "9999", "collector.svc", str(DEFAULT_COLLECTOR_PORT)]


def test_fleet_forgets_servers_not_seen_and_the_store_follows(tmp_path: Path) -> None:
    """Pods come and go: a server with no window for forget_after_s is dropped from the fleet and
    the saved state; the others keep their filters exactly, and a restart restores only them."""
    now = [1000.0]
    path = tmp_path / "state.sqlite"
    fleet = Fleet(default_config(), Store(path), clock=lambda: now[0], forget_after_s=60.0)
    payloads = _payloads(seed=3, servers=3)
    fleet.step(parse_environments(next(payloads)))
    fleet.step(parse_environments(next(payloads)))
    without_s1 = {n: e for n, e in next(payloads).items() if n != "s1"}
    for _ in range(3):  # s1 stops reporting; 30 s later it is still kept
        now[0] += 10.0
        out = fleet.step(parse_environments(without_s1))
        assert out.forgotten == ()
    assert "s1" in fleet.current.index
    kept = fleet.current
    twin = Fleet(default_config(), clock=lambda: now[0])  # keeps every server: the reference for s0 and s2
    reader = Store(path)
    twin._restore(reader.load())  # type: ignore[arg-type]
    reader.close()

    now[0] += 40.0  # s1 last seen 70 s ago
    out = fleet.step(parse_environments(without_s1))
    reference = twin.step(parse_environments(without_s1))
    assert out.forgotten == ("s1",) and reference.forgotten == ()
    snap = fleet.current
    assert snap.names == ("s0", "s2") and snap.row("s1") is None
    assert kept.row("s1") == 1  # a snapshot taken before is unchanged
    for name in ("s0", "s2"):
        i, j = snap.row(name), twin.current.row(name)
        assert snap.alpha_ms[i] == twin.current.alpha_ms[j] and snap.beta_ms[i] == twin.current.beta_ms[j]
        assert snap.steps[i] == twin.current.steps[j]
    fleet.close()

    restarted = Fleet(default_config(), Store(path), clock=lambda: now[0], forget_after_s=60.0)
    assert restarted.load() == 2
    assert restarted.current.names == ("s0", "s2")
    np.testing.assert_array_equal(restarted.current.alpha_ms, snap.alpha_ms)
    # s1 coming back starts afresh, appended after the others, and is saved with them
    back = restarted.step(parse_environments(next(payloads)))
    assert back.added == ("s1",) and restarted.current.names == ("s0", "s2", "s1")
    restarted.close()
    store = Store(path)
    assert store.load().names == ("s0", "s2", "s1")  # type: ignore[union-attr]
    store.close()


def test_forget_after_zero_keeps_every_server() -> None:
    now = [0.0]
    fleet = Fleet(default_config(), clock=lambda: now[0], forget_after_s=0.0)
    payloads = _payloads(seed=4, servers=2)
    fleet.step(parse_environments(next(payloads)))
    only_s0 = {"s0": next(payloads)["s0"]}
    now[0] += 1e9
    assert fleet.step(parse_environments(only_s0)).forgotten == ()
    assert fleet.current.names == ("s0", "s1")


def test_prometheus_source_settings_take_query_templates_and_an_empty_namespace(tmp_path: Path) -> None:
    from tuner.errors import ObserverError
    from tuner.service.app import make_source

    templates = tmp_path / "queries.yaml"
    templates.write_text("prometheus:\n  queries:\n    itl_ms: 'avg by ($label) (my_itl{$selector})'\n")
    env = {"TUNER_SOURCE": "prometheus", "PROMETHEUS_ADDRESS": "http://127.0.0.1:9", "TUNER_PROM_NAMESPACE": ""}
    settings = settings_from(["--queries", str(templates)], env)
    assert settings.prometheus_namespace == ""  # set but empty: any namespace, not the default
    source = make_source(settings)
    try:
        observer = source._observer  # type: ignore[union-attr]
        assert observer.settings.namespace == ""
        assert observer.settings.promql()["itl_ms"] == 'avg by (pod) (my_itl{model_name=~".*(?:opt-125).*"})'
    finally:
        source.close()  # type: ignore[union-attr]
    templates.write_text("prometheus:\n  queries:\n    latency: 'x'\n")
    with pytest.raises(ObserverError, match=r"queries\.yaml: unknown query name\(s\) latency"):
        make_source(settings)


def test_fleet_with_the_shipped_emulator_config_steps_many_servers() -> None:
    """config-emulator.json counts rates (rateWindowMinutes): its extra noise must follow each server's row."""
    from tuner.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "sample_data" / "config-emulator.json")
    assert config.rate_window_minutes > 0
    fleet = Fleet(config)
    windows = _readings(seed=5, servers=4)
    outcomes = [fleet.step(next(windows)) for _ in range(6)]
    assert all(o.stepped == 4 and o.accepted == 4 for o in outcomes)
    assert np.isfinite(fleet.current.alpha_ms).all() and np.isfinite(fleet.current.beta_ms).all()
