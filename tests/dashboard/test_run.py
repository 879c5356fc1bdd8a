"""Run: stepping a source appends to the history; sources; the latest-estimate row; scenario table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tuner.config import default_config
from tuner.dashboard.run import Run, SimulatedSource, TraceSource, latest_estimate
from tuner.dashboard.simulated import scenario_from_table, scenario_table
from tuner.errors import ScenarioError
from tuner.observers.offline import read_trace
from tuner.scenario import seed_scenario

TRACE = b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\n" + b"35.2,1024,48,27,200,49\n" * 3 + \
    b"0,1024,48,27,200,49\n"


def test_simulated_source_is_reproducible_per_seed() -> None:
    a = SimulatedSource.create(seed_scenario(), 3)
    b = SimulatedSource.create(seed_scenario(), 3)
    c = SimulatedSource.create(seed_scenario(), 4)
    assert len(a) == 60
    assert a.window(10)[0] == b.window(10)[0] and a.window(10)[0] != c.window(10)[0]
    _env, extra = a.window(25)
    assert extra["phase"] == 2 and extra["true_alpha"] == 22.0 and extra["rpm"] == 35.2


def test_run_steps_append_and_stop_at_the_end() -> None:
    run = Run(default_config(), SimulatedSource.create(seed_scenario(), 0))
    assert len(run.step(5)) == 5 and run.cursor == 5
    frame = run.history.frame().copy()
    run.step(100)
    assert run.done and run.cursor == 60
    pd.testing.assert_frame_equal(run.history.frame().iloc[:5], frame)
    assert run.step(1) == []
    run.reset()
    assert run.cursor == 0 and not run.done


def test_run_budget_stops_early() -> None:
    run = Run(default_config(), SimulatedSource.create(seed_scenario(), 0))
    records = run.step(60, budget_s=0.0)
    assert len(records) == 1


def test_trace_source_brings_lines_and_skips_idle_windows() -> None:
    run = Run(default_config(), TraceSource.create(read_trace(TRACE, source="t.csv")))
    run.step(10)
    frame = run.history.frame()
    assert frame["line"].tolist() == [2, 3, 4, 5]
    assert frame["status"].tolist()[-1] == "skipped"


def test_latest_estimate_before_and_after_steps() -> None:
    run = Run(default_config(), SimulatedSource.create(seed_scenario(), 0))
    row = latest_estimate(run)
    assert row["step"] == 0 and row["alpha (ms)"] == pytest.approx(4.0) and math.isnan(row["last NIS"])
    run.step(3)
    row = latest_estimate(run)
    last = run.history.last
    assert row["step"] == 3 and row["beta (ms)"] == last["beta"] and row["last NIS"] == last["nis"]
    assert row["σ alpha (%)"] == pytest.approx(100 * last["alpha_std"] / last["alpha"])
    assert row["last step"].startswith(last["status"])


def test_scenario_table_round_trip_and_cycled_rpm() -> None:
    table = scenario_table(seed_scenario())
    assert scenario_from_table(table) == seed_scenario()
    table.loc[0, "rpm"] = "20, 30, 40"
    assert scenario_from_table(table).phases[0].rpm == (20.0, 30.0, 40.0)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("alpha", float("nan"), "phase 2, column alpha is empty"), ("rpm", "fast", "phase 2, column rpm must be a number"),
     ("noise", 1.5, "noise is a fraction below 1"), ("steps", 0, "steps must be positive")],
)
def test_scenario_table_errors_name_row_and_column(column: str, value: object, message: str) -> None:
    table = scenario_table(seed_scenario()).astype(object)
    table.loc[1, column] = value
    with pytest.raises(ScenarioError, match=message):
        scenario_from_table(table)
    with pytest.raises(ScenarioError, match="at least one phase"):
        scenario_from_table(table.iloc[0:0])


def test_a_scenario_too_long_for_the_dashboard_is_refused() -> None:
    from tuner.scenario import parse_scenario

    huge = parse_scenario({"defaults": {"rpm": 35.2, "avg_tokens": 1024, "max_batch": 48, "alpha": 18, "beta": 1,
                                        "noise": 0.05}, "phases": [{"steps": 100_001}]})
    with pytest.raises(ScenarioError, match="at most 100,000"):
        SimulatedSource.create(huge, 0)
