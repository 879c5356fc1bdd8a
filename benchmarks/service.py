"""Tuner service figures: cycle time for 1,000 and 10,000 servers; /getparams under load.

    python benchmarks/service.py            # everything, about a minute
    python benchmarks/service.py --quick    # smaller and shorter

1. In-process cycle (what the writer thread does): parse a /getenv reply, one
   vectorized FilterBank step, save to SQLite, publish the snapshot.
2. End to end: the service as a subprocess polling a demo collector over loopback
   HTTP; the cycle time it reports (fetch + decode + step + save).
3. /getparams while cycles of 10,000 servers run back to back: load from a separate
   process (keep-alive connections, one thread each), bounded in requests and time;
   throughput, p50, p99, max.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tuner.config import default_config  # noqa: E402
from tuner.service.collector import decode, parse_environments  # noqa: E402
from tuner.service.democollector import DemoCollector, vectorized_windows  # noqa: E402
from tuner.service.fleet import Fleet  # noqa: E402
from tuner.service.store import Store  # noqa: E402


def state_file(tmp: Path, count: int) -> Path:
    return tmp / f"bench-{count}.sqlite"


def in_process_cycle(count: int, cycles: int, tmp: Path) -> dict[str, float]:
    """Leaves the fleet's state in ``state_file(tmp, count)`` for the end-to-end run."""
    provide = vectorized_windows(count, seed=1)
    fleet = Fleet(default_config(), Store(state_file(tmp, count)))
    parse, step, save, total = [], [], [], []
    for _ in range(cycles + 1):  # the first cycle adds the servers: not counted
        body = json.dumps(provide()).encode()
        t0 = time.perf_counter()
        readings = parse_environments(decode(body))
        t1 = time.perf_counter()
        outcome = fleet.step(readings)
        t2 = time.perf_counter()
        parse.append(t1 - t0)
        step.append(outcome.step_s)
        save.append(outcome.save_s)
        total.append(t2 - t0)
    fleet.close()
    return {
        "decode+parse_s": statistics.median(parse[1:]),
        "step_s": statistics.median(step[1:]),
        "save_s": statistics.median(save[1:]),
        "cycle_s": statistics.median(total[1:]),
        "first_cycle_s": total[0],
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def start_service(collector_port: int, period: float, state: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tuner.service", "--port", str(port), "--collector-port", str(collector_port)]
    args += ["--period", str(period), "--state", str(state), "--log-level", "warning", "--collector-timeout", "30"]
    proc = subprocess.Popen(args, cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            get_json(port, "/healthz")
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the service did not start")


def wait_cycles(port: int, cycles: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = get_json(port, "/healthz")
        if health["cycles"] >= cycles:
            break
        time.sleep(0.1)
    return health


def cycle_durations(port: int) -> tuple[float, int]:
    sums: dict[str, float] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith("tuner_cycle_duration_seconds_sum") or line.startswith("tuner_cycle_duration_seconds_count"):
            key, value = line.split(" ")
            sums[key] = float(value)
    conn.close()
    return sums["tuner_cycle_duration_seconds_sum"], int(sums["tuner_cycle_duration_seconds_count"])


def load(port: int, servers: int, requests: int, seconds: float, connections: int) -> dict[str, Any]:
    """Run in the load process: ``connections`` keep-alive clients, bounded by count and time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_thread = requests // connections
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        for i in range(per_thread):
            if time.monotonic() > stop_at:
                break
            path = f"/getparams?server_name=srv-{(k * 7919 + i * 31) % servers:05d}"
            t0 = time.perf_counter()
            conn.request("GET", path)
            reply = conn.getresponse()
            reply.read()
            mine.append(time.perf_counter() - t0)
            codes[reply.status] = codes.get(reply.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for c, n in codes.items():
                statuses[c] = statuses.get(c, 0) + n

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    q = (
        (lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))])
        if latencies
        else (lambda p: float("nan"))
    )
    return {
        "requests": len(latencies),
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": 1000 * q(0.50),
        "p99_ms": 1000 * q(0.99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "statuses": statuses,
    }


def end_to_end(servers: int, period: float, tmp: Path, requests: int, seconds: float, connections: int) -> None:
    with DemoCollector(vectorized_windows(servers, seed=1)) as collector:
        # Start from the in-process run's state: the first cycle of new servers (the filter's
        # start-up search) is reported above and would only make this part slower.
        proc, port = start_service(collector.port, period, state_file(tmp, servers))
        try:
            health = wait_cycles(port, 3, 120)
            last = health["last_cycle"]
            print(
                f"  {servers:>6} servers, end to end: last cycle {last['duration_s'] * 1000:.0f} ms = fetch over HTTP "
                f"+ decode {last['fetch_s'] * 1000:.0f} + step {last['step_s'] * 1000:.0f} + save "
                f"{last['save_s'] * 1000:.0f} + publish; stepped {last['stepped']}"
            )
            if requests <= 0:
                return
            sum0, n0 = cycle_durations(port)
            t0 = time.monotonic()
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--load",
                    str(port),
                    "--servers",
                    str(servers),
                    "--requests",
                    str(requests),
                    "--seconds",
                    str(seconds),
                    "--connections",
                    str(connections),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=seconds + 60,
            )
            elapsed = time.monotonic() - t0
            sum1, n1 = cycle_durations(port)
            figures = json.loads(out.stdout)
            busy = (sum1 - sum0) / elapsed
            print(
                f"  /getparams during {n1 - n0} cycles of {servers} servers (cycles busy {100 * busy:.0f} % of the "
                f"time), {connections} keep-alive connections from another process:"
            )
            print(
                f"    {figures['requests']} requests in {figures['wall_s']:.1f} s = "
                f"{figures['throughput_rps']:.0f} req/s; "
                f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, max {figures['max_ms']:.1f} ms; "
                f"statuses {figures['statuses']}"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer cycles and requests")
    p.add_argument("--load", type=int, help=argparse.SUPPRESS)  # internal: run as the load process on this port
    p.add_argument("--servers", type=int, default=10000)
    p.add_argument("--requests", type=int, default=40000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--connections", type=int, default=4)
    args = p.parse_args()
    if args.load:
        print(json.dumps(load(args.load, args.servers, args.requests, args.seconds, args.connections)))
        return 0
    cycles = 3 if args.quick else 5
    requests, seconds = (5000, 6.0) if args.quick else (args.requests, args.seconds)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; targets: 10,000-server cycle <= 1 s, "
        "/getparams p99 <= 10 ms during cycles"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"In-process cycle (median of {cycles}; max batch 48):")
        for count in (1000, 10000):
            r = in_process_cycle(count, cycles, tmp)
            print(
                f"  {count:>6} servers: cycle {r['cycle_s'] * 1000:.0f} ms = "
                f"decode+parse {r['decode+parse_s'] * 1000:.0f}"
                f" + FilterBank step {r['step_s'] * 1000:.0f} + SQLite save {r['save_s'] * 1000:.0f} + publish; "
                f"first cycle, adding the servers: {r['first_cycle_s'] * 1000:.0f} ms"
            )
        print("Service subprocess, demo collector on loopback:")
        end_to_end(1000, 0.2, tmp, 0, 0, 0)
        end_to_end(args.servers, 0.1, tmp, requests, seconds, args.connections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
