"""Streamlit building blocks shared by the dashboard pages.

Every block takes a namespace ``ns`` (one per page, e.g. ``"sim"``) and keeps what it
needs in ``st.session_state`` under ``"{ns}.…"`` keys, so several pages can live side by
side and a page keeps its run while the user visits another one.

Session keys: ``{ns}.config`` (the applied :class:`FilterConfig`), ``{ns}.run`` (the
:class:`Run`), ``{ns}.target`` (the step a Run N / Run to end is heading for, or None).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from tuner.config import FilterConfig, config_to_json, default_config, parse_config_text
from tuner.dashboard.figures import all_figures
from tuner.dashboard.run import Run, latest_estimate
from tuner.errors import ConfigError, TunerError

CHUNK_SECONDS = 0.7
"""Longest stretch of stepping between two re-renders while running toward a target."""
CHART_CONFIG = {"displaylogo": False, "responsive": True}


def key(ns: str, name: str) -> str:
    return f"{ns}.{name}"


def get_config(ns: str) -> FilterConfig:
    """The applied configuration of page ``ns`` (the seed's default at first)."""
    k = key(ns, "config")
    if k not in st.session_state:
        st.session_state[k] = default_config()
    return st.session_state[k]


def get_run(ns: str) -> Run | None:
    return st.session_state.get(key(ns, "run"))


def set_run(ns: str, run: Run) -> None:
    """Install a new run (a new source or configuration): the previous history is dropped."""
    st.session_state[key(ns, "run")] = run
    st.session_state[key(ns, "target")] = None


# --- configuration sidebar ---------------------------------------------------------------


def config_sidebar(ns: str) -> FilterConfig | None:
    """Upload, edit (validated in place) and download the tuner configuration in the sidebar.

    Returns the new configuration when the user applied one on this run, else None.
    """
    applied = get_config(ns)
    text_key, upload_seen = key(ns, "config_text"), key(ns, "config_upload_seen")
    if text_key not in st.session_state:
        st.session_state[text_key] = config_to_json(applied)
    sidebar = st.sidebar
    sidebar.header("Tuner configuration")
    sidebar.caption("The seed's JSON keys (also as YAML): filterData and modelData. Applying one restarts the run.")
    uploaded = sidebar.file_uploader("Upload a configuration (JSON or YAML)", type=["json", "yaml", "yml"],
                                     key=key(ns, "config_upload"))
    new_config: FilterConfig | None = None
    if uploaded is not None and st.session_state.get(upload_seen) != uploaded.file_id:
        st.session_state[upload_seen] = uploaded.file_id
        raw = uploaded.getvalue()
        try:
            text = raw.decode("utf-8-sig")
            new_config = parse_config_text(text, uploaded.name)
        except UnicodeDecodeError:
            st.session_state[key(ns, "config_upload_error")] = f"{uploaded.name}: not a text file"
        except ConfigError as exc:
            st.session_state[key(ns, "config_upload_error")] = str(exc)
        else:
            st.session_state[key(ns, "config_upload_error")] = None
            st.session_state[text_key] = text
    if uploaded is None:
        st.session_state[upload_seen] = None
        st.session_state[key(ns, "config_upload_error")] = None
    upload_error = st.session_state.get(key(ns, "config_upload_error"))
    if upload_error:
        sidebar.error(f"Upload not applied: {upload_error}")

    text = sidebar.text_area("Edit the configuration", key=text_key, height=320,
                             help="JSON or YAML; validated as you edit (Ctrl+Enter or click outside to check).")
    problem: str | None = None
    try:
        edited = parse_config_text(text, "configuration")
    except ConfigError as exc:
        problem, edited = str(exc), None
    if problem:
        sidebar.error(problem, icon="⚠️")
    elif edited != applied and new_config is None:
        sidebar.info("Edited: press Apply to restart the run with it.")
    if sidebar.button("Apply configuration", key=key(ns, "config_apply"), disabled=problem is not None,
                      width="stretch"):
        new_config = edited
    if new_config is not None:
        st.session_state[key(ns, "config")] = new_config
        applied = new_config
    sidebar.download_button("Download configuration (JSON)", data=config_to_json(applied),
                            file_name="tuner-config.json", mime="application/json", key=key(ns, "config_download"),
                            on_click="ignore", width="stretch")
    return new_config


# --- controls ------------------------------------------------------------------------------


def _safely(action: Callable[[str], None]) -> Callable[[str], None]:
    """A button callback that records a failure as a message instead of raising (callbacks run
    before the page, outside :func:`guarded`); :func:`run_controls` shows the message."""

    def wrapper(ns: str) -> None:
        try:
            action(ns)
        except Exception as exc:  # shown on the page; the run keeps the steps it made
            st.session_state[key(ns, "target")] = None
            kind = "" if isinstance(exc, TunerError) else f"Unexpected error ({type(exc).__name__}): "
            st.session_state[key(ns, "action_error")] = f"{kind}{exc}"

    wrapper.__name__ = action.__name__
    return wrapper


@_safely
def _on_step(ns: str) -> None:
    st.session_state[key(ns, "target")] = None
    run = get_run(ns)
    if run is not None:
        run.step(1)


@_safely
def _on_run_n(ns: str) -> None:
    run = get_run(ns)
    if run is not None:
        count = int(st.session_state.get(key(ns, "n"), 1))
        st.session_state[key(ns, "target")] = min(run.total, run.cursor + count)


@_safely
def _on_run_to_end(ns: str) -> None:
    run = get_run(ns)
    if run is not None:
        st.session_state[key(ns, "target")] = run.total


@_safely
def _on_pause(ns: str) -> None:
    st.session_state[key(ns, "target")] = None


@_safely
def _on_reset(ns: str) -> None:
    st.session_state[key(ns, "target")] = None
    run = get_run(ns)
    if run is not None:
        run.reset()


def advance(ns: str, run: Run) -> None:
    """Step toward the pending Run N / Run to end target for at most CHUNK_SECONDS."""
    target_key = key(ns, "target")
    target: int | None = st.session_state.get(target_key)
    if target is not None:
        run.step(target - run.cursor, budget_s=CHUNK_SECONDS)
        if run.cursor >= target:
            target = None
    st.session_state[target_key] = target


def run_controls(ns: str, run: Run) -> None:
    """Step, Run N, Run to end, Pause and Reset. The clicks act in callbacks (before the page
    draws); a pending Run N / Run to end advances by one chunk here, then the buttons are drawn
    with the state that results. Call :func:`continue_if_running` at the end of the page."""
    try:
        advance(ns, run)
    except Exception as exc:  # keep the steps made so far, stop running, say why
        st.session_state[key(ns, "target")] = None
        st.session_state[key(ns, "action_error")] = f"Stopped at step {run.cursor}: {exc}"
    failure = st.session_state.pop(key(ns, "action_error"), None)
    if failure:
        st.error(failure)
    running = st.session_state.get(key(ns, "target")) is not None
    cols = st.columns([1, 1.3, 1, 1, 1, 1], vertical_alignment="bottom")
    cols[0].button("Step", key=key(ns, "step"), type="primary", width="stretch", disabled=run.done,
                   on_click=_on_step, args=(ns,))
    cols[1].number_input("N steps", min_value=1, max_value=1_000_000, value=10, step=1, key=key(ns, "n"))
    cols[2].button("Run N", key=key(ns, "run_n"), width="stretch", disabled=run.done, on_click=_on_run_n, args=(ns,))
    cols[3].button("Run to end", key=key(ns, "run_end"), width="stretch", disabled=run.done,
                   on_click=_on_run_to_end, args=(ns,))
    cols[4].button("Pause", key=key(ns, "pause"), width="stretch", disabled=not running, on_click=_on_pause,
                   args=(ns,))
    cols[5].button("Reset", key=key(ns, "reset"), width="stretch", on_click=_on_reset, args=(ns,))


def continue_if_running(ns: str) -> None:
    """Rerun the page while a Run N / Run to end has steps left (Pause clears the target)."""
    if st.session_state.get(key(ns, "target")) is not None:
        time.sleep(0.05)  # let the browser draw the chunk and deliver a Pause click
        st.rerun()


def status_line(ns: str, run: Run) -> None:
    target = st.session_state.get(key(ns, "target"))
    text = f"Step {run.cursor:,} of {run.total:,} — {run.source.label}"
    if target is not None:
        text += f" · running to step {target:,} (Pause stops)"
    elif run.done:
        text += " · end of the source (Reset to start again)"
    st.progress(run.cursor / run.total if run.total else 0.0, text=text)


# --- output ---------------------------------------------------------------------------------


def latest_table(run: Run) -> None:
    """The latest estimate (α, β, their σ) and the last NIS and outcome, in one compact row."""
    row = latest_estimate(run)
    frame = pd.DataFrame([row])
    formats: dict[str, Any] = {}
    for column in frame.columns:
        if column.endswith("(%)"):
            formats[column] = st.column_config.NumberColumn(column, format="%.2f")
        elif column.endswith("(ms)") or column == "last NIS":
            formats[column] = st.column_config.NumberColumn(column, format="%.5g")
    st.dataframe(frame, hide_index=True, column_config=formats, width="stretch")


def charts(ns: str, run: Run) -> None:
    """Observed vs predicted wait and ITL, α and β with ±2σ bands, NIS with the gate."""
    history = run.history.frame()
    figures = all_figures(history, run.config.nis_gate, run.tuner.model.state_names,
                          run.tuner.model.observation_names)
    names = [n for n in figures if n != "nis"]
    for start in range(0, len(names), 2):
        cols = st.columns(2)
        for col, name in zip(cols, names[start:start + 2], strict=False):
            col.plotly_chart(figures[name], key=key(ns, f"chart_{name}"), config=CHART_CONFIG)
    st.plotly_chart(figures["nis"], key=key(ns, "chart_nis"), config=CHART_CONFIG)


def history_download(ns: str, run: Run, file_name: str) -> None:
    st.download_button(
        f"Download the history ({len(run.history):,} step{'' if len(run.history) == 1 else 's'}, CSV)",
        data=run.history.to_csv,
        file_name=file_name,
        mime="text/csv",
        key=key(ns, "history_download"),
        on_click="ignore",
        disabled=len(run.history) == 0,
    )


def run_view(ns: str, run: Run, history_file: str) -> None:
    """Controls, status, latest estimate, charts and history download of a run."""
    run_controls(ns, run)
    status_line(ns, run)
    latest_table(run)
    charts(ns, run)
    history_download(ns, run, history_file)


def guarded(body: Callable[[], None]) -> None:
    """Run a page body; a TunerError or an unexpected error is shown as a message, never a traceback.

    The session state (run, history) is left as it was before the failing action.
    """
    try:
        body()
    except TunerError as exc:
        st.error(str(exc))
    except Exception as exc:  # the page must not show a traceback; the message says what failed
        if type(exc).__module__.startswith("streamlit"):
            raise  # st.rerun / st.stop control flow
        st.error(f"Unexpected error ({type(exc).__name__}): {exc}")


def fmt(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
