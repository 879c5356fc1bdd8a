"""HTTP face of the emulator: ``/metrics`` for Prometheus and ``/control`` for run-time changes.

The simulation advances lazily: every request first runs each server's simulation up
to the current emulated time, (real time since start) × speed-up, applying the scheduled
changes on the way. No background thread; a lock serializes requests.

``GET /control`` returns the emulated time and every server's knobs as JSON.
``POST /control`` with a JSON object changes knobs from now on, e.g.
``{"rpm": 400}`` (every server) or ``{"server": "vllm-opt-125m-1", "alpha": 12, "beta": 0.4}``;
keys: rpm, tokens, alpha, beta, max_batch, token_distribution.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from tuner.emulator.exposition import CONTENT_TYPE, ITL_METRICS, ServerLabels, render_metrics
from tuner.emulator.simulation import ServerParams, ServerSim
from tuner.http_server import QuietHTTPServer
from tuner.scenario import Scenario

CONTROL_KEYS = {
    "rpm": "rpm",
    "tokens": "avg_tokens",
    "avg_tokens": "avg_tokens",
    "alpha": "alpha_ms",
    "beta": "beta_ms",
    "max_batch": "max_batch",
    "token_distribution": "token_distribution",
}


@dataclass(frozen=True)
class ScheduledChange:
    """Knob changes applied to every server at an emulated time."""

    at_ms: float
    changes: dict[str, Any]


def schedule_from_scenario(scenario: Scenario, step_s: float) -> list[ScheduledChange]:
    """One change per scenario step (rpm, tokens, max batch, α, β); a step lasts ``step_s`` emulated seconds."""
    out, k = [], 0
    for phase in scenario.phases:
        for i in range(phase.steps):
            out.append(
                ScheduledChange(
                    at_ms=k * step_s * 1000.0,
                    changes={
                        "rpm": phase.rpm_at(i),
                        "avg_tokens": phase.avg_tokens,
                        "max_batch": phase.max_batch,
                        "alpha_ms": phase.alpha,
                        "beta_ms": phase.beta,
                    },
                )
            )
            k += 1
    return out


class Emulator:
    """Several emulated servers on one emulated clock."""

    def __init__(
        self,
        params: Sequence[ServerParams],
        names: Sequence[str],
        rng: np.random.Generator,
        *,
        model_name: str = "facebook/opt-125m",
        namespace: str | None = "platform-opt",
        server_label: str = "pod",
        speedup: float = 1.0,
        itl_metric: str = "both",
        schedule: Sequence[ScheduledChange] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(params) != len(names) or not names:
            raise ValueError("one name per server, at least one server")
        if len(set(names)) != len(names):
            raise ValueError("server names must be distinct")
        if not speedup > 0:
            raise ValueError("speedup must be positive")
        if itl_metric not in ITL_METRICS:
            raise ValueError(f"itl_metric must be one of {', '.join(ITL_METRICS)}")
        self.speedup = float(speedup)
        self.itl_metric = itl_metric
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._schedule = sorted(schedule, key=lambda c: c.at_ms)
        self._next_change = 0
        children = rng.spawn(len(names))
        self._sims = {name: ServerSim(p, child) for name, p, child in zip(names, params, children, strict=True)}
        self._labels = {
            name: ServerLabels(model_name=model_name, server_label=server_label, server=name, namespace=namespace)
            for name in names
        }
        with self._lock:
            self._advance(0.0)

    @property
    def names(self) -> list[str]:
        return list(self._sims)

    def emulated_ms(self) -> float:
        return (self._clock() - self._start) * self.speedup * 1000.0

    def _advance(self, until_ms: float) -> None:
        while self._next_change < len(self._schedule) and self._schedule[self._next_change].at_ms <= until_ms:
            change = self._schedule[self._next_change]
            for sim in self._sims.values():
                sim.advance(change.at_ms)
                sim.set_params(replace(sim.params, **change.changes))
            self._next_change += 1
        for sim in self._sims.values():
            sim.advance(until_ms)

    def metrics(self) -> str:
        """The /metrics page at the current emulated time."""
        with self._lock:
            self._advance(self.emulated_ms())
            snapshot = [(self._labels[n], s.counters()) for n, s in self._sims.items()]
        return render_metrics(snapshot, self.itl_metric)

    def status(self) -> dict[str, Any]:
        with self._lock:
            self._advance(self.emulated_ms())
            return self._status()

    def _status(self) -> dict[str, Any]:
        return {
            "emulated_s": self.emulated_ms() / 1000.0,
            "speedup": self.speedup,
            "servers": {n: asdict(s.params) for n, s in self._sims.items()},
        }

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply knob changes from now on; ValueError with a message on a bad request."""
        if not isinstance(request, dict):
            raise ValueError("expected a JSON object")
        request = dict(request)
        server = request.pop("server", None)
        unknown = set(request) - set(CONTROL_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; keys: server, {', '.join(CONTROL_KEYS)}")
        if server is not None and server not in self._sims:
            raise ValueError(f"no server {server!r}; servers: {', '.join(self._sims)}")
        changes = {}
        for key, value in request.items():
            if key == "token_distribution":
                changes[CONTROL_KEYS[key]] = str(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key} must be a number, got {value!r}")
            else:
                changes[CONTROL_KEYS[key]] = int(value) if key == "max_batch" else float(value)
        targets = [server] if server is not None else list(self._sims)
        with self._lock:
            self._advance(self.emulated_ms())
            new = {n: replace(self._sims[n].params, **changes).validated() for n in targets}  # all or nothing
            for n, params in new.items():
                self._sims[n].set_params(params)
            return self._status()


def make_handler(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tuner-emulator/0.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: Prometheus scrapes every second
            pass

        def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, emulator.metrics(), CONTENT_TYPE)
            elif path == "/control":
                self._send(200, json.dumps(emulator.status()))
            elif path == "/":
                self._send(200, "vLLM metrics emulator: GET /metrics, GET|POST /control\n", "text/plain")
            else:
                self._send(404, json.dumps({"error": f"no such path {path}"}))

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != "/control":
                self._send(404, json.dumps({"error": "POST /control only"}))
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                self._send(200, json.dumps(emulator.control(request)))
            except (ValueError, json.JSONDecodeError) as exc:
                self._send(400, json.dumps({"error": str(exc)}))

    return Handler


def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server bound to (host, port) (port 0: a free one); call ``serve_forever`` on it."""
    httpd = QuietHTTPServer((host, port), make_handler(emulator))
    httpd.daemon_threads = True
    return httpd
