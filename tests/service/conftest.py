"""Helpers for the service tests: free loopback ports, the service as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """``python -m tuner.service`` on a free loopback port."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNER_", "COLLECTOR_"))}
        full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.service", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    def wait_ready(self, timeout_s: float = 30.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the service did not answer /healthz in {timeout_s} s:\n{self.log()}")

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def health(self) -> dict[str, Any]:
        return self.get("/healthz").json()  # type: ignore[no-any-return]

    def wait_for(self, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Poll /healthz until ``predicate(health)`` holds."""
        deadline = time.monotonic() + timeout_s
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            health = self.health()
            if predicate(health):
                return health
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last /healthz: {health}\n{self.log()[-3000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.client.close()
        self._log.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Any]:
    """``start_service(*args)`` → a ready ServiceProcess; every one is killed at teardown."""
    started: list[ServiceProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> ServiceProcess:
        svc = ServiceProcess(list(args), tmp_path / f"service-{len(started)}.log", env)
        started.append(svc)
        return svc.wait_ready() if ready else svc

    yield start
    for svc in started:
        svc.kill(signal.SIGTERM)
