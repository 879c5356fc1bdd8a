"""Online tuning: one filter per server, stepped on each fresh Prometheus window.

Shared by ``python -m tuner online`` and the Online page, so that neither holds any math
or error handling of its own. A cycle that fails as a whole (Prometheus down, 401/403,
timeout, malformed reply) steps nothing: every filter keeps its state and the cycle's
``status`` says why. A server whose window is unusable (no traffic, a missing series) is
stepped as a skipped step with the observer's reason; its filter keeps its state too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

from tuner.config import FilterConfig
from tuner.errors import ObserverError
from tuner.history import History
from tuner.observers.prometheus import PrometheusObserver, ServerWindow
from tuner.tuner import StepRecord, Tuner


@dataclass(frozen=True)
class Cycle:
    """What one cycle did."""

    time_s: float
    ok: bool
    """False when the cycle failed as a whole (nothing was stepped)."""
    status: str
    """One line for an operator: how many servers were updated, or why nothing was."""
    records: dict[str, StepRecord]
    windows: dict[str, ServerWindow]

    def rows(self) -> list[dict[str, Any]]:
        """The jsonl rows of this cycle: the replay layout plus ``server``, ``time`` and the operating point."""
        out = []
        for server, record in self.records.items():
            env = self.windows[server].env
            row = {**record.to_dict(), "server": server, "time": self.time_s}
            row.update({k: _finite(getattr(env, k)) for k in ("rpm", "avg_tokens", "max_batch", "batch_size")})
            out.append(row)
        return out


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class OnlineTuner:
    """One :class:`~tuner.tuner.Tuner` per server seen, a :class:`~tuner.history.History` each."""

    def __init__(self, observer: PrometheusObserver, config: FilterConfig) -> None:
        self.observer = observer
        self.config = config
        self.tuners: dict[str, Tuner] = {}
        self.histories: dict[str, History] = {}
        self.last: Cycle | None = None
        self.cycles = 0
        self.failures = 0

    @property
    def servers(self) -> list[str]:
        return sorted(self.tuners)

    def cycle(self, at_s: float | None = None) -> Cycle:
        """Query Prometheus once and step every server's filter with its window."""
        self.cycles += 1
        try:
            scrape = self.observer.scrape(at_s)
        except ObserverError as exc:
            self.failures += 1
            when = time.time() if at_s is None else at_s
            self.last = Cycle(when, False, f"skipped, estimates kept: {exc}", {}, {})
            return self.last
        records: dict[str, StepRecord] = {}
        for window in scrape.windows:
            tuner = self.tuners.get(window.server)
            if tuner is None:
                tuner = self.tuners[window.server] = Tuner(self.config)
                self.histories[window.server] = History()
            record = tuner.step(window.env)
            if window.reason and not record.accepted:
                record = replace(record, reason=f"skipped: {window.reason}")
            records[window.server] = record
            env = window.env
            self.histories[window.server].append(
                record,
                {"time": scrape.time_s, "rpm": float(env.rpm), "avg_tokens": float(env.avg_tokens),
                 "max_batch": float(env.max_batch), "batch_size": float(env.batch_size)},
            )  # fmt: skip
        updated = sum(r.accepted for r in records.values())
        status = f"ok: {updated} of {len(records)} server(s) updated from {scrape.queries_sent} queries"
        self.last = Cycle(scrape.time_s, True, status, records, {w.server: w for w in scrape.windows})
        return self.last

    def summary(self) -> list[dict[str, Any]]:
        """One row per server: latest α, β, σ, last outcome (for the all-servers table)."""
        rows = []
        for server in self.servers:
            last = self.histories[server].last or {}
            rows.append(
                {
                    "server": server,
                    "alpha (ms)": last.get("alpha"),
                    "alpha σ (ms)": last.get("alpha_std"),
                    "beta (ms)": last.get("beta"),
                    "beta σ (ms)": last.get("beta_std"),
                    "rpm": last.get("rpm"),
                    "steps": len(self.histories[server]),
                    "status": last.get("status"),
                    "reason": last.get("reason") or "",
                }
            )
        return rows
