"""Online mode: the tuner against a Prometheus that scrapes vLLM servers (one filter per server).

Layout for an operator's screen: connection status and the selected server's latest α, β,
σ large at the top, the plots below, the table of every server at the bottom; the
connection form and the tuner configuration live in the sidebar. A fragment re-runs every
N seconds and steps every server's filter on the fresh window (tuner.online.OnlineTuner:
this page holds no math and no error handling of its own beyond showing messages).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from tuner.config import config_to_json, load_config
from tuner.dashboard.components import CHART_CONFIG, config_sidebar, fmt, get_config, guarded
from tuner.dashboard.figures import all_figures
from tuner.errors import TunerError
from tuner.observers.prometheus import (
    PrometheusObserver,
    PrometheusSettings,
    duration_seconds,
    parse_query_templates,
)
from tuner.online import OnlineTuner

NS = "online"
TUNER, REFRESH, RUNNING, LAST, SERVER, STEP_NOW, AUTOCONNECT = (
    f"{NS}.{k}" for k in ("tuner", "refresh_s", "running", "last_cycle", "server", "step_now", "autoconnect")
)
FORM_DEFAULTS: dict[str, Any] = {
    "address": os.environ.get("PROMETHEUS_ADDRESS", "http://localhost:9090"),
    "namespace": "platform-opt",
    "model": "opt-125",
    "window": "1m",
    "max_batch": 256,
    "label": "pod",
    "refresh": 60.0,
    "scale": 1.0,
}
# The form for the README's local demo: the emulator at --speedup 10 scraped by sample_data/prometheus.yml.
LOCAL_DEMO: dict[str, Any] = {"address": "http://localhost:9090", "window": "30s", "max_batch": 64, "refresh": 5.0,
                              "scale": 10.0}  # fmt: skip
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "sample_data" / "config-emulator.json"

st.set_page_config(page_title="Online · model-tuner", layout="wide")


def _use_local_demo() -> None:
    """Fill the form for the README's local demo, take its tuner configuration and connect."""
    for name, value in LOCAL_DEMO.items():
        st.session_state[f"{NS}.{name}"] = value
    config = load_config(DEMO_CONFIG)
    st.session_state[f"{NS}.config"] = config
    st.session_state[f"{NS}.config_text"] = config_to_json(config)
    st.session_state[AUTOCONNECT] = True


def _step_now() -> None:
    st.session_state[STEP_NOW] = True


def _connection_form() -> None:
    """The sidebar form; Connect builds a new OnlineTuner (previous histories are dropped)."""
    side = st.sidebar
    side.header("Prometheus connection")
    for name, value in FORM_DEFAULTS.items():
        st.session_state.setdefault(f"{NS}.{name}", value)
    with side.form(f"{NS}.connect"):
        address = st.text_input("Prometheus address", key=f"{NS}.address")
        token = st.text_input("Bearer token", type="password", key=f"{NS}.token",
                              help="Sent as 'Authorization: Bearer …'. Empty: $TOKEN if set, else none.")
        namespace = st.text_input("Namespace", key=f"{NS}.namespace", help="Empty: any namespace.")
        model = st.text_input("Model name (regex)", key=f"{NS}.model")
        window = st.text_input("Query window", key=f"{NS}.window",
                               help="Prometheus duration: 15s, 1m. The tuner steps once per fresh window.")
        max_batch = st.number_input("Max batch size", min_value=1, step=1, key=f"{NS}.max_batch")
        label = st.text_input("Server label", key=f"{NS}.label")
        refresh = st.number_input("Refresh every (s)", min_value=1.0, step=1.0, key=f"{NS}.refresh")
        with st.expander("Emulator and query templates"):
            scale = st.number_input("Time scale (emulator --speedup)", min_value=0.001, key=f"{NS}.scale",
                                    help="Emulated seconds per real second; 1 for real servers.")  # fmt: skip
            templates = st.file_uploader("PromQL templates (YAML/JSON, optional)", type=["yaml", "yml", "json"],
                                         key=f"{NS}.queries",
                                         help="measurement → template with $label, $selector, $window; "
                                              "see the README (Online mode)")  # fmt: skip
        connect = st.form_submit_button("Connect", type="primary", width="stretch")
    side.button("Use the local emulator demo", key=f"{NS}.demo", width="stretch", on_click=_use_local_demo,
                help="Fills the form for the README's two-command local demo, loads "
                     "sample_data/config-emulator.json and connects.")  # fmt: skip
    if connect or st.session_state.pop(AUTOCONNECT, False):
        queries = None
        if templates is not None:
            try:
                text = templates.getvalue().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise TunerError(f"{templates.name}: not a text file") from None
            queries = parse_query_templates(text, templates.name)
        settings = PrometheusSettings(
            address=address,
            token=token or os.environ.get("TOKEN") or None,
            namespace=namespace.strip(),
            model=model.strip(),
            window=window.strip(),
            max_batch=int(max_batch),
            server_label=label.strip(),
            time_scale=float(scale),
            **({"queries": queries} if queries else {}),
        )
        st.session_state[TUNER] = OnlineTuner(PrometheusObserver(settings), get_config(NS))
        st.session_state[REFRESH] = float(refresh)
        st.session_state[RUNNING] = True
        st.session_state[LAST] = 0.0
    online: OnlineTuner | None = st.session_state.get(TUNER)
    if online is not None:
        running = st.session_state.get(RUNNING, False)
        if side.button("Pause auto-refresh" if running else "Resume auto-refresh", key=f"{NS}.pause", width="stretch"):
            st.session_state[RUNNING] = not running
        side.button("Step now", key=f"{NS}.step_now_button", width="stretch", on_click=_step_now)


