"""The service's own counters and the Prometheus text exposition of ``GET /metrics``."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass

from tuner.service.fleet import FleetSnapshot

DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class CycleReport:
    """The last cycle, for /healthz."""

    number: int
    finished_s: float
    duration_s: float
    """Fetch, decode, step, save and publish."""
    fetch_s: float
    """Fetch and decode (the source's part)."""
    step_s: float
    """The FilterBank step."""
    save_s: float
    """The SQLite transaction."""
    ok: bool
    stepped: int
    accepted: int
    rejected: int
    skipped: int
    problems: int
    error: str | None


class ServiceMetrics:
    """Thread-safe counters: cycles, their durations, errors by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: Counter[str] = Counter()
        self._cycles = 0
        self._failed = 0
        self._pushes = 0
        self._forgotten = 0
        self._duration_sum_s = 0.0
        self._buckets = [0] * len(DURATION_BUCKETS_S)
        self.last_cycle: CycleReport | None = None
        self._fleet_text: tuple[FleetSnapshot, str] | None = None
        """(a snapshot, its per-server text): rendered once per snapshot."""

    def error(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self._errors[kind] += count

    def forgot(self, count: int) -> None:
        with self._lock:
            self._forgotten += count

    @property
    def forgotten(self) -> int:
        return self._forgotten

    def push(self) -> None:
        with self._lock:
            self._pushes += 1

    def cycle(self, report: CycleReport) -> None:
        with self._lock:
            self._cycles += 1
            self._failed += 0 if report.ok else 1
            self._duration_sum_s += report.duration_s
            for k, le in enumerate(DURATION_BUCKETS_S):
                if report.duration_s <= le:
                    self._buckets[k] += 1
            self.last_cycle = report

    @property
    def cycles(self) -> int:
        return self._cycles

    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def render(self, snap: FleetSnapshot) -> str:
        """Prometheus text format 0.0.4."""
        with self._lock:
            errors = dict(self._errors)
            cycles, failed, pushes, forgotten = self._cycles, self._failed, self._pushes, self._forgotten
            dsum, buckets, last = self._duration_sum_s, list(self._buckets), self.last_cycle
        out: list[str] = []
        add = out.append
        add("# HELP tuner_cycles_total Tuning cycles run (including failed ones).")
        add("# TYPE tuner_cycles_total counter")
        add(f"tuner_cycles_total {cycles}")
        add("# HELP tuner_cycles_failed_total Cycles in which the source gave nothing usable.")
        add("# TYPE tuner_cycles_failed_total counter")
        add(f"tuner_cycles_failed_total {failed}")
        add("# HELP tuner_pushes_total POST /tune requests that stepped at least one server.")
        add("# TYPE tuner_pushes_total counter")
        add(f"tuner_pushes_total {pushes}")
        add("# HELP tuner_cycle_duration_seconds Wall time of a tuning cycle (fetch, step, save).")
        add("# TYPE tuner_cycle_duration_seconds histogram")
        for le, count in zip(DURATION_BUCKETS_S, buckets, strict=True):
            add(f'tuner_cycle_duration_seconds_bucket{{le="{le:g}"}} {count}')
        add(f'tuner_cycle_duration_seconds_bucket{{le="+Inf"}} {cycles}')
        add(f"tuner_cycle_duration_seconds_sum {_num(dsum)}")
        add(f"tuner_cycle_duration_seconds_count {cycles}")
        add("# HELP tuner_last_cycle_duration_seconds Wall time of the last tuning cycle.")
        add("# TYPE tuner_last_cycle_duration_seconds gauge")
        add(f"tuner_last_cycle_duration_seconds {_num(last.duration_s if last else math.nan)}")
        add("# HELP tuner_errors_total Errors by kind (collector_down, bad_server, ...).")
        add("# TYPE tuner_errors_total counter")
        for kind in sorted(errors):
            add(f'tuner_errors_total{{kind="{_label(kind)}"}} {errors[kind]}')
        add("# HELP tuner_servers_forgotten_total Servers dropped after TUNER_FORGET_AFTER seconds without a window.")
        add("# TYPE tuner_servers_forgotten_total counter")
        add(f"tuner_servers_forgotten_total {forgotten}")
        add("# HELP tuner_servers Servers with a filter.")
        add("# TYPE tuner_servers gauge")
        add(f"tuner_servers {len(snap)}")
        out.append(self._per_server(snap))
        return "\n".join(out)

    def _per_server(self, snap: FleetSnapshot) -> str:
        with self._lock:
            cached = self._fleet_text
        if cached is not None and cached[0] is snap:
            return cached[1]
        out: list[str] = []
        add = out.append
        labels = [f'{{server="{_label(n)}"}}' for n in snap.names]
        per_server = (
            ("tuner_alpha_ms", "gauge", "Estimated alpha (ms per decode iteration).", snap.alpha_ms),
            ("tuner_beta_ms", "gauge", "Estimated beta (ms per request in the batch).", snap.beta_ms),
            ("tuner_alpha_std_ms", "gauge", "Standard deviation of alpha.", snap.alpha_std_ms),
            ("tuner_beta_std_ms", "gauge", "Standard deviation of beta.", snap.beta_std_ms),
            ("tuner_nis", "gauge", "Normalized innovation squared of the last step.", snap.nis),
            ("tuner_last_update_timestamp_seconds", "gauge", "Unix time of the last accepted update.", snap.updated_s),
            ("tuner_steps_accepted_total", "counter", "Accepted filter updates.", snap.accepted),
            ("tuner_steps_rejected_total", "counter", "Updates rejected by the NIS gate.", snap.rejected),
            ("tuner_steps_skipped_total", "counter", "Windows skipped as unusable.", snap.skipped),
        )
        for name, kind, help_text, values in per_server:
            add(f"# HELP {name} {help_text}")
            add(f"# TYPE {name} {kind}")
            text = values.astype(str) if values.dtype.kind == "i" else [_num(v) for v in values.tolist()]
            out.extend(f"{name}{lab} {v}" for lab, v in zip(labels, text, strict=True))
        out.append("")
        text = "\n".join(out)
        with self._lock:
            self._fleet_text = (snap, text)
        return text


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


__all__ = ["CONTENT_TYPE", "CycleReport", "ServiceMetrics"]
