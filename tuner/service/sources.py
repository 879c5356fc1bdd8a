"""Where the tuning loop gets its windows: a source's ``fetch()`` returns :class:`Readings`.

A source raises :class:`SourceError` (with a ``kind`` for the error counters) when the
whole fetch failed; problems with single servers go into ``Readings.problems`` and
the other servers are still tuned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tuner.environment import Environment
from tuner.errors import ObserverError


class SourceError(ObserverError):
    """A fetch failed as a whole; ``kind`` names the failure for /metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Readings:
    """One window per server, as columns: ``env`` holds arrays with one entry per name."""

    names: tuple[str, ...]
    env: Environment
    problems: Mapping[str, str] = field(default_factory=dict)
    """Servers whose entry could not be read at all, with the reason (they are not stepped)."""

    def __len__(self) -> int:
        return len(self.names)

    @staticmethod
    def from_environments(envs: Mapping[str, Environment], problems: Mapping[str, str] | None = None) -> Readings:
        names = tuple(envs)
        env = Environment.stack([envs[n] for n in names]) if names else Environment(*(np.empty(0) for _ in range(6)))
        return Readings(names, env, dict(problems or {}))


class Source(Protocol):
    """Anything with a blocking ``fetch()``; the service calls it from a worker thread."""

    description: str

    def fetch(self) -> Readings: ...

    def close(self) -> None: ...


class PrometheusSource:
    """Windows of every server Prometheus knows, through :class:`tuner.observers.prometheus.PrometheusObserver`.

    Five grouped queries per cycle whatever the number of servers. Unusable windows
    (no traffic, a missing series) come back as NaN fields: the fleet skips them and
    the server keeps its state.
    """

    def __init__(self, **settings: object) -> None:
        from tuner.observers.prometheus import PrometheusObserver, PrometheusSettings

        self._observer = PrometheusObserver(PrometheusSettings.from_env(**settings))
        self.description = f"prometheus {self._observer.settings.address}"

    def fetch(self) -> Readings:
        try:
            scrape = self._observer.scrape()
        except ObserverError as exc:
            raise SourceError("prometheus", str(exc)) from None
        return Readings.from_environments(scrape.environments())

    def close(self) -> None:
        self._observer.close()
