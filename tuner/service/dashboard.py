"""The Service page: an operator's view of a running tuner service (``pages/4_Service.py``).

It reads ``GET /healthz`` and ``GET /servers`` of the service at the address typed in
(default from TUNER_HOST/TUNER_PORT) and refreshes on its own with a Streamlit fragment.
A service that is down or answers garbage is reported as a message, never a traceback.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import requests
import streamlit as st

from tuner.dashboard.components import fmt, guarded
from tuner.service.settings import DEFAULT_TUNER_PORT

NS = "service"
REFRESH_CHOICES_S = (2, 5, 10, 30, 0)
TIMEOUT_S = 3.0


def default_url() -> str:
    host = os.environ.get("TUNER_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    port = os.environ.get("TUNER_PORT") or str(DEFAULT_TUNER_PORT)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class ServiceView:
    health: dict[str, Any]
    servers: list[dict[str, Any]]
    fetched_s: float


class ServiceUnavailableError(Exception):
    """The service could not be read; the message is for the operator."""


def fetch(url: str, timeout_s: float = TIMEOUT_S) -> ServiceView:
    base = url.strip().rstrip("/")
    if not base:
        raise ServiceUnavailableError("Enter the address of a tuner service, e.g. http://127.0.0.1:8081.")
    if "://" not in base:
        base = "http://" + base
    try:
        with requests.Session() as session:
            session.trust_env = False
            health = session.get(f"{base}/healthz", timeout=timeout_s)
            servers = session.get(f"{base}/servers", timeout=timeout_s)
    except requests.exceptions.Timeout:
        raise ServiceUnavailableError(f"The tuner service at {base} did not answer within {timeout_s:g} s.") from None
    except requests.exceptions.RequestException as exc:
        raise ServiceUnavailableError(
            f"The tuner service at {base} is not reachable ({type(exc).__name__}). "
            "Is it running? Start it with `python -m tuner.service`."
        ) from None
    for reply in (health, servers):
        if reply.status_code != 200:
            raise ServiceUnavailableError(f"{reply.url} answered HTTP {reply.status_code}: is this a tuner service?")
    try:
        h, s = health.json(), servers.json()
        rows = s["servers"]
        if not isinstance(h, dict) or not isinstance(rows, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ServiceUnavailableError(f"{base} does not answer like a tuner service (/healthz, /servers).") from None
    return ServiceView(h, rows, time.time())


def servers_table(rows: list[dict[str, Any]], now_s: float) -> pd.DataFrame:
    def age(t: Any) -> float | None:
        return None if t is None else max(0.0, now_s - float(t))

    return pd.DataFrame(
        {
            "server": [r.get("server_name") for r in rows],
            "alpha (ms)": [r.get("alpha") for r in rows],
            "σ alpha": [r.get("alpha_std") for r in rows],
            "beta (ms)": [r.get("beta") for r in rows],
            "σ beta": [r.get("beta_std") for r in rows],
            "NIS": [r.get("nis") for r in rows],
            "updated (s ago)": [age(r.get("updated")) for r in rows],
            "accepted": [r.get("accepted") for r in rows],
            "rejected": [r.get("rejected") for r in rows],
            "skipped": [r.get("skipped") for r in rows],
            "last reason": [r.get("last_reason") or "" for r in rows],
        }
    )


def _summary(view: ServiceView) -> None:
    h = view.health
    last = h.get("last_cycle") or {}
    cols = st.columns(5)
    cols[0].metric("Status", str(h.get("status", "?")))
    cols[1].metric("Servers", f"{h.get('servers', len(view.servers))}")
    cols[2].metric("Cycles", f"{h.get('cycles', 0)}")
    duration = last.get("duration_s")
    cols[3].metric("Last cycle", "—" if duration is None else f"{1000 * duration:.0f} ms")
    errors = h.get("errors") or {}
    cols[4].metric("Errors", f"{sum(errors.values())}")
    source = h.get("source") or "none (push only)"
    st.caption(
        f"Source: {source} · period {fmt(h.get('period_s'))} s · state {h.get('state') or 'in memory'} · "
        f"read at {time.strftime('%H:%M:%S', time.localtime(view.fetched_s))}"
    )
    if last.get("error"):
        st.warning(f"Last cycle: {last['error']}")
    if errors:
        st.caption("Errors by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))


def _view(url: str) -> None:
    try:
        view = fetch(url)
    except ServiceUnavailableError as exc:
        st.error(str(exc))
        return
    _summary(view)
    if not view.servers:
        st.info("The service has no servers yet: one is added at its first usable window (collector or POST /tune).")
        return
    query = st.session_state.get(f"{NS}.filter", "")
    rows = [r for r in view.servers if query.lower() in str(r.get("server_name", "")).lower()]
    st.dataframe(
        servers_table(rows, view.fetched_s),
        hide_index=True,
        width="stretch",
        column_config={
            "alpha (ms)": st.column_config.NumberColumn(format="%.4g"),
            "σ alpha": st.column_config.NumberColumn(format="%.3g"),
            "beta (ms)": st.column_config.NumberColumn(format="%.4g"),
            "σ beta": st.column_config.NumberColumn(format="%.3g"),
            "NIS": st.column_config.NumberColumn(format="%.3g"),
            "updated (s ago)": st.column_config.NumberColumn(format="%.1f"),
        },
    )
    st.caption(f"{len(rows)} of {len(view.servers)} servers")


def _body() -> None:
    left, middle, right = st.columns([3, 1, 2])
    url = left.text_input("Tuner service address", value=default_url(), key=f"{NS}.url")
    refresh = middle.selectbox(
        "Refresh every",
        REFRESH_CHOICES_S,
        index=1,
        format_func=lambda s: "never" if s == 0 else f"{s} s",
        key=f"{NS}.refresh",
    )
    right.text_input("Filter servers", key=f"{NS}.filter", placeholder="part of a server name")
    fragment = st.fragment(run_every=refresh or None)(lambda: guarded(lambda: _view(url)))
    fragment()


def render(*, title: bool = True) -> None:
    if title:
        st.title("Service")
        st.caption(
            "A running tuner service (`python -m tuner.service`): every server it tunes, its alpha and beta estimates "
            "with their standard deviations, the last NIS and the steps accepted, rejected and skipped."
        )
    guarded(_body)
