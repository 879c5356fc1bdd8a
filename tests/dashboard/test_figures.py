"""Figure builders: traces present, bands, truth, gate line, markers, downsampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from tuner.dashboard.figures import (
    MAX_POINTS,
    all_figures,
    downsample,
    gate_threshold,
    nis_figure,
    observation_figure,
    state_figure,
)


def _history(n: int, *, truth: bool = True) -> pd.DataFrame:
    steps = np.arange(1, n + 1)
    frame = pd.DataFrame({
        "step": steps,
        "alpha": np.full(n, 18.0), "alpha_std": np.full(n, 1.0),
        "beta": np.full(n, 1.0), "beta_std": np.full(n, 0.6),
        "wait_ms_observed": np.linspace(100, 200, n), "wait_ms_predicted": np.linspace(90, 210, n),
        "itl_ms_observed": np.full(n, 50.0), "itl_ms_predicted": np.full(n, 49.0),
        "nis": np.full(n, 1.5), "status": ["accepted"] * n, "reason": [""] * n,
    })
    if truth:
        frame["true_alpha"], frame["true_beta"] = 18.0, 1.0
    return frame


def test_observation_figure_has_observed_and_predicted_lines() -> None:
    fig = observation_figure(_history(20), "wait_ms")
    names = [t.name for t in fig.data]
    assert names == ["observed", "predicted (before update)"]
    assert list(fig.data[1].y) == list(np.linspace(90, 210, 20))
    assert "Queue wait (ms)" in fig.layout.yaxis.title.text


def test_state_figure_band_is_two_sigma_clipped_at_zero_and_shows_truth() -> None:
    fig = state_figure(_history(10), "beta")
    band = fig.data[0]
    assert band.fill == "toself"
    y = np.asarray(band.y)
    assert y[:10] == pytest.approx(np.full(10, 2.2)) and y[10:] == pytest.approx(np.zeros(10))  # 1 - 1.2 → 0
    assert [t.name for t in fig.data] == ["±2σ", "estimate", "true value"]
    assert "true value" not in [t.name for t in state_figure(_history(10, truth=False), "beta").data]


def test_nis_figure_marks_gate_rejected_and_skipped() -> None:
    frame = _history(12)
    frame.loc[3, ["status", "reason", "nis"]] = ["rejected", "rejected: NIS 40 above the gate 7.38", 40.0]
    frame.loc[5, ["status", "reason", "nis"]] = ["skipped", "skipped: rpm is 0", np.nan]
    fig = nis_figure(frame, 0.975)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["rejected"].x) == [4]
    assert list(by_name["skipped"].x) == [6]
    assert by_name["skipped"].y[0] > 0  # drawn on the log axis, below the data
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.shapes[0].y0 == pytest.approx(chi2.ppf(0.975, 2))
    assert any("gate" in (t.name or "") for t in fig.data)


def test_gate_threshold_without_a_gate_is_a_labelled_reference() -> None:
    value, label = gate_threshold(None, 2)
    assert value == pytest.approx(chi2.ppf(0.975, 2)) and "gate off" in label


def test_downsample_keeps_last_row_and_bounds_points() -> None:
    frame = _history(10_000)
    small = downsample(frame, MAX_POINTS)
    assert len(small) <= MAX_POINTS + 1
    assert small["step"].iloc[-1] == 10_000 and small["step"].iloc[0] == 1
    assert downsample(frame.head(50)) is not None and len(downsample(frame.head(50))) == 50
    fig = observation_figure(frame, "itl_ms")
    assert len(fig.data[0].x) <= MAX_POINTS + 1


def test_rejected_markers_survive_downsampling() -> None:
    frame = _history(5000)
    frame.loc[1234, ["status", "nis"]] = ["rejected", 99.0]
    fig = nis_figure(frame, 0.975)
    assert 1235 in list({t.name: t for t in fig.data}["rejected"].x)


def test_empty_history_gives_placeholder_figures() -> None:
    figures = all_figures(pd.DataFrame(), None)
    assert set(figures) == {"obs_wait_ms", "obs_itl_ms", "state_alpha", "state_beta", "nis"}
    for fig in figures.values():
        assert not fig.data and "press Step" in fig.layout.annotations[0].text


def test_a_single_step_shows_its_band_as_an_error_bar() -> None:
    fig = state_figure(_history(1), "alpha")
    estimate = next(t for t in fig.data if t.name == "estimate")
    assert list(estimate.error_y.array) == [2.0] and list(estimate.error_y.arrayminus) == [2.0]
    assert estimate.mode == "lines+markers"
    assert state_figure(_history(5), "alpha").data[1].error_y.array is None
