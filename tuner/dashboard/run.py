"""A tuner run over a finite source of windows: the object a dashboard page keeps in its session.

Pure (no Streamlit): a :class:`Run` owns one :class:`~tuner.tuner.Tuner`, one
:class:`~tuner.history.History` and a cursor into its :class:`WindowSource`. Stepping
appends to the history; nothing is ever recomputed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tuner.config import FilterConfig
from tuner.emulator.simulation import simulate_windows
from tuner.environment import Environment
from tuner.errors import ScenarioError
from tuner.history import History
from tuner.observers.offline import Trace
from tuner.observers.simulated import SimulatedWindow, simulate
from tuner.scenario import Scenario
from tuner.tuner import StepRecord, Tuner

MAX_SIMULATED_STEPS = 100_000
"""Longest scenario a page precomputes."""


class WindowSource(Protocol):
    """A finite, indexable sequence of windows."""

    label: str

    def __len__(self) -> int: ...

    def window(self, index: int) -> tuple[Environment, Mapping[str, Any]]:
        """The environment of window ``index`` and the extra history columns it brings."""
        ...


def _operating_point(env: Environment) -> dict[str, float]:
    return {
        "rpm": float(env.rpm),
        "avg_tokens": float(env.avg_tokens),
        "max_batch": float(env.max_batch),
        "batch_size": float(env.batch_size),
    }


SIMULATORS = ("analytic", "discrete-event")
"""analytic: the queue's steady state plus uniform noise; discrete-event: a simulated
continuous-batching server, one-minute windows (realistic noise and model mismatch)."""


@dataclass(frozen=True)
class SimulatedSource:
    """The windows of a scenario, drawn once from ``numpy.random.default_rng(seed)``."""

    scenario: Scenario
    seed: int
    windows: tuple[SimulatedWindow, ...]
    label: str = "simulation"
    simulator: str = "analytic"

    @classmethod
    def create(cls, scenario: Scenario, seed: int, simulator: str = "analytic") -> SimulatedSource:
        if scenario.total_steps > MAX_SIMULATED_STEPS:
            raise ScenarioError(f"the scenario has {scenario.total_steps:,} steps; the dashboard runs at most "
                                f"{MAX_SIMULATED_STEPS:,} (use `python -m tuner simulate`)")
        rng = np.random.default_rng(seed)
        if simulator == "discrete-event":
            windows = tuple(simulate_windows(scenario, rng))
        elif simulator == "analytic":
            windows = tuple(simulate(scenario, rng))
        else:
            raise ScenarioError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
        label = f"{simulator} scenario of {len(windows)} steps, seed {seed}"
        return cls(scenario, seed, windows, label, simulator)

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, index: int) -> tuple[Environment, Mapping[str, Any]]:
        w = self.windows[index]
        extra = {**_operating_point(w.env), "phase": w.phase + 1, "true_alpha": w.true_alpha,
                 "true_beta": w.true_beta, "saturated": w.saturated}
        return w.env, extra


@dataclass(frozen=True)
class TraceSource:
    """The usable windows of a parsed CSV trace."""

    trace: Trace
    label: str

    @classmethod
    def create(cls, trace: Trace) -> TraceSource:
        return cls(trace, trace.source)

    def __len__(self) -> int:
        return len(self.trace)

    def window(self, index: int) -> tuple[Environment, Mapping[str, Any]]:
        env = self.trace.environment(index)
        return env, {**_operating_point(env), "line": int(self.trace.line[index])}


class Run:
    """One tuner stepping through one source."""

    def __init__(self, config: FilterConfig, source: WindowSource) -> None:
        self.config = config
        self.source = source
        self.tuner = Tuner(config)
        self.history = History()

    @property
    def cursor(self) -> int:
        """Windows consumed so far (= steps in the history)."""
        return len(self.history)

    @property
    def total(self) -> int:
        return len(self.source)

    @property
    def done(self) -> bool:
        return self.cursor >= self.total

    def step(self, count: int = 1, *, budget_s: float | None = None) -> list[StepRecord]:
        """Step up to ``count`` windows (fewer at the end of the source, or when ``budget_s`` seconds
        have passed); returns the records."""
        records: list[StepRecord] = []
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        for _ in range(max(0, min(count, self.total - self.cursor))):
            env, extra = self.source.window(self.cursor)
            record = self.tuner.step(env)
            self.history.append(record, extra)
            records.append(record)
            if deadline is not None and time.perf_counter() >= deadline:
                break
        return records

    def reset(self) -> None:
        """Back to the initial state with an empty history (the source is kept)."""
        self.tuner = Tuner(self.config)
        self.history = History()


def latest_estimate(run: Run) -> dict[str, Any]:
    """One row for the latest-estimate table: step, each state entry with its σ, last NIS and outcome."""
    last = run.history.last
    names: Sequence[str] = run.tuner.model.state_names
    row: dict[str, Any] = {"step": run.cursor}
    if last is None:
        values = dict(zip(names, run.tuner.state.tolist(), strict=True))
        stds = dict(zip(names, run.tuner.std.tolist(), strict=True))
    else:
        values = {n: float(last[n]) for n in names}
        stds = {n: float(last[f"{n}_std"]) for n in names}
    for n in names:
        row[f"{n} (ms)"] = values[n]
        row[f"σ {n} (ms)"] = stds[n]
        row[f"σ {n} (%)"] = 100.0 * stds[n] / values[n] if values[n] else float("nan")
    row["last NIS"] = float(last["nis"]) if last is not None else float("nan")
    row["last step"] = (last["status"] + (f": {last['reason']}" if last["reason"] else "")) if last else "—"
    return row
