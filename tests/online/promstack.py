"""Real parts for the online tests: the emulator process, a real Prometheus, an auth proxy.

Every process binds a loopback port, writes into a temporary directory and is stopped
(terminate, then kill) by the context managers, whatever the test did.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class EmulatorProcess:
    proc: subprocess.Popen[Any]
    url: str

    def control(self, **changes: Any) -> dict[str, Any]:
        reply = requests.post(f"{self.url}/control", data=json.dumps(changes), timeout=5)
        reply.raise_for_status()
        return reply.json()

    def status(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/control", timeout=5).json()


@contextlib.contextmanager
def emulator(tmp: Path, *args: str) -> Iterator[EmulatorProcess]:
    """``python -m tuner.emulator --port 0 ARGS`` until the block ends."""
    port_file = tmp / f"emulator-{time.monotonic_ns()}.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.emulator", "--port", "0", "--port-file", str(port_file), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError("emulator did not start within 20 s")
            time.sleep(0.05)
        yield EmulatorProcess(proc, f"http://127.0.0.1:{int(port_file.read_text())}")
    finally:
        _stop(proc)


@dataclass
class PrometheusProcess:
    proc: subprocess.Popen[Any]
    url: str
    port: int

    def stop(self) -> None:
        _stop(self.proc)

    def query(self, promql: str, **headers: str) -> list[dict[str, Any]]:
        reply = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, headers=headers, timeout=5)
        reply.raise_for_status()
        return reply.json()["data"]["result"]

    def wait_for(self, promql: str, count: int, timeout_s: float = 30.0) -> None:
        """Until ``promql`` returns at least ``count`` series with a finite value."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result = self.query(promql)
                finite = [r for r in result if r["value"][1] not in ("NaN", "+Inf", "-Inf")]
                if len(finite) >= count:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} had no {count} finite series within {timeout_s:g} s")
            time.sleep(0.25)


@contextlib.contextmanager
def prometheus(tmp: Path, targets: list[str], web_config: str | None = None) -> Iterator[PrometheusProcess]:
    """A real Prometheus scraping ``targets`` (host:port) every second, own config and data dir."""
    if not Path(PROMETHEUS).exists():
        raise FileNotFoundError("Prometheus is not installed (apt-get install prometheus)")
    run_dir = tmp / f"prometheus-{time.monotonic_ns()}"
    (run_dir / "data").mkdir(parents=True)
    config = run_dir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: vllm-emulator\n    scrape_timeout: 900ms\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    cmd = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={run_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if web_config:
        (run_dir / "web.yml").write_text(web_config)
        cmd.append(f"--web.config.file={run_dir / 'web.yml'}")
    log = (run_dir / "prometheus.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Prometheus exited: {(run_dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                # /-/ready answers 401 behind basic auth: that is up too.
                if requests.get(f"{url}/-/ready", timeout=1).status_code in (200, 401):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus did not become ready within 30 s")
            time.sleep(0.2)
        yield PrometheusProcess(proc, url, port)
    finally:
        _stop(proc)
        log.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    upstream = ""
    token = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        if auth is None:
            self._reply(401, b'{"status":"error","error":"missing bearer token"}')
            return
        if auth != f"Bearer {self.token}":
            self._reply(403, b'{"status":"error","error":"forbidden"}')
            return
        upstream = requests.get(self.upstream + self.path, timeout=10)
        self._reply(upstream.status_code, upstream.content)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def bearer_proxy(upstream: str, token: str) -> Iterator[str]:
    """An HTTP proxy in front of ``upstream`` that demands ``Authorization: Bearer <token>``
    (401 without a token, 403 with a wrong one), like an OpenShift oauth-proxy."""
    handler = type("Handler", (_ProxyHandler,), {"upstream": upstream, "token": token})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
