"""Plotly figure builders shared by every dashboard page.

Pure functions of a history DataFrame (see :mod:`tuner.history`): no Streamlit, no
state. Long histories are downsampled to at most ``max_points`` points per line (every
k-th step plus the last one); rejected and skipped steps are always all marked.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.stats import chi2

MAX_POINTS = 1500
"""Points per line above which a history is downsampled."""
MAX_MARKERS = 2000
"""Rejected/skipped markers drawn at most (the first ones)."""

OBSERVED = "#1f77b4"
PREDICTED = "#ff7f0e"
TRUTH = "#2ca02c"
REJECTED = "#d62728"
SKIPPED = "#7f7f7f"

LABELS = MappingProxyType({
    "wait_ms": "Queue wait (ms)",
    "itl_ms": "Inter-token latency (ms)",
    "alpha": "alpha (ms per iteration)",
    "beta": "beta (ms per request in the batch)",
})


def downsample(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Every k-th row so that at most about ``max_points`` remain, always keeping the last row."""
    n = len(frame)
    if n <= max_points:
        return frame
    stride = math.ceil(n / max_points)
    index = np.unique(np.append(np.arange(0, n, stride), n - 1))
    return frame.iloc[index]


def _mode(frame: pd.DataFrame) -> str:
    """Markers as well as lines while there are few points, so a single step shows."""
    return "lines+markers" if len(frame) <= 200 else "lines"


def _layout(fig: go.Figure, title: str, y_title: str, *, height: int = 320) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 45},
        xaxis_title="step",
        yaxis_title=y_title,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hovermode="x unified",
    )
    return fig


def _empty(title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text="No steps yet: press Step", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig = _layout(fig, title, y_title)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def observation_figure(history: pd.DataFrame, name: str, *, max_points: int = MAX_POINTS) -> go.Figure:
    """Observed versus predicted ``name`` (e.g. ``wait_ms``) per step; the prediction is the one made
    before the step's update."""
    label = LABELS.get(name, name)
    title = f"{label}: observed vs predicted"
    if history.empty:
        return _empty(title, label)
    frame = downsample(history, max_points)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=frame["step"], y=frame[f"{name}_observed"], name="observed", mode="lines+markers",
                   line={"color": OBSERVED, "width": 1.5}, marker={"size": 4})
    )
    fig.add_trace(
        go.Scatter(x=frame["step"], y=frame[f"{name}_predicted"], name="predicted (before update)",
                   mode=_mode(frame), line={"color": PREDICTED, "width": 2, "dash": "dot"}, marker={"size": 4})
    )
    return _layout(fig, title, label)


def state_figure(history: pd.DataFrame, name: str, *, max_points: int = MAX_POINTS) -> go.Figure:
    """The estimate of state entry ``name`` with a ±2σ band (σ from P), and ``true_<name>`` when present."""
    label = LABELS.get(name, name)
    title = f"{name} estimate ±2σ"
    if history.empty:
        return _empty(title, label)
    frame = downsample(history, max_points)
    x = frame["step"].to_numpy()
    value = frame[name].to_numpy(dtype=float)
    sd = frame[f"{name}_std"].to_numpy(dtype=float)
    upper, lower = value + 2 * sd, np.maximum(value - 2 * sd, 0.0)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([upper, lower[::-1]]), fill="toself",
                   mode="lines", fillcolor="rgba(31,119,180,0.18)", line={"width": 0}, name="±2σ",
                   hoverinfo="skip")
    )
    # One step: the band has no width to fill, so show ±2σ as an error bar.
    error = {"type": "data", "array": upper - value, "arrayminus": value - lower} if len(frame) == 1 else None
    fig.add_trace(go.Scatter(x=x, y=value, name="estimate", mode=_mode(frame), marker={"size": 4},
                             line={"color": OBSERVED, "width": 2}, error_y=error))
    truth = f"true_{name}"
    if truth in frame.columns and frame[truth].notna().any():
        fig.add_trace(
            go.Scatter(x=x, y=frame[truth], name="true value", mode=_mode(frame), marker={"size": 4},
                       line={"color": TRUTH, "width": 2, "dash": "dash", "shape": "hv"})
        )
    return _layout(fig, title, label)


def gate_threshold(nis_gate: float | None, observations: int = 2) -> tuple[float, str]:
    """The NIS threshold line: the configured gate, or the 97.5 % chi-square quantile for reference."""
    if nis_gate is not None:
        return float(chi2.ppf(nis_gate, observations)), f"gate χ²({observations}) {nis_gate:.1%}"
    return float(chi2.ppf(0.975, observations)), f"χ²({observations}) 97.5 % (gate off)"


def nis_figure(
    history: pd.DataFrame, nis_gate: float | None, observations: int = 2, *, max_points: int = MAX_POINTS
) -> go.Figure:
    """NIS per step (log scale) with the gate threshold; rejected steps as red crosses, skipped
    steps (no NIS) as grey triangles at the bottom of the plot."""
    title = "Normalized innovation squared (NIS)"
    if history.empty:
        return _empty(title, "NIS")
    threshold, threshold_label = gate_threshold(nis_gate, observations)
    frame = downsample(history, max_points)
    nis = frame["nis"].to_numpy(dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=frame["step"], y=nis, name="NIS", mode="lines+markers",
                             line={"color": OBSERVED, "width": 1}, marker={"size": 3}))
    fig.add_hline(y=threshold, line={"color": REJECTED, "dash": "dash", "width": 1})
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=threshold_label,
                             line={"color": REJECTED, "dash": "dash", "width": 1}))
    finite = history["nis"].to_numpy(dtype=float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    floor = float(np.min(finite)) if finite.size else threshold / 10
    rejected = history[history["status"] == "rejected"].head(MAX_MARKERS)
    if not rejected.empty:
        fig.add_trace(go.Scatter(x=rejected["step"], y=rejected["nis"], mode="markers", name="rejected",
                                 marker={"color": REJECTED, "symbol": "x", "size": 9},
                                 text=rejected["reason"], hovertemplate="step %{x}: %{text}<extra></extra>"))
    skipped = history[history["status"] == "skipped"].head(MAX_MARKERS)
    if not skipped.empty:
        fig.add_trace(go.Scatter(x=skipped["step"], y=np.full(len(skipped), min(floor, threshold) / 2),
                                 mode="markers", name="skipped", text=skipped["reason"],
                                 marker={"color": SKIPPED, "symbol": "triangle-up", "size": 9},
                                 hovertemplate="step %{x}: %{text}<extra></extra>"))
    fig = _layout(fig, title, "NIS (log scale)")
    fig.update_yaxes(type="log")
    return fig


def all_figures(history: pd.DataFrame, nis_gate: float | None, state_names: tuple[str, ...] = ("alpha", "beta"),
                observation_names: tuple[str, ...] = ("wait_ms", "itl_ms")) -> dict[str, go.Figure]:
    """Every figure of a page, keyed by a stable name."""
    out = {f"obs_{n}": observation_figure(history, n) for n in observation_names}
    out.update({f"state_{n}": state_figure(history, n) for n in state_names})
    out["nis"] = nis_figure(history, nis_gate, len(observation_names))
    return out
