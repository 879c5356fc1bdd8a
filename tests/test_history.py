"""History of step records: rows, statuses, append-only frames, CSV."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from tuner.config import default_config
from tuner.environment import Environment
from tuner.history import History, record_row, status_of
from tuner.observers.simulated import simulate
from tuner.scenario import seed_scenario
from tuner.tuner import StepRecord, Tuner


def _records(count: int) -> list[StepRecord]:
    tuner = Tuner(default_config())
    windows = simulate(seed_scenario(), np.random.default_rng(0))
    return [tuner.step(next(windows).env) for _ in range(count)]


def test_row_holds_state_std_covariance_prediction_and_outcome() -> None:
    record = _records(1)[0]
    row = record_row(record, {"line": 7})
    assert row["step"] == 1 and row["line"] == 7
    assert row["alpha"] == record.state[0] and row["beta_std"] == record.std[1]
    assert row["cov_alpha_beta"] == record.covariance[0][1]
    assert row["wait_ms_predicted"] == record.predicted[0]
    assert row["itl_ms_observed"] == record.observed[1]
    assert row["status"] == "accepted" and row["reason"] == ""


def test_skipped_window_has_no_prediction_and_a_reason() -> None:
    tuner = Tuner(default_config())
    record = tuner.step(Environment(rpm=0.0, avg_tokens=1024, max_batch=48, wait_ms=1.0, itl_ms=2.0))
    assert status_of(record) == "skipped"
    row = record_row(record)
    assert math.isnan(row["wait_ms_predicted"]) and math.isnan(row["nis"])
    assert "rpm" in row["reason"]


def test_rejected_status_from_a_gated_record() -> None:
    record = _records(1)[0]
    gated = StepRecord(**{**record.__dict__, "accepted": False, "reason": "rejected: NIS 99 above the gate 7.38"})
    assert status_of(gated) == "rejected"


def test_frame_is_append_only_and_incremental() -> None:
    records = _records(30)
    history = History()
    assert history.frame().empty and history.to_csv() == "" and history.last is None
    for r in records[:10]:
        history.append(r)
    first = history.frame()
    assert len(first) == 10
    history.extend([(r, {"phase": 1}) for r in records[10:]])
    second = history.frame()
    assert len(second) == 30
    pd.testing.assert_frame_equal(second.iloc[:10].drop(columns=["phase"]), first)
    assert second["step"].tolist() == list(range(1, 31))
    assert second["phase"].iloc[:10].isna().all() and (second["phase"].iloc[10:] == 1).all()
    assert history.last["step"] == 30


def test_csv_round_trips() -> None:
    history = History()
    for r in _records(5):
        history.append(r, {"true_alpha": 18.0})
    text = history.to_csv()
    back = pd.read_csv(io.StringIO(text))
    assert len(back) == 5
    np.testing.assert_allclose(back["alpha"], history.frame()["alpha"])
    assert list(back.columns) == list(history.frame().columns)
