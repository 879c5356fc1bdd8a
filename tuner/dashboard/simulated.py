"""The Simulated page: the tuner against the simulated observer, step by step."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from tuner.dashboard import components as ui
from tuner.dashboard.run import SIMULATORS, Run, SimulatedSource
from tuner.errors import ScenarioError
from tuner.scenario import KEYS, Scenario, parse_scenario, seed_scenario

NS = "sim"
COLUMNS = KEYS
"""The phase table's columns: exactly the scenario keys."""


def scenario_table(scenario: Scenario) -> pd.DataFrame:
    """One row per phase; ``rpm`` as text so a cycled load reads ``20, 30, 40``."""
    rows = []
    for phase in scenario.phases:
        rows.append({
            "steps": phase.steps,
            "rpm": ", ".join(f"{r:g}" for r in phase.rpm),
            "avg_tokens": phase.avg_tokens,
            "max_batch": phase.max_batch,
            "alpha": phase.alpha,
            "beta": phase.beta,
            "noise": phase.noise,
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _cell(value: Any, where: str) -> Any:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if missing or (isinstance(value, str) and not value.strip()):
        raise ScenarioError(f"{where} is empty")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ScenarioError(f"{where} must be a number, got {value!r}") from None
    number = float(value)
    return int(number) if number == int(number) else number


def scenario_from_table(table: pd.DataFrame) -> Scenario:
    """Parse the edited phase table (raises ScenarioError naming the row and column)."""
    if table.empty:
        raise ScenarioError("the scenario needs at least one phase")
    phases = []
    for i, row in enumerate(table.to_dict("records")):
        phase: dict[str, Any] = {}
        for column in COLUMNS:
            where = f"phase {i + 1}, column {column}"
            value = row.get(column)
            if column == "rpm":
                parts = [p for p in str(value if value is not None else "").replace(";", ",").split(",") if p.strip()]
                if not parts or (isinstance(value, float) and math.isnan(value)):
                    raise ScenarioError(f"{where} is empty")
                numbers = [_cell(p.strip(), where) for p in parts]
                phase["rpm"] = numbers if len(numbers) > 1 else numbers[0]
            else:
                phase[column] = _cell(value, where)
        phases.append(phase)
    return parse_scenario({"phases": phases}, "scenario table")


def _apply(scenario: Scenario, seed: int, simulator: str | None = None) -> None:
    simulator = simulator or st.session_state.get(ui.key(NS, "simulator"), "analytic")
    config = ui.get_config(NS)
    ui.set_run(NS, Run(config, SimulatedSource.create(scenario, seed, simulator)))
    st.session_state[ui.key(NS, "scenario")] = scenario
    st.session_state[ui.key(NS, "seed")] = seed
    st.session_state[ui.key(NS, "simulator")] = simulator


def _scenario_editor() -> None:
    applied: Scenario = st.session_state[ui.key(NS, "scenario")]
    version_key = ui.key(NS, "editor_version")
    version = st.session_state.setdefault(version_key, 0)
    with st.expander("Scenario: phases of constant load and true parameters", expanded=False):
        st.caption("One row per phase: steps, rpm (requests/min; a list such as `20, 30, 40` cycles step by step), "
                   "avg output tokens, max batch, true alpha and beta (ms), noise (fraction: 0.05 is ±5 % uniform "
                   "multiplicative noise on both observations). Add or delete rows at the table's edge.")
        table = st.data_editor(
            scenario_table(applied),
            key=ui.key(NS, f"editor_{version}"),
            num_rows="dynamic",
            width="stretch",
            column_config={
                "steps": st.column_config.NumberColumn("steps", min_value=1, step=1),
                "rpm": st.column_config.TextColumn("rpm"),
                "avg_tokens": st.column_config.NumberColumn("avg_tokens", min_value=0.0),
                "max_batch": st.column_config.NumberColumn("max_batch", min_value=1, step=1),
                "alpha": st.column_config.NumberColumn("alpha (ms)", min_value=0.0, format="%.4g"),
                "beta": st.column_config.NumberColumn("beta (ms)", min_value=0.0, format="%.4g"),
                "noise": st.column_config.NumberColumn("noise", min_value=0.0, max_value=0.99, format="%.3g"),
            },
        )
        simulator = st.radio(
            "Simulator", SIMULATORS, horizontal=True, key=ui.key(NS, "simulator_input"),
            index=SIMULATORS.index(st.session_state.get(ui.key(NS, "simulator"), "analytic")),
            help="analytic: the queue's steady state plus the phase's uniform noise. discrete-event: a simulated "
                 "continuous-batching server (Poisson arrivals, geometric output lengths, one-minute windows): "
                 "realistic noise and model mismatch; the phase's noise is not used.",
        )
        cols = st.columns([1, 1, 1], vertical_alignment="bottom")
        seed = cols[0].number_input("Random seed", min_value=0, max_value=2**32 - 1, step=1,
                                    value=int(st.session_state[ui.key(NS, "seed")]), key=ui.key(NS, "seed_input"))
        problem = None
        try:
            edited = scenario_from_table(table)
        except ScenarioError as exc:
            problem, edited = str(exc), None
        if problem:
            st.error(problem, icon="⚠️")
        changed = edited is not None and (
            edited != applied
            or int(seed) != st.session_state[ui.key(NS, "seed")]
            or simulator != st.session_state.get(ui.key(NS, "simulator"), "analytic")
        )
        if cols[1].button("Apply scenario and seed", key=ui.key(NS, "apply_scenario"),
                          disabled=problem is not None or not changed, help="Restarts the run"):
            _apply(edited, int(seed), simulator)
            st.rerun()
        if cols[2].button("Seed's 3-phase demo", key=ui.key(NS, "demo")):
            _apply(seed_scenario(), 0, "analytic")
            st.session_state[version_key] = version + 1
            st.rerun()
        if changed:
            st.info("Edited: press Apply to restart the run with this scenario, seed and simulator.")
        up, down = st.columns(2)
        uploaded = up.file_uploader("Load a scenario file (YAML)", type=["yaml", "yml", "json"],
                                    key=ui.key(NS, "scenario_upload"))
        seen_key = ui.key(NS, "scenario_upload_seen")
        if uploaded is not None and st.session_state.get(seen_key) != uploaded.file_id:
            st.session_state[seen_key] = uploaded.file_id
            try:
                data = yaml.safe_load(uploaded.getvalue().decode("utf-8-sig"))
                scenario = parse_scenario(data, uploaded.name)
            except (UnicodeDecodeError, yaml.YAMLError):
                st.session_state[ui.key(NS, "scenario_error")] = f"{uploaded.name}: not a YAML file"
            except ScenarioError as exc:
                st.session_state[ui.key(NS, "scenario_error")] = str(exc)
            else:
                st.session_state[ui.key(NS, "scenario_error")] = None
                _apply(scenario, int(st.session_state[ui.key(NS, "seed")]))
                st.session_state[version_key] = version + 1
                st.rerun()
        if uploaded is None:
            st.session_state[seen_key] = None
            st.session_state[ui.key(NS, "scenario_error")] = None
        if st.session_state.get(ui.key(NS, "scenario_error")):
            up.error(f"Scenario not loaded: {st.session_state[ui.key(NS, 'scenario_error')]}")
        down.download_button("Download the scenario (YAML)", data=yaml.safe_dump(applied.to_mapping(), sort_keys=False),
                             file_name="scenario.yaml", mime="application/x-yaml", key=ui.key(NS, "scenario_download"),
                             on_click="ignore")


def _body() -> None:
    if ui.key(NS, "scenario") not in st.session_state:
        st.session_state[ui.key(NS, "scenario")] = seed_scenario()
        st.session_state[ui.key(NS, "seed")] = 0
    new_config = ui.config_sidebar(NS)
    run = ui.get_run(NS)
    if run is None:
        _apply(st.session_state[ui.key(NS, "scenario")], int(st.session_state[ui.key(NS, "seed")]))
        run = ui.get_run(NS)
    elif new_config is not None:
        ui.set_run(NS, Run(new_config, run.source))
        run = ui.get_run(NS)
        st.toast("Configuration applied: the run restarted.")
    _scenario_editor()
    assert run is not None
    if st.session_state.get(ui.key(NS, "simulator")) == "discrete-event" and not run.config.rate_window_minutes > 0:
        st.info("The discrete-event server counts each window's requests over one minute, so the rate the tuner "
                "sees is off by a Poisson count (±17 % at 35 rpm). Set `\"rateWindowMinutes\": 1` under filterData "
                "(and an errorLevel such as [0.5, 0.05]: one window's wait is a poor sample of the steady state) "
                "to carry that into the filter; without it the estimates chase every miscount.")
    ui.run_view(NS, run, "simulated-history.csv")


def render(*, title: bool = True) -> None:
    """Draw the Simulated page (``title=False`` when embedded under another heading)."""
    if title:
        st.title("Simulated")
        st.caption("The tuner against the project's simulated server: the analytic queue plus uniform "
                   "multiplicative noise, with true alpha and beta known, so you can watch it converge.")
    ui.guarded(_body)
    ui.continue_if_running(NS)
