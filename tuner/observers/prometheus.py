"""Online observer: measurement windows of many vLLM servers from a Prometheus server.

One grouped instant query per measurement (``… by (<server label>)``) returns every
server at once, so a cycle costs five queries whether Prometheus sees one server or a
thousand. The entry point for other components is :class:`PrometheusObserver`::

    observer = PrometheusObserver(PrometheusSettings.from_env())
    envs = observer.environments()          # {server name: Environment}
    scrape = observer.scrape()              # the same, with per-server reasons and raw figures

Failures of the whole cycle (Prometheus down, 401/403, timeout, a malformed reply, a
rejected query) raise :class:`~tuner.errors.ObserverError` with a message meant for an
operator; the caller skips the step and the tuner keeps its state. A server whose window
cannot be used (no traffic, NaN, a missing series) is still returned, with NaN in the
missing fields and a ``reason`` on its :class:`ServerWindow`.

The bearer token is never logged, echoed, put in a URL or in a repr.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from string import Template
from typing import Any

import requests
import yaml

from tuner.environment import Environment
from tuner.errors import ObserverError
from tuner.textfile import read_text

MEASUREMENTS = ("rpm", "avg_tokens", "batch_size", "wait_ms", "itl_ms")
"""The five figures of a window, in the order they are queried."""
REQUIRED = ("rpm", "avg_tokens", "wait_ms", "itl_ms")
"""The figures a step needs (the batch size is informative only)."""

DEFAULT_QUERIES: Mapping[str, str] = {
    "rpm": "sum by ($label) (rate(vllm:request_success_total{$selector}[$window])) * 60",
    "avg_tokens": (
        "sum by ($label) (rate(vllm:generation_tokens_total{$selector}[$window]))"
        " / sum by ($label) (rate(vllm:request_success_total{$selector}[$window]))"
    ),
    "batch_size": "sum by ($label) (avg_over_time(vllm:num_requests_running{$selector}[$window]))",
    "wait_ms": (
        "sum by ($label) (rate(vllm:request_queue_time_seconds_sum{$selector}[$window]))"
        " / sum by ($label) (rate(vllm:request_queue_time_seconds_count{$selector}[$window])) * 1000"
    ),
    # vLLM 0.11 renamed time_per_output_token to inter_token_latency (and later removed the old
    # name): `or` falls back, per server, to the old name when the new one has no series.
    "itl_ms": (
        "(sum by ($label) (rate(vllm:inter_token_latency_seconds_sum{$selector}[$window]))"
        " / sum by ($label) (rate(vllm:inter_token_latency_seconds_count{$selector}[$window])) * 1000)"
        " or (sum by ($label) (rate(vllm:time_per_output_token_seconds_sum{$selector}[$window]))"
        " / sum by ($label) (rate(vllm:time_per_output_token_seconds_count{$selector}[$window])) * 1000)"
    ),
}
"""PromQL templates; ``$label``, ``$selector`` and ``$window`` are substituted (string.Template)."""

_UNITS = {
    "rpm": "requests/min",
    "avg_tokens": "tokens/request",
    "batch_size": "requests",
    "wait_ms": "ms",
    "itl_ms": "ms",
}


def _promql_string(text: str) -> str:
    """Escape text for a double-quoted PromQL string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class PrometheusSettings:
    """Where Prometheus is and what to ask it. Every field has a page/CLI input."""

    address: str
    """Base URL of Prometheus, e.g. ``http://prometheus:9090`` (a path prefix is kept)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token sent as ``Authorization: Bearer …``; None or empty sends no header."""
    namespace: str = "platform-opt"
    """Value of the ``namespace`` label; empty: any namespace."""
    model: str = "opt-125"
    """Regular expression searched in the ``model_name`` label (``opt-125`` matches ``facebook/opt-125m``)."""
    window: str = "1m"
    """Range of rate()/avg_over_time(), a Prometheus duration (``15s``, ``1m``, ``5m``)."""
    max_batch: int = 256
    """Max batch size of the servers (vLLM's max-num-seqs); Prometheus does not report it."""
    server_label: str = "pod"
    """Label whose values name the servers."""
    timeout_s: float = 10.0
    """Timeout of each HTTP query."""
    time_scale: float = 1.0
    """Emulated seconds per real second. 1 for real servers; the emulator's ``--speedup`` for it, so that
    the request rate comes out per emulated minute (latency ratios need no correction)."""
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    """PromQL templates per measurement (see :data:`DEFAULT_QUERIES`)."""

    @staticmethod
    def from_env(**overrides: Any) -> PrometheusSettings:
        """Settings from ``PROMETHEUS_ADDRESS`` and ``TOKEN``; keyword arguments override them."""
        values: dict[str, Any] = {
            "address": os.environ.get("PROMETHEUS_ADDRESS", "http://localhost:9090"),
            "token": os.environ.get("TOKEN") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return PrometheusSettings(**values)

    def validated(self) -> PrometheusSettings:
        """A copy with a normalized address; ObserverError naming the field when one is unusable."""
        address = self.address.strip().rstrip("/")
        if not address:
            raise ObserverError("the Prometheus address is empty")
        if "://" not in address:
            address = "http://" + address
        if not address.startswith(("http://", "https://")):
            raise ObserverError(f"the Prometheus address must start with http:// or https://, got {address!r}")
        if "@" in address.split("://", 1)[1].split("/", 1)[0]:
            raise ObserverError("put credentials in the token field, not in the Prometheus address")
        if not _valid_duration(self.window):
            raise ObserverError(f"window must be a Prometheus duration such as 15s, 1m or 5m, got {self.window!r}")
        if isinstance(self.max_batch, bool) or int(self.max_batch) != self.max_batch or self.max_batch < 1:
            raise ObserverError(f"max batch must be a whole number of at least 1, got {self.max_batch!r}")
        if not self.server_label.replace("_", "a").isalnum() or self.server_label[0].isdigit():
            raise ObserverError(f"server label must be a Prometheus label name such as pod, got {self.server_label!r}")
        if not (self.timeout_s > 0 and self.time_scale > 0):
            raise ObserverError("timeout and time scale must be positive")
        unknown = set(self.queries) - set(MEASUREMENTS)
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ObserverError(f"unknown query name(s) {names}; names are {', '.join(MEASUREMENTS)}")
        queries = {**DEFAULT_QUERIES, **self.queries}
        return replace(self, address=address, queries=queries, max_batch=int(self.max_batch))

    def selector(self) -> str:
        """The label matchers shared by every query."""
        parts = []
        if self.namespace:
            parts.append(f'namespace="{_promql_string(self.namespace)}"')
        if self.model:
            parts.append(f'model_name=~".*(?:{_promql_string(self.model)}).*"')
        return ", ".join(parts)

    def promql(self) -> dict[str, str]:
        """The five queries this cycle sends, with every placeholder filled in."""
        subst = {"label": self.server_label, "selector": self.selector(), "window": self.window}
        out = {}
        for name in MEASUREMENTS:
            template = {**DEFAULT_QUERIES, **self.queries}[name]
            try:
                out[name] = Template(template).substitute(subst)
            except (KeyError, ValueError) as exc:
                raise ObserverError(
                    f"query template {name}: bad placeholder {exc}; use $label, $selector, $window"
                ) from None
        return out


def _valid_duration(text: str) -> bool:
    return bool(re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", text or ""))


_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration such as ``1m30s`` (ObserverError when it is not one)."""
    if not _valid_duration(text):
        raise ObserverError(f"window must be a Prometheus duration such as 15s, 1m or 5m, got {text!r}")
    return sum(int(n) * _DURATION_UNITS_S[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def load_query_templates(path: str | Path) -> dict[str, str]:
    """Query templates from a YAML/JSON file: see :func:`parse_query_templates`."""
    return parse_query_templates(read_text(path, ObserverError), str(path))


def parse_query_templates(text: str, source: str = "query templates") -> dict[str, str]:
    """A mapping of measurement → PromQL template, at the top level or under ``prometheus: queries:``
    (YAML or JSON text); ObserverError naming ``source`` when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ObserverError(f"{source}: not valid YAML") from None
    if isinstance(data, Mapping) and isinstance(data.get("prometheus"), Mapping):
        data = data["prometheus"].get("queries", {})
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise ObserverError(f"{source}: expected a mapping of measurement name to PromQL template")
    unknown = set(data) - set(MEASUREMENTS)
    if unknown:
        raise ObserverError(f"{source}: unknown query name(s) {', '.join(sorted(map(str, unknown)))}")
    return dict(data)


@dataclass(frozen=True)
class ServerWindow:
    """One server's window. ``env`` always exists; its fields are NaN where a figure is missing."""

    server: str
    env: Environment
    reason: str | None
    """Why the window cannot be used for a step (no traffic, a missing series), or None."""

    @property
    def usable(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Scrape:
    """The result of one cycle: every server's window at one evaluation time."""

    time_s: float
    """Prometheus evaluation time, Unix seconds."""
    windows: tuple[ServerWindow, ...]
    """One per server, sorted by server name."""
    queries_sent: int

    def environments(self) -> dict[str, Environment]:
        return {w.server: w.env for w in self.windows}

    def window(self, server: str) -> ServerWindow | None:
        return next((w for w in self.windows if w.server == server), None)

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(w.server for w in self.windows)


class PrometheusObserver:
    """Queries Prometheus for the windows of every matching server (see the module docstring)."""

    def __init__(self, settings: PrometheusSettings, session: requests.Session | None = None) -> None:
        self.settings = settings.validated()
        self._session = session or requests.Session()
        self._queries = self.settings.promql()

    def __repr__(self) -> str:
        return f"PrometheusObserver(address={self.settings.address!r})"

    @property
    def queries(self) -> dict[str, str]:
        return dict(self._queries)

    def close(self) -> None:
        self._session.close()

    def environments(self, at_s: float | None = None) -> dict[str, Environment]:
        """Every server's window as ``{server name: Environment}`` — the tuner service's entry point.

        Unusable windows come back with NaN fields, which the tuner skips with a reason
        (state unchanged). Raises ObserverError when the cycle fails as a whole.
        """
        return self.scrape(at_s).environments()

    def scrape(self, at_s: float | None = None) -> Scrape:
        """Run the five grouped queries (at ``at_s``, Unix seconds, or now) and assemble the windows."""
        when = time.time() if at_s is None else float(at_s)
        values: dict[str, dict[str, float]] = {}
        for name in MEASUREMENTS:
            values[name] = self._query(name, when)
        servers = sorted(set().union(*(v.keys() for v in values.values())))
        if not servers:
            raise ObserverError(
                f"no series match: no server with namespace={self.settings.namespace!r} and a model_name matching "
                f"{self.settings.model!r} reported vllm:request_success_total in the last {self.settings.window}"
            )
        scale = self.settings.time_scale
        windows = []
        for server in servers:
            fig = {name: values[name].get(server, math.nan) for name in MEASUREMENTS}
            env = Environment(
                rpm=fig["rpm"] / scale,
                avg_tokens=fig["avg_tokens"],
                max_batch=float(self.settings.max_batch),
                batch_size=fig["batch_size"],
                wait_ms=fig["wait_ms"],
                itl_ms=fig["itl_ms"],
            )
            windows.append(ServerWindow(server, env, _window_reason(server, values, env, self.settings.window)))
        return Scrape(time_s=when, windows=tuple(windows), queries_sent=len(MEASUREMENTS))

    # --- HTTP --------------------------------------------------------------------------
    def _query(self, name: str, when: float) -> dict[str, float]:
        s = self.settings
        url = f"{s.address}/api/v1/query"
        headers = {"Accept": "application/json"}
        if s.token:
            headers["Authorization"] = f"Bearer {s.token}"
        try:
            reply = self._session.get(
                url, params={"query": self._queries[name], "time": f"{when:.3f}"}, headers=headers, timeout=s.timeout_s
            )
        except requests.exceptions.Timeout:
            raise ObserverError(f"Prometheus at {s.address} did not answer within {s.timeout_s:g} s") from None
        except requests.exceptions.SSLError:
            raise ObserverError(f"Prometheus at {s.address}: TLS handshake failed (certificate?)") from None
        except requests.exceptions.ConnectionError:
            raise ObserverError(
                f"Prometheus at {s.address} is not reachable (connection refused or no route)"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise ObserverError(f"Prometheus at {s.address}: request failed ({type(exc).__name__})") from None
        if reply.status_code in (401, 403):
            what = "rejected the token" if s.token else "requires a token and none was given"
            raise ObserverError(f"Prometheus at {s.address} {what} (HTTP {reply.status_code})")
        try:
            body = reply.json()
        except ValueError:
            body = None
        if reply.status_code != 200:
            detail = body.get("error") if isinstance(body, dict) else None
            detail = f": {str(detail)[:300]}" if detail else ""
            raise ObserverError(
                f"Prometheus at {s.address} answered HTTP {reply.status_code} to the {name} query{detail}"
            )
        return _parse_vector(body, name, s.server_label, s.address)


def _parse_vector(body: Any, name: str, label: str, address: str) -> dict[str, float]:
    """{server: value} from an instant-vector reply; ObserverError when the reply is not one."""
    bad = f"Prometheus at {address} sent a malformed reply to the {name} query"
    if not isinstance(body, dict):
        raise ObserverError(f"{bad} (not JSON)")
    if body.get("status") != "success":
        raise ObserverError(f"Prometheus at {address} failed the {name} query: {str(body.get('error', body))[:300]}")
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise ObserverError(f"{bad} (no data.result)")
    if data.get("resultType") != "vector":
        raise ObserverError(f"{bad} (result type {data.get('resultType')!r}, expected vector)")
    out: dict[str, float] = {}
    for item in data["result"]:
        try:
            metric, (_, text) = item["metric"], item["value"]
            value = float(text)
        except (KeyError, TypeError, ValueError):
            raise ObserverError(f"{bad} (a sample is not [time, value])") from None
        server = metric.get(label) if isinstance(metric, dict) else None
        if server is None:
            raise ObserverError(
                f"the {name} query returned a series without the server label {label!r}: group it by {label}"
            )
        out[str(server)] = value
    return out


def _window_reason(server: str, values: dict[str, dict[str, float]], env: Environment, window: str) -> str | None:
    missing = [n for n in REQUIRED if server not in values[n]]
    if missing:
        return f"no series for {', '.join(missing)} in the last {window}"
    rpm = float(env.rpm)
    if math.isfinite(rpm) and rpm <= 0:
        return f"no request completed in the last {window}"
    for name in REQUIRED:
        value = float(getattr(env, name))
        if not math.isfinite(value):
            return f"{name} is {value} ({_UNITS[name]}): no traffic in the last {window}?"
    return env.invalid_reason()
