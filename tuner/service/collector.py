"""The collector's ``GET /getenv`` reply (also the body of ``POST /tune``) and a client for it.

The reply is a JSON object mapping each server name to its window, with the Go field
names of the reference collector::

    {"server-1": {"Lambda": 35.2, "AvgTokensPerRequest": 1024, "MaxBatchSize": 48,
                  "BatchSize": 20.1, "AvgQueueTime": 12.5, "AvgTokenTime": 19.3}}

``Lambda`` is requests per minute, the two times are in ms. ``BatchSize`` is
informative (the model predicts its own) and may be missing; the other five are required.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np

from tuner.environment import Environment
from tuner.service.sources import Readings, SourceError

FIELDS = (
    ("Lambda", "rpm"),
    ("AvgTokensPerRequest", "avg_tokens"),
    ("MaxBatchSize", "max_batch"),
    ("BatchSize", "batch_size"),
    ("AvgQueueTime", "wait_ms"),
    ("AvgTokenTime", "itl_ms"),
)
OPTIONAL = frozenset({"BatchSize"})
MAX_NAME_LENGTH = 253


def _value(entry: Mapping[str, Any], key: str) -> float | str:
    """The number under ``key``, or a string saying what is wrong."""
    if key not in entry or entry[key] is None:
        return math.nan if key in OPTIONAL else f"{key} is missing"
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key} must be a number, got {value!r:.40}"
    return float(value)


def parse_environments(payload: Any) -> Readings:
    """Columns of the servers in a /getenv-shaped object; malformed entries go to ``problems``.

    Raises SourceError("garbage", …) when the payload is not a JSON object at all.
    Numeric but unusable values (rpm 0, negative times, NaN) are kept: the filter skips
    them with a reason.
    """
    if not isinstance(payload, Mapping):
        raise SourceError("garbage", f"expected a JSON object of servers, got {type(payload).__name__}")
    names: list[str] = []
    columns: list[list[float]] = [[] for _ in FIELDS]
    problems: dict[str, str] = {}
    numbers = (int, float)  # exact types: bool is not a number here
    for name, entry in payload.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            problems[str(name)[:MAX_NAME_LENGTH]] = "server name must be a non-empty string of at most 253 characters"
            continue
        if not isinstance(entry, Mapping):
            problems[name] = f"expected an object of measurements, got {type(entry).__name__}"
            continue
        values: list[float | str] = [entry.get(key) for key, _ in FIELDS]  # type: ignore[misc]
        if not all(type(v) in numbers for v in values):  # the slow path says what is wrong
            values = [_value(entry, key) for key, _ in FIELDS]
            errors = [v for v in values if isinstance(v, str)]
            if errors:
                problems[name] = "; ".join(errors)
                continue
        names.append(name)
        for column, v in zip(columns, values, strict=True):
            column.append(v)  # type: ignore[arg-type]
    env = Environment(**{attr: np.asarray(col, dtype=float) for (_, attr), col in zip(FIELDS, columns, strict=True)})
    return Readings(tuple(names), env, problems)


def decode(body: bytes) -> Any:
    """JSON of a reply. A top-level object is decoded entry by entry: one ``json.loads`` of a
    10,000-server reply would hold the GIL for tens of ms in one piece, stalling the readers."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError("garbage", f"not UTF-8 text: {exc}") from None
    start = _skip_ws(text, 0)
    try:
        if text.startswith("{", start):
            return _decode_object(text, start)
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SourceError("garbage", f"not JSON: {exc}") from None


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\n\r":
        i += 1
    return i


def _decode_object(text: str, i: int) -> dict[str, Any]:
    """``text[i:]`` is ``{...}`` and nothing else: decode it one member at a time."""
    scan = json.JSONDecoder().raw_decode
    out: dict[str, Any] = {}
    i = _skip_ws(text, i + 1)
    if text.startswith("}", i):
        i += 1
    else:
        while True:
            if not text.startswith('"', i):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
            key, i = scan(text, i)
            i = _skip_ws(text, i)
            if not text.startswith(":", i):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            value, i = scan(text, _skip_ws(text, i + 1))
            out[key] = value
            i = _skip_ws(text, i)
            if text.startswith(",", i):
                i = _skip_ws(text, i + 1)
            elif text.startswith("}", i):
                i += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    if _skip_ws(text, i) != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return out


class CollectorSource:
    """Polls ``GET http://COLLECTOR_HOST:COLLECTOR_PORT/getenv``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.description = f"collector {url}"
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), trust_env=False)

    def fetch(self) -> Readings:
        try:
            reply = self._client.get(self.url)
        except httpx.TimeoutException as exc:
            raise SourceError("collector_timeout", f"{self.url}: no reply in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise SourceError("collector_down", f"{self.url}: {type(exc).__name__}: {exc}") from None
        if reply.status_code != 200:
            raise SourceError("collector_http", f"{self.url}: HTTP {reply.status_code}")
        try:
            return parse_environments(decode(reply.content))
        except SourceError as exc:
            raise SourceError("collector_garbage", f"{self.url}: {exc}") from None

    def close(self) -> None:
        self._client.close()
