"""The history of a tuner's steps, as a table: append-only, exported as a DataFrame or CSV.

Pure: no I/O and no user interface. One row per :class:`~tuner.tuner.StepRecord`, with
the state, its standard deviations and covariances, the observation and the prediction
made before the step's update (``<observation>_observed`` / ``<observation>_predicted``),
NIS, the outcome (``status`` is ``accepted``, ``rejected`` or ``skipped``) and whatever
extra columns the caller passes (the operating point, true values of a simulation, the
line of a trace).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from tuner.tuner import StepRecord

STATUSES = ("accepted", "rejected", "skipped")


def status_of(record: StepRecord) -> str:
    """``accepted``, ``rejected`` (the NIS gate) or ``skipped`` (no usable observation)."""
    if record.accepted:
        return "accepted"
    if record.predicted is None or (record.reason or "").startswith("skipped"):
        return "skipped"
    return "rejected"


def record_row(record: StepRecord, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One flat history row for a step record."""
    row: dict[str, Any] = {"step": record.step}
    names = record.state_names
    for i, name in enumerate(names):
        row[name] = record.state[i]
        row[f"{name}_std"] = record.std[i]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            row[f"cov_{names[i]}_{names[j]}"] = record.covariance[i][j]
    for i, name in enumerate(record.observation_names):
        row[f"{name}_observed"] = record.observed[i] if record.observed is not None else math.nan
        row[f"{name}_predicted"] = record.predicted[i] if record.predicted is not None else math.nan
    row["nis"] = record.nis if record.nis is not None else math.nan
    row["accepted"] = record.accepted
    row["status"] = status_of(record)
    row["reason"] = record.reason or ""
    row["inflation"] = record.inflation
    if extra:
        row.update(extra)
    return row


class History:
    """Append-only table of steps. :meth:`frame` converts only the rows added since its last call."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, record: StepRecord, extra: Mapping[str, Any] | None = None) -> None:
        self._rows.append(record_row(record, extra))

    def extend(self, records: list[tuple[StepRecord, Mapping[str, Any] | None]]) -> None:
        for record, extra in records:
            self.append(record, extra)

    @property
    def last(self) -> dict[str, Any] | None:
        """The latest row (a copy), or None when empty."""
        return dict(self._rows[-1]) if self._rows else None

    def frame(self) -> pd.DataFrame:
        """All steps as a DataFrame (a copy is not made: treat it as read-only)."""
        done = 0 if self._frame is None else len(self._frame)
        if done < len(self._rows):
            new = pd.DataFrame.from_records(self._rows[done:])
            if self._frame is None or self._frame.empty:
                self._frame = new
            else:
                self._frame = pd.concat([self._frame, new], ignore_index=True)
        if self._frame is None:
            return pd.DataFrame()
        return self._frame

    def to_csv(self) -> str:
        """The whole history as CSV text (one row per step, ``\\n`` line ends)."""
        frame = self.frame()
        if frame.empty:
            return ""
        return frame.to_csv(index=False, lineterminator="\n")
