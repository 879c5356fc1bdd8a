"""SQLite persistence of the fleet: every server's filter state, saved in one transaction.

Layout (the arrays are whole columns, one entry per server, in row order)::

    servers(row INTEGER PRIMARY KEY, name TEXT UNIQUE)       -- renumbered only when servers are forgotten
    arrays(name TEXT PRIMARY KEY, dtype, shape, data BLOB)   -- e.g. "bank.u", "fleet.updated_s"
    meta(key TEXT PRIMARY KEY, value TEXT)                   -- cycle count, configuration

Storing columns keeps a save of 10,000 servers to a handful of statements and does not
depend on which arrays the filter bank's snapshot holds (the set may grow). The
database is in WAL mode: a transaction that committed survives the process being
killed (SIGKILL) at any point; one that did not is rolled back on the next open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import TunerError


class StoreError(TunerError):
    """The state file cannot be opened or read."""


@dataclass(frozen=True)
class Saved:
    names: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    meta: dict[str, str]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (row INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS arrays (name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._saved_rows = int(self._db.execute("SELECT COUNT(*) FROM servers").fetchone()[0])
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the state database: {exc}") from None
        self._lock = threading.Lock()

    def load(self) -> Saved | None:
        """What the last committed save holds, or None for a new database."""
        with self._lock:
            try:
                names = [r[0] for r in self._db.execute("SELECT name FROM servers ORDER BY row")]
                rows = [r[0] for r in self._db.execute("SELECT row FROM servers ORDER BY row")]
                arrays = {}
                for name, dtype, shape, data in self._db.execute("SELECT name, dtype, shape, data FROM arrays"):
                    arrays[name] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(json.loads(shape)).copy()
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            except (sqlite3.Error, ValueError, TypeError) as exc:
                raise StoreError(f"{self.path}: the state database is unreadable: {exc}") from None
        if not names and not arrays:
            return None
        if rows != list(range(len(rows))):
            raise StoreError(f"{self.path}: server rows are not 0..{len(rows) - 1}")
        for key, value in arrays.items():
            if value.shape[:1] != (len(names),):
                raise StoreError(f"{self.path}: array {key} has {value.shape[0]} entries for {len(names)} servers")
        return Saved(tuple(names), arrays, meta)

    def save(
        self, names: Sequence[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, str], *, renumber: bool = False
    ) -> None:
        """Replace the saved state with this one, in one transaction (all or nothing).

        Servers are appended to the saved rows; ``renumber`` (after servers were removed)
        rewrites the whole list instead.
        """
        with self._lock:
            start = 0 if renumber else self._saved_rows
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if renumber:
                    self._db.execute("DELETE FROM servers")
                if len(names) > start:
                    self._db.executemany(
                        "INSERT INTO servers(row, name) VALUES (?, ?)",
                        ((i, names[i]) for i in range(start, len(names))),
                    )
                self._db.executemany(
                    "INSERT OR REPLACE INTO arrays(name, dtype, shape, data) VALUES (?, ?, ?, ?)",
                    (
                        (key, a.dtype.str, json.dumps(list(a.shape)), np.ascontiguousarray(a).tobytes())
                        for key, a in arrays.items()
                    ),
                )
                self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta.items())
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._saved_rows = len(names)

    def close(self) -> None:
        with self._lock:
            self._db.close()