def _step_every_s(online: OnlineTuner) -> float:
    """Seconds between steps: the refresh period, but never less than the query window, so that
    each step sees a fresh window (overlapping windows would count the same requests twice)."""
    return max(st.session_state.get(REFRESH, 60.0), duration_seconds(online.observer.settings.window))


def _maybe_cycle(online: OnlineTuner) -> None:
    """One cycle on Step now, or when a fresh window is due (so other reruns do not step twice)."""
    now = time.monotonic()
    due = now - st.session_state.get(LAST, 0.0) >= 0.9 * _step_every_s(online)
    if st.session_state.pop(STEP_NOW, False) or ((st.session_state.get(RUNNING) or online.cycles == 0) and due):
        st.session_state[LAST] = now
        online.cycle()


def _status(online: OnlineTuner) -> None:
    cycle = online.last
    where = online.observer.settings.address
    if cycle is None:
        st.info(f"Connected to {where}: waiting for the first window.")
    elif cycle.ok:
        at = time.strftime("%H:%M:%S", time.localtime(cycle.time_s))
        st.success(f"Prometheus {where} · cycle {online.cycles} at {at} · {cycle.status}")
    else:
        st.error(f"Prometheus {where} · cycle {online.cycles}: {cycle.status}")
    paused = "" if st.session_state.get(RUNNING) else " · auto-refresh paused"
    st.caption(f"Refresh every {st.session_state.get(REFRESH, 60.0):g} s · a step per fresh "
               f"{online.observer.settings.window} window (every {_step_every_s(online):g} s) · "
               f"{len(online.servers)} server(s) · {online.failures} failed cycle(s){paused}")  # fmt: skip


def _headline(online: OnlineTuner, server: str) -> None:
    last: dict[str, Any] = online.histories[server].last or {}
    cols = st.columns(4)
    nan = math.nan
    cols[0].metric("alpha (ms)", fmt(last.get("alpha", nan)), help="Decode iteration time at batch 0")
    cols[1].metric("beta (ms / request)", fmt(last.get("beta", nan)), help="Extra iteration time per running request")
    cols[2].metric("σ alpha / σ beta (ms)", f"{fmt(last.get('alpha_std', nan))} / {fmt(last.get('beta_std', nan))}")
    status = last.get("status", "—")
    cols[3].metric("last step", status, help=last.get("reason") or None)
    if last.get("reason"):
        st.caption(f"{server}: {last['reason']}")


def _view() -> None:
    online: OnlineTuner | None = st.session_state.get(TUNER)
    if online is None:
        st.info("Fill in the connection form in the sidebar and press Connect. To try it locally, see the README: "
                "`python -m tuner.emulator` and a local Prometheus.")  # fmt: skip
        return
    _maybe_cycle(online)
    _status(online)
    servers = online.servers
    if not servers:
        return
    if st.session_state.get(SERVER) not in servers:
        st.session_state[SERVER] = servers[0]
    server = st.selectbox("Server", servers, key=SERVER)
    _headline(online, server)
    history = online.histories[server].frame()
    figures = all_figures(history, online.config.nis_gate)
    names = list(figures)
    for start in range(0, len(names), 2):
        cols = st.columns(2)
        for col, name in zip(cols, names[start:start + 2], strict=False):
            col.plotly_chart(figures[name], key=f"{NS}.chart_{name}", config=CHART_CONFIG)
    st.subheader("All servers")
    st.dataframe(pd.DataFrame(online.summary()), hide_index=True, width="stretch")
    st.download_button(f"Download {server}'s history (CSV)", data=online.histories[server].to_csv(),
                       file_name=f"online-{server}.csv", mime="text/csv", key=f"{NS}.download",
                       on_click="ignore")  # fmt: skip


def _page() -> None:
    st.title("Online · Prometheus")
    try:
        _connection_form()
    except TunerError as exc:
        st.sidebar.error(f"Not connected: {exc}")
    new_config = config_sidebar(NS)
    online: OnlineTuner | None = st.session_state.get(TUNER)
    if new_config is not None and online is not None:
        st.session_state[TUNER] = OnlineTuner(online.observer, new_config)  # restart the filters with it
        st.session_state[LAST] = 0.0
    every = st.session_state.get(REFRESH, 60.0) if st.session_state.get(RUNNING) else None
    st.fragment(run_every=every)(lambda: guarded(_view))()


_page()
