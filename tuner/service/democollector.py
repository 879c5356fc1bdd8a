"""A stand-in collector: ``GET /getenv`` for simulated servers with known alpha and beta.

``python -m tuner.service.democollector --servers 3 --port 8080`` serves windows of the
analytic queue plus uniform multiplicative noise (the simulated observer's model),
one fresh window per request. Tests and ``benchmarks/service.py`` use
:class:`DemoCollector` in-process and switch its ``mode`` to inject faults:

- ``ok``: every server; ``garbage``: a body that is not JSON; ``list``: JSON that is
  not an object; ``slow``: answers after ``delay_s``; ``error``: HTTP 500;
  ``partial``: only the first half of the servers; ``bad_server``: the first server's
  entry is malformed, the others are fine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np

from tuner.environment import Environment
from tuner.http_server import QuietHTTPServer
from tuner.observers.simulated import simulate
from tuner.queueing import capacity_rpm, solve_queue
from tuner.scenario import parse_scenario

LOADS = (0.3, 0.6, 0.85)
"""Fractions of capacity the demo's servers cycle through."""
MODES = ("ok", "garbage", "list", "slow", "error", "partial", "bad_server")


def to_getenv(env: Environment) -> dict[str, float]:
    """One window in the collector's Go field names."""
    return {
        "Lambda": float(env.rpm),
        "AvgTokensPerRequest": float(env.avg_tokens),
        "MaxBatchSize": float(env.max_batch),
        "BatchSize": float(env.batch_size),
        "AvgQueueTime": float(env.wait_ms),
        "AvgTokenTime": float(env.itl_ms),
    }


@dataclass(frozen=True)
class SimServer:
    name: str
    alpha_ms: float
    beta_ms: float
    rpm: float | tuple[float, ...] = 35.2
    avg_tokens: float = 1024.0
    max_batch: int = 48
    noise: float = 0.05


def simulated_windows(servers: list[SimServer], seed: int = 0) -> Callable[[], dict[str, Any]]:
    """A provider of /getenv payloads: each call is the next window of every server,
    drawn by :func:`tuner.observers.simulated.simulate` (one generator per server)."""
    streams: dict[str, Iterator[Any]] = {}
    for k, s in enumerate(servers):
        scenario = parse_scenario(
            {
                "phases": [
                    {
                        "steps": 10**9,
                        "rpm": list(s.rpm) if isinstance(s.rpm, tuple) else s.rpm,
                        "avg_tokens": s.avg_tokens,
                        "max_batch": s.max_batch,
                        "alpha": s.alpha_ms,
                        "beta": s.beta_ms,
                        "noise": s.noise,
                    }
                ]
            }
        )
        streams[s.name] = simulate(scenario, np.random.default_rng([seed, k]))

    def provide() -> dict[str, Any]:
        return {name: to_getenv(next(stream).env) for name, stream in streams.items()}

    return provide


def vectorized_windows(count: int, seed: int = 0, max_batch: int = 48) -> Callable[[], dict[str, Any]]:
    """Windows of ``count`` servers (``srv-00000`` …) at once: same model and noise as the
    simulated observer, vectorized so that 10,000 servers cost milliseconds."""
    rng = np.random.default_rng(seed)
    names = [f"srv-{i:05d}" for i in range(count)]
    alpha = rng.uniform(10.0, 25.0, count)
    beta = rng.uniform(0.5, 1.5, count)
    rpm = rng.uniform(20.0, 40.0, count)
    tokens = np.full(count, 1024.0)
    batch = np.full(count, float(max_batch))
    q = solve_queue(alpha, beta, rpm, tokens, batch)

    def provide() -> dict[str, Any]:
        noise = 1.0 + rng.uniform(-0.05, 0.05, size=(3, count))
        cols = (rpm, tokens, batch, q.mean_batch * noise[2], q.wait_ms * noise[0], q.itl_ms * noise[1])
        keys = ("Lambda", "AvgTokensPerRequest", "MaxBatchSize", "BatchSize", "AvgQueueTime", "AvgTokenTime")
        rows = zip(*(c.tolist() for c in cols), strict=True)
        return {n: dict(zip(keys, r, strict=True)) for n, r in zip(names, rows, strict=True)}

    return provide


class DemoCollector:
    """``GET /getenv`` on a loopback port, served from a thread. ``port=0`` picks a free port."""

    def __init__(self, provider: Callable[[], dict[str, Any]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.provider = provider
        self.mode = "ok"
        self.delay_s = 2.0
        self.requests = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with collector._lock:
                    collector._connections.add(self.connection)

            def finish(self) -> None:
                with collector._lock:
                    collector._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/getenv":
                    self._send(404, b'{"error": "not found"}')
                    return
                status, body = collector.reply()
                self._send(status, body)

            def _send(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = QuietHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/getenv"

    def reply(self) -> tuple[int, bytes]:
        mode = self.mode
        with self._lock:
            self.requests += 1
            if mode in ("garbage", "error"):
                payload: Any = None
            else:
                payload = self.provider()
        if mode == "garbage":
            return 200, b"<html>\x00not json{{{"
        if mode == "error":
            return 500, b'{"error": "collector broke"}'
        if mode == "list":
            return 200, json.dumps(list(payload.values())).encode()
        if mode == "slow":
            time.sleep(self.delay_s)
        if mode == "partial":
            payload = dict(list(payload.items())[: max(1, len(payload) // 2)])
        if mode == "bad_server" and payload:
            first = next(iter(payload))
            payload[first] = {"Lambda": "lots", "AvgTokenTime": None}
        return 200, json.dumps(payload).encode()

    def start(self) -> DemoCollector:
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-collector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open keep-alive connections, as a collector that goes down would."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DemoCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuner.service.democollector", description=__doc__.split("\n\n")[0])
    host = os.environ.get("COLLECTOR_HOST") or "127.0.0.1"
    port = os.environ.get("COLLECTOR_PORT") or "8080"
    p.add_argument("--host", default=host, help=f"listen address (COLLECTOR_HOST, default here {host})")
    if not port.isdigit() or not 0 < int(port) < 65536:
        p.error(f"COLLECTOR_PORT={port!r} is not a port number")
    p.add_argument("--port", type=int, default=int(port), help=f"listen port (COLLECTOR_PORT, default here {port})")
    p.add_argument("--servers", type=int, default=3, help="number of simulated servers (default 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.servers <= 20:
        truth = []
        for k in range(args.servers):
            alpha, beta = 12.0 + 3.0 * k, 0.6 + 0.2 * k
            # loads of 30, 60 and 85 % of the server's capacity in turn, so that alpha and beta can be told apart
            capacity = float(capacity_rpm(alpha, beta, 1024.0, 48))
            truth.append(SimServer(f"server-{k}", alpha, beta, rpm=tuple(round(f * capacity, 1) for f in LOADS)))
        for s in truth:
            print(f"{s.name}: alpha={s.alpha_ms} beta={s.beta_ms} rpm={s.rpm}", flush=True)
        provider = simulated_windows(truth, args.seed)
    else:
        provider = vectorized_windows(args.servers, args.seed)
    collector = DemoCollector(provider, args.host, args.port)
    print(f"serving {collector.url}", flush=True)
    try:
        collector._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        collector._server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
