"""The fleet: one filter per server in a single :class:`FilterBank`, and the snapshots readers see.

Writers (the tuning loop, ``POST /tune``) call :meth:`Fleet.step` from a worker
thread; they are serialized by a lock. After every step the fleet builds a new,
immutable :class:`FleetSnapshot` (read-only arrays, a name → row mapping that is
never mutated once published) and swaps one reference to it. Readers take that
reference once and read everything from it, so alpha and beta always come from the
same cycle, and they never wait for a writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tuner.config import FilterConfig
from tuner.environment import Environment
from tuner.service.sources import Readings
from tuner.service.store import Saved, Store
from tuner.tuner import FilterBank

log = logging.getLogger("tuner.service")

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

_META_ARRAYS = ("updated_s", "seen_s", "nis")
"""Per-server figures the fleet keeps beside the bank (saved as "fleet.<name>")."""


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class FleetSnapshot:
    """Every server's estimate after one update; never changes once published."""

    version: int
    """How many updates (cycles and pushes) the fleet has taken since it first started."""
    published_s: float
    names: tuple[str, ...]
    index: Mapping[str, int]
    alpha_ms: Floats
    beta_ms: Floats
    alpha_std_ms: Floats
    beta_std_ms: Floats
    updated_s: Floats
    """Unix time of the last accepted update per server (NaN: none yet)."""
    seen_s: Floats
    """Unix time of the last window received per server."""
    nis: Floats
    """NIS of the last step that produced one (NaN: none yet)."""
    steps: Ints
    accepted: Ints
    rejected: Ints
    skipped: Ints
    last_reason: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.names)

    def row(self, name: str) -> int | None:
        return self.index.get(name)

    def server(self, i: int) -> dict[str, Any]:
        """Row ``i`` as JSON-ready values (NaN → None)."""
        return {
            "server_name": self.names[i],
            "alpha": float(self.alpha_ms[i]),
            "beta": float(self.beta_ms[i]),
            "alpha_std": float(self.alpha_std_ms[i]),
            "beta_std": float(self.beta_std_ms[i]),
            "updated": _finite(self.updated_s[i]),
            "seen": _finite(self.seen_s[i]),
            "nis": _finite(self.nis[i]),
            "steps": int(self.steps[i]),
            "accepted": int(self.accepted[i]),
            "rejected": int(self.rejected[i]),
            "skipped": int(self.skipped[i]),
            "last_reason": self.last_reason[i],
        }


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class StepOutcome:
    """What one :meth:`Fleet.step` did."""

    stepped: int
    accepted: int
    rejected: int
    skipped: int
    added: tuple[str, ...]
    problems: Mapping[str, str]
    """Servers whose entry could not be read (not stepped)."""
    results: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Per stepped server: accepted, reason, nis (filled for pushes)."""
    persisted: bool = True
    persist_error: str | None = None
    step_s: float = 0.0
    """Wall time of the FilterBank step."""
    not_added: Mapping[str, str] = field(default_factory=dict)
    """New servers whose first window is unusable (no traffic, NaN): added once a window is usable."""
    forgotten: tuple[str, ...] = ()
    """Servers dropped because no window came for them in ``forget_after_s``."""
    save_s: float = 0.0
    """Wall time of the SQLite save."""


def _take(env: Environment, idx: NDArray[np.int64]) -> Environment:
    return dataclasses.replace(
        env, **{f.name: np.asarray(getattr(env, f.name), dtype=float)[idx] for f in dataclasses.fields(env)}
    )


class Fleet:
    def __init__(
        self,
        config: FilterConfig,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        forget_after_s: float = 0.0,
    ) -> None:
        """``forget_after_s``: drop a server (its filter, its saved state) once no window came
        for it in that many seconds, checked at every step; 0 keeps every server forever."""
        self.config = config
        self._store = store
        self._clock = clock
        self.forget_after_s = forget_after_s
        self._renumber = False  # servers were dropped since the last successful save
        self._lock = threading.Lock()
        self._bank = FilterBank(config, size=0)
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._meta: dict[str, Floats] = {k: np.empty(0) for k in _META_ARRAYS}
        self._reasons: list[str | None] = []
        self._version = 0
        self._config_json = json.dumps(config.to_mapping(), sort_keys=True)
        self.current: FleetSnapshot = self._build_snapshot()

    # --- persistence -------------------------------------------------------------
    def load(self) -> int:
        """Restore the saved fleet (if any); returns the number of servers restored."""
        if self._store is None:
            return 0
        saved = self._store.load()
        if saved is None:
            return 0
        with self._lock:
            self._restore(saved)
            self.current = self._build_snapshot()
        return len(self._names)

    def _restore(self, saved: Saved) -> None:
        if saved.meta.get("config") not in (None, self._config_json):
            log.warning("the saved state was tuned with another configuration; continuing from the saved estimates")
        n = len(saved.names)
        self._bank.add(n)
        snap = self._bank.snapshot(slice(None))
        for key, fresh in snap.items():
            stored = saved.arrays.get(f"bank.{key}")
            if stored is not None and stored.shape == fresh.shape:
                snap[key] = stored.astype(fresh.dtype, copy=False)
            else:
                log.warning("the saved state has no usable %r; those servers start it afresh", key)
        self._bank.restore(slice(None), snap)
        for key in _META_ARRAYS:
            stored = saved.arrays.get(f"fleet.{key}")
            self._meta[key] = (
                stored.astype(float) if stored is not None and stored.shape == (n,) else np.full(n, np.nan)
            )
        self._names = list(saved.names)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._reasons = [None] * n
        self._version = int(saved.meta.get("version", "0"))
        # A server restored without a time it was last seen counts as seen now (not forgotten at once).
        seen = self._meta["seen_s"]
        seen[~np.isfinite(seen)] = self._clock()

    def _save(self) -> None:
        assert self._store is not None
        arrays = {f"bank.{k}": v for k, v in self._bank.snapshot(slice(None)).items()}
        arrays.update({f"fleet.{k}": v for k, v in self._meta.items()})
        meta = {"version": str(self._version), "config": self._config_json, "saved_s": repr(self._clock())}
        self._store.save(self._names, arrays, meta, renumber=self._renumber)
        self._renumber = False

    # --- stepping ----------------------------------------------------------------
    def step(self, readings: Readings, *, detail: bool = False) -> StepOutcome:
        """One vectorized step of every server in ``readings``, then save and publish.

        Blocking (numpy and SQLite): call it from a worker thread.
        """
        with self._lock:
            return self._step(readings, detail)

    def _step(self, readings: Readings, detail: bool) -> StepOutcome:
        now = self._clock()
        problems = dict(readings.problems)
        not_added: dict[str, str] = {}
        reasons = readings.env.invalid_reasons() if len(readings) else []
        rows: list[int] = []
        picks: list[int] = []
        added: list[str] = []
        for j, name in enumerate(readings.names):
            i = self._index.get(name)
            if i is None:
                if reasons[j] is not None:
                    not_added[name] = str(reasons[j])
                    continue
                i = len(self._names) + len(added)
                added.append(name)
            rows.append(i)
            picks.append(j)
        if added:
            self._bank.add(len(added))
            self._names.extend(added)
            self._index = {**self._index, **{n: len(self._index) + k for k, n in enumerate(added)}}
            for key in _META_ARRAYS:
                self._meta[key] = np.concatenate([self._meta[key], np.full(len(added), np.nan)])
            self._reasons.extend([None] * len(added))
        results: dict[str, dict[str, Any]] = {}
        n_acc = n_rej = n_skip = 0
        step_s = save_s = 0.0
        if rows:
            r = np.asarray(rows, dtype=np.int64)
            p = np.asarray(picks, dtype=np.int64)
            env = readings.env if p.size == len(readings) else _take(readings.env, p)
            started = time.perf_counter()
            res = self._bank.step(env, r)
            step_s = time.perf_counter() - started
            self._meta["seen_s"][r] = now
            self._meta["updated_s"][r[res.accepted]] = now
            has_nis = np.isfinite(res.nis)
            self._meta["nis"][r[has_nis]] = res.nis[has_nis]
            for i, reason in zip(rows, res.reasons, strict=True):
                self._reasons[i] = reason
            n_acc = int(res.accepted.sum())
            n_skip = sum(1 for k, reason in enumerate(res.reasons) if reason and reason.startswith("skipped"))
            n_rej = len(rows) - n_acc - n_skip
            if detail:
                for k, i in enumerate(rows):
                    results[self._names[i]] = {
                        "accepted": bool(res.accepted[k]),
                        "reason": res.reasons[k],
                        "nis": _finite(res.nis[k]),
                    }
        forgotten = self._forget(now)
        self._version += 1
        persisted, error = True, None
        if self._store is not None:
            started = time.perf_counter()
            try:
                self._save()
            except Exception as exc:  # the state stays in memory; the next save writes it all
                persisted, error = False, f"{type(exc).__name__}: {exc}"
                log.error("saving the state failed: %s", error)
            save_s = time.perf_counter() - started
        snapshot = self._build_snapshot()
        self.current = snapshot
        if detail:
            for name, out in results.items():
                out.update(snapshot.server(snapshot.index[name]))
        return StepOutcome(
            stepped=len(rows),
            accepted=n_acc,
            rejected=n_rej,
            skipped=n_skip,
            added=tuple(added),
            problems=problems,
            results=results,
            persisted=persisted,
            persist_error=error,
            step_s=step_s,
            save_s=save_s,
            not_added=not_added,
            forgotten=forgotten,
        )

    def _forget(self, now: float) -> tuple[str, ...]:
        """Drop the servers not seen for ``forget_after_s`` (rows of the others move up, in order)."""
        if not self.forget_after_s > 0 or not self._names:
            return ()
        keep = ~(self._meta["seen_s"] < now - self.forget_after_s)  # NaN (never seen) is kept
        if keep.all():
            return ()
        gone = tuple(n for n, k in zip(self._names, keep, strict=True) if not k)
        self._bank.keep(keep)
        for key in _META_ARRAYS:
            self._meta[key] = self._meta[key][keep]
        self._names = [n for n, k in zip(self._names, keep, strict=True) if k]
        self._reasons = [r for r, k in zip(self._reasons, keep, strict=True) if k]
        self._index = {name: i for i, name in enumerate(self._names)}  # a new mapping: snapshots keep theirs
        self._renumber = True
        log.info("forgot %d server(s) not seen for %g s: %s", len(gone), self.forget_after_s, ", ".join(gone[:10]))
        return gone

    def _build_snapshot(self) -> FleetSnapshot:
        state = self._bank.state
        std = self._bank.std
        return FleetSnapshot(
            version=self._version,
            published_s=self._clock(),
            names=tuple(self._names),
            index=MappingProxyType(self._index),  # replaced, never mutated, when servers are added
            alpha_ms=_frozen(state[:, 0]),
            beta_ms=_frozen(state[:, 1]),
            alpha_std_ms=_frozen(std[:, 0]),
            beta_std_ms=_frozen(std[:, 1]),
            updated_s=_frozen(self._meta["updated_s"]),
            seen_s=_frozen(self._meta["seen_s"]),
            nis=_frozen(self._meta["nis"]),
            steps=_frozen(self._bank.steps),
            accepted=_frozen(self._bank.accepted_count),
            rejected=_frozen(self._bank.rejected_count),
            skipped=_frozen(self._bank.skipped_count),
            last_reason=tuple(self._reasons),
        )

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
