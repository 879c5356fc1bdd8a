"""Birth-death queue of a continuously batching inference server.

States n = 0..K (K = 100·B) count the requests in the server, B is the max batch.
Arrivals come at rate λ = rpm/60000 per ms; with b = min(n, B) requests running, one
decode iteration takes α + β·b ms, so requests complete at rate
μ(n) = b / ((α + β·b)·T) per ms, T being the output tokens per request.

Every function here is pure and vectorized: each argument is a float64 array (or a
scalar) and all of them broadcast to one shape, one entry per server.

The stationary probabilities are p(n) ∝ q(n) with q(0) = 1 and
q(n) = q(n-1)·λ/μ(n). For n ≤ B the ratio λ/μ(n) = λ·T·(α + β·n)/n differs per state;
beyond B it is the constant ρ = λ·T·(α + β·B)/B, so the tail n = B..K is a truncated
geometric series with K - B terms after q(B). It is summed in closed form, in log
space, so overload (ρ ≫ 1), tiny loads and K up to 102,400 stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

TAIL_FACTOR = 100
"""K = TAIL_FACTOR · B: the queue holds at most 100 times the max batch."""

_SERIES_LIMIT = 1e-3
"""Below |log ρ|·m < this the geometric moments use their Taylor series."""


@dataclass(frozen=True)
class QueueMetrics:
    """Steady-state figures of the queue, one entry per server (float64 arrays)."""

    wait_ms: NDArray[np.float64]
    """Mean time a request waits before it joins the batch."""
    itl_ms: NDArray[np.float64]
    """Mean inter-token latency: time in service divided by tokens per request."""
    mean_requests: NDArray[np.float64]
    """L = E[n], requests in the server (waiting and running)."""
    mean_batch: NDArray[np.float64]
    """S = E[min(n, B)], requests running."""
    throughput_per_ms: NDArray[np.float64]
    """X = λ·(1 − p_K), requests admitted per ms."""
    full_probability: NDArray[np.float64]
    """p_K, the probability that the queue is full and an arrival is lost."""
    saturated: NDArray[np.bool_]
    """ρ ≥ 1: the load reaches the capacity, figures are those of the truncated chain."""


def _geometric_tail(
    u: NDArray[np.float64], m: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """For weights e^{u·j}, j = 0..m: log Σ_{j≤m}, log Σ_{j≤m−1} and the mean index E[j].

    Stable for any sign and size of u (call under np.errstate). For a = |u| > 0 the
    decreasing law has Σ_{j≤m} e^{−a j} = (1 − e^{−a(m+1)})/(1 − e^{−a}) and mean
    1/(e^a − 1) − (m+1)/(e^{a(m+1)} − 1); for u > 0 the largest term e^{u·m} is factored
    out and the index reversed. Where a·m is tiny the mean uses its Taylor series.
    """
    a = np.abs(u)
    log_step = np.log(-np.expm1(-a))
    log_sum = np.log(-np.expm1(-a * (m + 1))) - log_step
    log_sum_open = np.log(-np.expm1(-a * m)) - log_step
    flat = a == 0.0
    if flat.any():
        log_sum = np.where(flat, np.log(m + 1), log_sum)
        log_sum_open = np.where(flat, np.log(m), log_sum_open)
    closed = 1.0 / np.expm1(a) - (m + 1) / np.expm1(a * (m + 1))
    series = m / 2 - a * m * (m + 2) / 12 + a**3 * ((m + 1) ** 4 - 1) / 720
    mean = np.where(a * m < _SERIES_LIMIT, series, closed)
    rising = u > 0
    if rising.any():
        log_sum = np.where(rising, u * m + log_sum, log_sum)
        # Σ_{j≤m−1} e^{u j} = e^{u(m−1)}·Σ_{k≤m−1} e^{−a k}
        log_sum_open = np.where(rising, u * (m - 1) + log_sum_open, log_sum_open)
        mean = np.where(rising, m - mean, mean)
    return log_sum, log_sum_open, mean


def _broadcast(*args: ArrayLike) -> list[NDArray[np.float64]]:
    return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*args)]


def solve_queue(
    alpha: ArrayLike,
    beta: ArrayLike,
    rpm: ArrayLike,
    avg_tokens: ArrayLike,
    max_batch: ArrayLike,
) -> QueueMetrics:
    """Solve the queue for every server at once.

    Arguments broadcast together; α and β in ms, rpm in requests per minute,
    avg_tokens per request, max_batch B ≥ 1 (rounded to an integer). Inputs must be
    positive and finite; validating them is the caller's job. Servers are solved in
    blocks of rows so that the (rows × B) work arrays stay in the processor's cache.
    """
    a, b, r, t, bmax = _broadcast(alpha, beta, rpm, avg_tokens, max_batch)
    shape = a.shape
    a, b, r, t = (v.reshape(-1) for v in (a, b, r, t))
    big_b = np.rint(bmax.reshape(-1)).astype(np.int64)
    lam = r / 60000.0
    width = int(big_b.max()) if big_b.size else 1
    rows = max(1, _BLOCK_ELEMENTS // width)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # the geometric sums' edge cases
        parts = [
            _solve_rows(a[i : i + rows], b[i : i + rows], lam[i : i + rows], t[i : i + rows], big_b[i : i + rows])
            for i in range(0, max(a.size, 1), rows)
        ]
    columns = parts[0] if len(parts) == 1 else [np.concatenate(c) for c in zip(*parts, strict=True)]
    return QueueMetrics(*(c.reshape(shape) for c in columns))


_BLOCK_ELEMENTS = 1 << 14
"""Rows × states solved together (128 KiB per float64 work array)."""


def _solve_rows(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    lam: NDArray[np.float64],
    t: NDArray[np.float64],
    big_b: NDArray[np.int64],
) -> tuple[NDArray[np.float64], ...]:
    """The queue for a block of servers (flat arrays); fields in QueueMetrics order."""
    width = int(big_b.max()) if big_b.size else 1
    uniform = big_b.size == 0 or int(big_b.min()) == width
    n = np.arange(1, width + 1, dtype=np.float64)  # states 1..width
    bf = big_b.astype(np.float64)

    # Head: log q(n) for n = 1..B, a cumulative sum of log(λ·T·(α + β·n)/n).
    log_lt = np.log(lam * t)
    log_q = b[:, None] * n
    log_q += a[:, None]
    np.log(log_q, out=log_q)
    log_q += log_lt[:, None]
    log_q -= np.log(n)
    if not uniform:
        log_q[n[None, :] > big_b[:, None]] = 0.0
    np.cumsum(log_q, axis=1, out=log_q)
    log_q_b = log_q[:, -1] if uniform else np.take_along_axis(log_q, (big_b - 1)[:, None], axis=1)[:, 0]

    # Tail: q(B + j) = q(B)·ρ^j for j = 0..m with m = K − B.
    m = (TAIL_FACTOR - 1) * bf
    u = log_lt + np.log(a + b * bf) - np.log(bf)  # log ρ
    log_sum, log_sum_open, tail_mean_j = _geometric_tail(u, m)
    log_tail = log_q_b + log_sum
    log_tail_open = log_q_b + log_sum_open  # states B..K−1

    # Normalize with the largest log-weight among q(0) = 1, q(1..B−1) and the tail.
    # Sums run over the whole row, states n ≥ B weighted zero, so that a server's
    # figures do not depend on the other rows of its block (same summation order).
    if uniform:
        head_max = log_q[:, :-1].max(axis=1, initial=-np.inf)
    else:
        below_b = n[None, :] < big_b[:, None]
        head_max = np.where(below_b, log_q, -np.inf).max(axis=1, initial=-np.inf)
    shift = np.maximum(np.maximum(head_max, 0.0), log_tail)
    w_head = log_q - shift[:, None]
    np.exp(w_head, out=w_head)
    if uniform:
        w_head[:, -1] = 0.0
    else:
        w_head[~below_b] = 0.0
    w0 = np.exp(-shift)
    w_tail = np.exp(log_tail - shift)
    w_open = np.exp(log_tail_open - shift)
    w_full = np.exp(log_q_b + u * m - shift)

    head_sum = w_head.sum(axis=1)
    head_n = (w_head * n).sum(axis=1)  # not a matmul: BLAS may round rows differently
    z = w0 + head_sum + w_tail
    mean_batch = (head_n + bf * w_tail) / z
    queued = w_tail * tail_mean_j / z  # L − S, without cancellation
    # 1 − p_K as the mass of states 0..K−1, exact even when p_K is close to 1.
    throughput = lam * ((w0 + head_sum + w_open) / z)
    wait = np.maximum(0.0, queued / throughput)
    itl = mean_batch / throughput / t
    return wait, itl, mean_batch + queued, mean_batch, throughput, w_full / z, u >= 0


def capacity_rpm(alpha: ArrayLike, beta: ArrayLike, avg_tokens: ArrayLike, max_batch: ArrayLike) -> NDArray[np.float64]:
    """Arrival rate (requests/min) at which the full batch is just busy (ρ = 1)."""
    a, b, t, bmax = _broadcast(alpha, beta, avg_tokens, max_batch)
    bmax = np.rint(bmax)
    return 60000.0 * bmax / ((a + b * bmax) * t)
