"""Time per server-step (predict + Jacobian + update) of the vectorized FilterBank.

    python benchmarks/speed.py [--json] [--repeat 3]

For B = 48 and B = 256 and N = 1, 1,000 and 10,000 servers, the filters are first
brought to steady state (WARMUP_STEPS steps at their operating point: start-up steps
cost more, they search a grid), then timed over further steps; the figure is wall
time / (N · steps), best of --repeat runs. The baseline, in the same run, is a
straightforward one-server EKF whose queue model walks the K = 100·B states one by
one in Python (one step, plain EKF update).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.config import default_config
from tuner.environment import Environment
from tuner.queueing import solve_queue
from tuner.tuner import FilterBank

SIZES = (1, 1000, 10000)
WARMUP_STEPS = 15
BATCHES = (48, 256)


def operating_points(n: int, max_batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per-server truth and load at 50-90 % of capacity."""
    alpha = rng.uniform(10, 25, n)
    beta = rng.uniform(0.05, 1.0, n) * (48 / max_batch)
    tokens = rng.uniform(256, 1024, n)
    capacity = 60000 * max_batch / ((alpha + beta * max_batch) * tokens)
    rpm = capacity * rng.uniform(0.5, 0.9, n)
    return alpha, beta, tokens, rpm


def windows(alpha, beta, tokens, rpm, max_batch: int, rng: np.random.Generator) -> Environment:
    q = solve_queue(alpha, beta, rpm, tokens, max_batch)
    noise = 1 + rng.uniform(-0.05, 0.05, (2, alpha.size))
    return Environment(
        rpm, tokens, np.full(alpha.size, float(max_batch)), q.mean_batch, q.wait_ms * noise[0], q.itl_ms * noise[1]
    )


def time_bank(n: int, max_batch: int, repeat: int) -> float:
    rng = np.random.default_rng(1)
    alpha, beta, tokens, rpm = operating_points(n, max_batch, rng)
    bank = FilterBank(default_config(), size=n)
    for _ in range(WARMUP_STEPS):  # reach steady state: start-up steps search the whole box
        bank.step(windows(alpha, beta, tokens, rpm, max_batch, rng))
    envs = [windows(alpha, beta, tokens, rpm, max_batch, rng) for _ in range(3)]
    best = math.inf
    for _ in range(repeat):
        snapshot = bank.snapshot()
        start = time.perf_counter()
        for env in envs:
            bank.step(env)
        best = min(best, (time.perf_counter() - start) / (n * len(envs)))
        bank.restore(slice(None), snapshot)
    return best * 1e6


# --- baseline: one server, state by state ------------------------------------------
def naive_queue(alpha: float, beta: float, rpm: float, tokens: float, max_batch: int) -> tuple[float, float]:
    lam = rpm / 60000.0
    k = 100 * max_batch
    log_q = [0.0]
    for n in range(1, k + 1):
        b = min(n, max_batch)
        mu = b / (alpha + beta * b) / tokens
        log_q.append(log_q[-1] + math.log(lam / mu))
    top = max(log_q)
    weights = [math.exp(v - top) for v in log_q]
    total = sum(weights)
    mean_n = sum(n * w for n, w in enumerate(weights)) / total
    mean_b = sum(min(n, max_batch) * w for n, w in enumerate(weights)) / total
    throughput = lam * (1 - weights[-1] / total)
    return max(0.0, (mean_n - mean_b) / throughput), mean_b / throughput / tokens


def naive_step(
    x: np.ndarray, P: np.ndarray, env: tuple[float, ...], Q: np.ndarray, R: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    rpm, tokens, max_batch, wait, itl = env
    P = P + Q
    base = np.array(naive_queue(x[0], x[1], rpm, tokens, int(max_batch)))
    H = np.empty((2, 2))
    for j in range(2):
        dx = x.copy()
        dx[j] += 1e-6 * max(1.0, abs(x[j]))
        H[:, j] = (np.array(naive_queue(dx[0], dx[1], rpm, tokens, int(max_batch))) - base) / (dx[j] - x[j])
    S = H @ P @ H.T + R
    K = P @ H.T @ np.linalg.inv(S)
    x = x + K @ (np.array([wait, itl]) - base)
    P = (np.eye(2) - K @ H) @ P
    return x, P


def time_baseline(max_batch: int) -> float:
    rng = np.random.default_rng(2)
    alpha, beta, tokens, rpm = operating_points(1, max_batch, rng)
    env = windows(alpha, beta, tokens, rpm, max_batch, rng)
    row = (float(env.rpm[0]), float(env.avg_tokens[0]), max_batch, float(env.wait_ms[0]), float(env.itl_ms[0]))
    x, P = np.array([alpha[0], beta[0]]), np.diag([1.0, 0.01])
    Q, R = np.diag([0.01, 1e-4]), np.diag([25.0, 0.01])
    start = time.perf_counter()
    steps = 3
    for _ in range(steps):
        x, P = naive_step(x, P, row, Q, R)
    return (time.perf_counter() - start) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, dict[str, object]] = {"per_server_step_us": {}, "baseline_us": {}}
    for max_batch in BATCHES:
        result["per_server_step_us"][str(max_batch)] = {str(n): time_bank(n, max_batch, args.repeat) for n in SIZES}
        result["baseline_us"][str(max_batch)] = time_baseline(max_batch)
    if args.json:
        print(json.dumps(result))
        return
    print("µs per server-step (predict + Jacobian + update), best of", args.repeat)
    print(f"{'B':>5} " + " ".join(f"{'N=' + str(n):>10}" for n in SIZES) + f" {'baseline N=1':>14}")
    for max_batch in BATCHES:
        row = result["per_server_step_us"][str(max_batch)]
        print(
            f"{max_batch:>5} "
            + " ".join(f"{row[str(n)]:>10.1f}" for n in SIZES)
            + f" {result['baseline_us'][str(max_batch)]:>14.0f}"
        )


if __name__ == "__main__":
    main()
