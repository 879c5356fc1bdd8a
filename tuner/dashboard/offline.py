"""The Offline page: replay a CSV trace (uploaded, or a sample from sample_data/) step by step."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tuner.dashboard import components as ui
from tuner.dashboard.run import Run, TraceSource
from tuner.errors import TraceError
from tuner.observers.offline import (
    FIELDS,
    RATE_UNITS_PER_MIN,
    TIME_UNITS_MS,
    ColumnMapping,
    Trace,
    TraceLayoutError,
    guess_mapping,
    read_trace,
)

NS = "off"
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
MAX_ROWS = 100_000
"""Largest trace the page replays (the command line has no limit)."""
DEFAULT_SAMPLE = "trace-seed-demo.csv"
SAMPLE, UPLOAD = "Sample trace", "Upload a CSV"


def sample_traces(folder: Path = SAMPLE_DIR) -> list[Path]:
    return sorted(folder.glob("*.csv"))


def _mapping_form(columns: tuple[str, ...], data: bytes, name: str, max_batch: float, override: bool) -> Trace | None:
    """Let the user say which column holds what; returns the trace once they apply a mapping that reads."""
    st.markdown("**Map the columns of this file** (its layout is not one the reader knows):")
    guess = guess_mapping(columns)
    options = list(columns)
    none = "(none)"
    cols = st.columns(3)

    choose = "(choose a column)"

    def pick(col: int, label: str, field: str, optional: bool = False) -> str | None:
        choices = [none if optional else choose, *options]
        default = guess.get(field)
        index = choices.index(default) if default in choices else 0
        value = cols[col].selectbox(label, choices, index=index, key=ui.key(NS, f"map_{field}"))
        return None if value in (none, choose) else value

    rpm = pick(0, "Arrival rate column", "rpm")
    rate_unit = cols[0].selectbox("Arrival rate unit", list(RATE_UNITS_PER_MIN), key=ui.key(NS, "map_rate_unit"))
    tokens = pick(0, "Avg output tokens column", "avg_tokens")
    wait = pick(1, "Queue wait column", "wait")
    wait_unit = cols[1].selectbox("Queue wait unit", list(TIME_UNITS_MS), index=1, key=ui.key(NS, "map_wait_unit"))
    itl = pick(1, "Inter-token latency column", "itl")
    itl_unit = cols[1].selectbox("ITL unit", list(TIME_UNITS_MS), index=1, key=ui.key(NS, "map_itl_unit"))
    max_batch_col = pick(2, "Max batch column", "max_batch", optional=True)
    batch = pick(2, "Batch size column", "batch_size", optional=True)
    unset = [label for label, value in (("arrival rate", rpm), ("avg output tokens", tokens), ("queue wait", wait),
                                        ("inter-token latency", itl)) if value is None]
    if unset:
        st.caption(f"Choose a column for: {', '.join(unset)}.")
    if not st.button("Use this mapping", key=ui.key(NS, "map_apply"), type="primary", disabled=bool(unset)):
        return None
    mapping = ColumnMapping(rpm=rpm or "", avg_tokens=tokens or "", wait=wait or "", itl=itl or "",
                            max_batch=max_batch_col, batch_size=batch, wait_unit=wait_unit, itl_unit=itl_unit,
                            rate_unit=rate_unit)
    return read_trace(data, source=name, max_batch=max_batch, override_max_batch=override, mapping=mapping,
                      max_rows=MAX_ROWS)


def _choose_file() -> tuple[str, bytes, str] | None:
    """(identity, bytes, display name) of the chosen file, or None when nothing is chosen."""
    kind = st.radio("Trace", [SAMPLE, UPLOAD], horizontal=True, key=ui.key(NS, "kind"),
                    label_visibility="collapsed")
    if kind == SAMPLE:
        samples = sample_traces()
        if not samples:
            st.warning(f"No sample traces in {SAMPLE_DIR}: run `python sample_data/make_samples.py`.")
            return None
        names = [p.name for p in samples]
        path = st.selectbox("Sample trace (made with the project's simulator, see README)", samples,
                            index=names.index(DEFAULT_SAMPLE) if DEFAULT_SAMPLE in names else 0,
                            format_func=lambda p: p.name, key=ui.key(NS, "sample"))
        return f"sample:{path.name}", path.read_bytes(), path.name
    uploaded = st.file_uploader(
        "CSV trace: the project's layout (rpm, avg_tokens, max_batch, batch_size, wait_ms, itl_ms), the seed's "
        "6 columns without a header, or vLLM's (RPM, tokens, avgConcurrency, maxConcurrency, avgWait [s], avgITL)",
        key=ui.key(NS, "upload"),
    )
    if uploaded is None:
        return None
    return f"upload:{uploaded.file_id}", uploaded.getvalue(), uploaded.name


def _source_panel() -> Trace | None:
    """The file chooser; returns a newly read trace when the choice changed and the file reads."""
    st.subheader("Trace")
    chosen = _choose_file()
    cols = st.columns([1, 1, 2], vertical_alignment="bottom")
    max_batch = cols[0].number_input("Max batch size", min_value=1, max_value=100_000, value=64, step=1,
                                     key=ui.key(NS, "max_batch"),
                                     help="Used when the trace has no max batch column (e.g. vLLM without "
                                          "maxConcurrency)")
    override = cols[1].checkbox("Override the file's column", key=ui.key(NS, "override"))
    if chosen is None:
        return None
    identity, data, name = chosen
    choice = (identity, int(max_batch), override)
    pending = st.session_state.pop(ui.key(NS, "pending"), None)
    if pending is not None:  # a column mapping was applied on the previous pass
        return pending
    seen_key, error_key, layout_key = ui.key(NS, "seen"), ui.key(NS, "error"), ui.key(NS, "layout_columns")
    trace: Trace | None = None
    if st.session_state.get(seen_key) != choice:
        st.session_state[seen_key] = choice
        st.session_state[error_key] = None
        st.session_state[layout_key] = None
        try:
            trace = read_trace(data, source=name, max_batch=float(max_batch), override_max_batch=override,
                               max_rows=MAX_ROWS)
        except TraceLayoutError as exc:
            st.session_state[error_key] = str(exc)
            st.session_state[layout_key] = exc.columns
        except TraceError as exc:
            st.session_state[error_key] = str(exc)
    if st.session_state.get(error_key):
        kept = ui.get_run(NS)
        message = st.session_state[error_key].rstrip(".") + "."
        if kept:
            message += (f" The current run ({kept.source.label}, {kept.cursor} step{'' if kept.cursor == 1 else 's'}) "
                        "is kept.")
        st.error(message)
    columns = st.session_state.get(layout_key)
    if columns:
        try:
            mapped = _mapping_form(columns, data, name, float(max_batch), override)
        except TraceError as exc:
            st.error(str(exc))
            mapped = None
        if mapped is not None:
            st.session_state[layout_key] = None
            st.session_state[error_key] = None
            st.session_state[ui.key(NS, "pending")] = mapped
            st.rerun()
    return trace


def _body() -> None:
    new_config = ui.config_sidebar(NS)
    trace = _source_panel()
    run = ui.get_run(NS)
    if trace is not None:
        run = Run(ui.get_config(NS), TraceSource.create(trace))
        ui.set_run(NS, run)
        st.session_state[ui.key(NS, "summary")] = trace.summary()
        st.session_state[ui.key(NS, "skipped")] = trace.skipped_count
    elif run is not None and new_config is not None:
        run = Run(new_config, run.source)
        ui.set_run(NS, run)
        st.toast("Configuration applied: the run restarted.")
    if run is None:
        st.info("Choose a sample trace or upload a CSV file to start.")
        return
    summary = st.session_state.get(ui.key(NS, "summary"))
    if summary:
        (st.warning if st.session_state.get(ui.key(NS, "skipped")) else st.success)(summary)
    with st.expander("Trace windows"):
        trace_frame = run.source.trace.to_frame()  # type: ignore[attr-defined]
        st.dataframe(trace_frame.head(1000), hide_index=True, width="stretch",
                     column_order=["line", *FIELDS])
        if len(trace_frame) > 1000:
            st.caption(f"First 1,000 of {len(trace_frame):,} windows.")
    ui.run_view(NS, run, "offline-history.csv")


def render(*, title: bool = True) -> None:
    if title:
        st.title("Offline trace")
        st.caption("Replay a recorded trace of measurement windows through the tuner, step by step: the "
                   "prediction made before each update is compared with what the server did next.")
    ui.guarded(_body)
    ui.continue_if_running(NS)
