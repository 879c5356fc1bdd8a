"""What one measurement window says about a server: its load and its latencies."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Environment:
    """One measurement window of one server, or of many (then every field is an array).

    The first four fields are the operating point the model needs; ``wait_ms`` and
    ``itl_ms`` are the observed latencies the filter compares with the model.
    """

    rpm: Any
    """Arrival rate, requests per minute."""
    avg_tokens: Any
    """Average output tokens per request."""
    max_batch: Any
    """Max batch size B of the server (max-num-seqs)."""
    batch_size: Any = math.nan
    """Observed average batch size (informative only; the model predicts its own)."""
    wait_ms: Any = math.nan
    """Observed average queue wait, ms."""
    itl_ms: Any = math.nan
    """Observed average inter-token latency, ms."""

    def invalid_reason(self) -> str | None:
        """Why a scalar window cannot be used for a step, or None when it can."""
        return self.invalid_reasons()[0]

    def invalid_reasons(self) -> list[str | None]:
        """Per entry (arrays) or for the one window (scalars): why it cannot be used, or None."""
        values = [getattr(self, f.name) for f in fields(self)]
        if all(isinstance(v, (int, float)) for v in values):  # one window: no arrays needed
            row = {f.name: float(v) for f, v in zip(fields(self), values, strict=True)}
            return [_reason(row) if _unusable(row) else None]
        cols = {f.name: np.atleast_1d(np.asarray(getattr(self, f.name), dtype=float)) for f in fields(self)}
        size = max(v.size for v in cols.values())
        cols = {k: np.broadcast_to(v, (size,)) for k, v in cols.items()}
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(cols["rpm"]) | (cols["rpm"] <= 0)
            bad |= ~np.isfinite(cols["avg_tokens"]) | (cols["avg_tokens"] <= 0)
            bad |= ~np.isfinite(cols["max_batch"]) | (cols["max_batch"] < 1)
            bad |= ~np.isfinite(cols["wait_ms"]) | (cols["wait_ms"] < 0)
            bad |= ~np.isfinite(cols["itl_ms"]) | (cols["itl_ms"] <= 0)
        reasons: list[str | None] = [None] * size
        for i in np.flatnonzero(bad):
            reasons[i] = _reason({k: float(v[i]) for k, v in cols.items()})
        return reasons

    def observed(self) -> np.ndarray:
        """The observation vector z = [wait_ms, itl_ms] (last axis)."""
        return np.stack([np.asarray(self.wait_ms, float), np.asarray(self.itl_ms, float)], axis=-1)

    @staticmethod
    def stack(windows: list[Environment]) -> Environment:
        """Many scalar windows as one window of arrays (one entry per server)."""
        return Environment(
            **{f.name: np.array([float(getattr(w, f.name)) for w in windows]) for f in fields(Environment)}
        )

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def _unusable(row: dict[str, float]) -> bool:
    finite = all(math.isfinite(row[k]) for k in ("rpm", "avg_tokens", "max_batch", "wait_ms", "itl_ms"))
    return not (
        finite
        and row["rpm"] > 0
        and row["avg_tokens"] > 0
        and row["max_batch"] >= 1
        and row["wait_ms"] >= 0
        and row["itl_ms"] > 0
    )


def _reason(row: dict[str, float]) -> str:
    for name in ("rpm", "avg_tokens", "max_batch", "wait_ms", "itl_ms"):
        if not math.isfinite(row[name]):
            return f"{name} is {row[name]}"
    if row["rpm"] <= 0:
        return f"rpm is {row['rpm']:g}: no arrivals in the window"
    if row["avg_tokens"] <= 0:
        return f"avg_tokens is {row['avg_tokens']:g}, must be positive"
    if row["max_batch"] < 1:
        return f"max_batch is {row['max_batch']:g}, must be at least 1"
    if row["wait_ms"] < 0:
        return f"observed wait_ms is {row['wait_ms']:g}, must not be negative"
    return f"observed itl_ms is {row['itl_ms']:g}, must be positive"
