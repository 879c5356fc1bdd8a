"""Discrete-event simulation of a continuously batching LLM server (vLLM-like).

Requests arrive as a Poisson process at ``rpm``; each asks for a number of output tokens
drawn from a distribution with mean ``avg_tokens``. The server runs decode iterations
back to back: an iteration with b running requests takes α + β·b ms and gives each
running request one token. A request that arrives while a batch slot is free takes it
(queue time 0) and starts with the next iteration (at once if the server is idle);
otherwise it waits in a FCFS queue until an iteration ends and frees a slot, and its
queue time runs until then. A request leaves with its last token; the gaps between its
tokens are the inter-token latencies.

With geometric token counts (the default) every running request finishes at each
iteration with probability 1/T, which is the memoryless service the analytic queue of
``tuner.queueing`` assumes; the other distributions show the model's mismatch.

Everything here is pure Python plus numpy draws from a passed-in ``numpy.random.Generator``:
a :class:`ServerSim` owns all of its state, there is no module-level mutable state, and
a run is reproducible from its seed. Draws come in blocks (standard exponentials and
uniforms), so a parameter change applies from the next arrival on.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from tuner.environment import Environment
from tuner.observers.simulated import SimulatedWindow
from tuner.queueing import capacity_rpm
from tuner.scenario import Scenario

TOKEN_DISTRIBUTIONS = ("geometric", "fixed", "uniform")

# vLLM's default histogram buckets (seconds).
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vllm:request_queue_time_seconds, vllm:e2e_request_latency_seconds."""
TOKEN_LATENCY_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
"""vllm:inter_token_latency_seconds (and the older vllm:time_per_output_token_seconds)."""

_BLOCK = 1024


@dataclass(frozen=True)
class ServerParams:
    """The knobs of one emulated server."""

    rpm: float
    """Poisson arrival rate, requests per minute (0: no arrivals)."""
    avg_tokens: float
    """Mean output tokens per request."""
    alpha_ms: float
    """Fixed time of a decode iteration, ms."""
    beta_ms: float
    """Extra time of a decode iteration per running request, ms."""
    max_batch: int
    """Most requests running at once (vLLM's max-num-seqs)."""
    token_distribution: str = "geometric"
    """geometric (memoryless, mean avg_tokens), fixed, or uniform on 1..2·avg_tokens−1."""
    prompt_tokens: int = 128
    """Prompt length of every request (only counted in vllm:prompt_tokens_total)."""

    def validated(self) -> ServerParams:
        checks = {
            "rpm": self.rpm >= 0 and math.isfinite(self.rpm),
            "avg_tokens": self.avg_tokens >= 1 and math.isfinite(self.avg_tokens),
            "alpha_ms": self.alpha_ms > 0 and math.isfinite(self.alpha_ms),
            "beta_ms": self.beta_ms >= 0 and math.isfinite(self.beta_ms),
            "max_batch": self.max_batch >= 1 and float(self.max_batch) == int(self.max_batch),
            "prompt_tokens": self.prompt_tokens >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid server parameter(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if self.token_distribution not in TOKEN_DISTRIBUTIONS:
            raise ValueError(f"token_distribution must be one of {', '.join(TOKEN_DISTRIBUTIONS)}")
        return replace(self, max_batch=int(self.max_batch))


@dataclass
class Histogram:
    """Cumulative histogram in Prometheus's sense (counts per upper bound, sum, count)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)  # last: above the largest bound

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.total += value * weight
        self.count += weight

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return out

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)


@dataclass(frozen=True)
class ServerCounters:
    """A snapshot of one server's cumulative figures (what /metrics exposes) at ``time_ms``."""

    time_ms: float
    requests_success: int
    generation_tokens: int
    prompt_tokens: int
    running: int
    waiting: int
    running_integral_ms: float
    """∫ running dt, for time-averaged batch sizes."""
    queue_time_s: Histogram
    inter_token_latency_s: Histogram
    e2e_latency_s: Histogram


class ServerSim:
    """One emulated server; ``advance(until_ms)`` runs the simulation forward in emulated time."""

    def __init__(self, params: ServerParams, rng: np.random.Generator, start_ms: float = 0.0) -> None:
        self.params = params.validated()
        self._rng = rng
        self.now_ms = float(start_ms)
        self._exp: list[float] = []
        self._uni: list[float] = []
        self._next_arrival_ms = self.now_ms + self._interarrival_ms()
        self._waiting: deque[tuple[float, int]] = deque()  # (arrival ms, tokens)
        self._running = 0
        self._iteration = 0
        self._iter_end_ms = math.inf  # inf: idle
        self._iter_ms = 0.0
        self._joined = 0  # requests in their first iteration (their first token is not a gap)
        self._pending: list[tuple[float, int]] = []  # given a slot, start with the next iteration
        self._finish: dict[int, list[float]] = {}  # iteration index → arrival times of requests ending there
        self._success = 0
        self._gen_tokens = 0
        self._prompt_tokens = 0
        self._running_integral = 0.0
        self._queue = Histogram(REQUEST_LATENCY_BUCKETS_S)
        self._itl = Histogram(TOKEN_LATENCY_BUCKETS_S)
        self._e2e = Histogram(REQUEST_LATENCY_BUCKETS_S)

    # --- draws ---------------------------------------------------------------------------
    def _std_exponential(self) -> float:
        if not self._exp:
            self._exp = self._rng.standard_exponential(_BLOCK).tolist()
        return self._exp.pop()

    def _uniform(self) -> float:
        if not self._uni:
            self._uni = self._rng.random(_BLOCK).tolist()
        return self._uni.pop()

    def _interarrival_ms(self) -> float:
        if self.params.rpm <= 0:
            return math.inf
        return self._std_exponential() * 60000.0 / self.params.rpm

    def _tokens(self) -> int:
        t = self.params.avg_tokens
        dist = self.params.token_distribution
        if dist == "fixed" or t <= 1:
            return max(1, round(t))
        u = self._uniform()
        if dist == "uniform":
            return 1 + int(u * (2 * t - 1))
        return max(1, math.ceil(math.log1p(-u) / math.log1p(-1.0 / t)))

    # --- control -------------------------------------------------------------------------
    def set_params(self, params: ServerParams) -> None:
        """New knobs from now on (the iteration in progress keeps its duration)."""
        old_rpm = self.params.rpm
        self.params = params.validated()
        if params.rpm != old_rpm:
            self._next_arrival_ms = self.now_ms + self._interarrival_ms()  # memoryless: redraw
        if self._iter_end_ms == math.inf:
            self._admit()
            if self._running or self._pending:
                self._start_iteration()

    # --- simulation ----------------------------------------------------------------------
    def advance(self, until_ms: float) -> None:
        """Process every event up to ``until_ms`` (emulated ms)."""
        while True:
            t_arrival, t_end = self._next_arrival_ms, self._iter_end_ms
            t = t_arrival if t_arrival <= t_end else t_end
            if t > until_ms:
                break
            self._running_integral += self._running * (t - self.now_ms)
            self.now_ms = t
            if t_arrival <= t_end:
                self._arrive()
            else:
                self._end_iteration()
        if until_ms > self.now_ms:
            self._running_integral += self._running * (until_ms - self.now_ms)
            self.now_ms = until_ms

    def _arrive(self) -> None:
        now = self.now_ms
        tokens = self._tokens()
        self._prompt_tokens += self.params.prompt_tokens
        self._next_arrival_ms = now + self._interarrival_ms()
        if self._running + len(self._pending) < self.params.max_batch and not self._waiting:
            self._queue.observe(0.0)  # a slot is free: no queueing (it starts at the next iteration)
            if self._iter_end_ms == math.inf:
                self._pending.append((now, tokens))
                self._start_iteration()
            else:
                self._pending.append((now, tokens))
        else:
            self._waiting.append((now, tokens))

    def _start_iteration(self) -> None:
        """Admit the pending requests, then start an iteration over every running request."""
        self._iteration += 1
        for arrival, tokens in self._pending:
            self._finish.setdefault(self._iteration + tokens - 1, []).append(arrival)
        self._joined = len(self._pending)
        self._running += self._joined
        self._pending.clear()
        self._iter_ms = self.params.alpha_ms + self.params.beta_ms * self._running
        self._iter_end_ms = self.now_ms + self._iter_ms

    def _end_iteration(self) -> None:
        now = self.now_ms
        self._gen_tokens += self._running
        gaps = self._running - self._joined  # the joiners' first token is not an inter-token gap
        if gaps:
            self._itl.observe(self._iter_ms / 1000.0, gaps)
        done = self._finish.pop(self._iteration, ())
        for arrival in done:
            self._e2e.observe((now - arrival) / 1000.0)
        self._running -= len(done)
        self._success += len(done)
        self._iter_end_ms = math.inf
        self._admit()
        if self._running or self._pending:
            self._start_iteration()

    def _admit(self) -> None:
        """Move waiting requests into free slots; they start with the next iteration."""
        while self._waiting and self._running + len(self._pending) < self.params.max_batch:
            arrival, tokens = self._waiting.popleft()
            self._queue.observe((self.now_ms - arrival) / 1000.0)
            self._pending.append((arrival, tokens))

    # --- reading -------------------------------------------------------------------------
    def counters(self) -> ServerCounters:
        return ServerCounters(
            time_ms=self.now_ms,
            requests_success=self._success,
            generation_tokens=self._gen_tokens,
            prompt_tokens=self._prompt_tokens,
            running=self._running,
            waiting=len(self._waiting),
            running_integral_ms=self._running_integral,
            queue_time_s=self._queue.copy(),
            inter_token_latency_s=self._itl.copy(),
            e2e_latency_s=self._e2e.copy(),
        )


def window_environment(before: ServerCounters, after: ServerCounters, max_batch: int) -> Environment:
    """The window between two snapshots of one server, as the Prometheus queries would see it."""
    minutes = (after.time_ms - before.time_ms) / 60000.0
    done = after.requests_success - before.requests_success
    q_n = after.queue_time_s.count - before.queue_time_s.count
    i_n = after.inter_token_latency_s.count - before.inter_token_latency_s.count
    nan = math.nan
    return Environment(
        rpm=done / minutes if minutes > 0 else nan,
        avg_tokens=(after.generation_tokens - before.generation_tokens) / done if done else nan,
        max_batch=float(max_batch),
        batch_size=(after.running_integral_ms - before.running_integral_ms) / (minutes * 60000.0) if minutes else nan,
        wait_ms=1000.0 * (after.queue_time_s.total - before.queue_time_s.total) / q_n if q_n else nan,
        itl_ms=1000.0 * (after.inter_token_latency_s.total - before.inter_token_latency_s.total) / i_n if i_n else nan,
    )


def simulate_windows(
    scenario: Scenario,
    rng: np.random.Generator,
    window_s: float = 60.0,
    warmup_s: float = 60.0,
    token_distribution: str = "geometric",
) -> Iterator[SimulatedWindow]:
    """The discrete-event counterpart of ``tuner.observers.simulated.simulate``.

    One window of ``window_s`` emulated seconds per scenario step, the server simulated
    continuously across steps and phases (the queue carries over a change). The phase's
    ``noise`` is ignored: the noise is the simulation's own. ``warmup_s`` of the first
    phase run before the first window, so it does not start from an empty server.
    """
    sim: ServerSim | None = None
    for index, phase in enumerate(scenario.phases):
        for k in range(phase.steps):
            params = ServerParams(
                rpm=phase.rpm_at(k),
                avg_tokens=phase.avg_tokens,
                alpha_ms=phase.alpha,
                beta_ms=phase.beta,
                max_batch=phase.max_batch,
                token_distribution=token_distribution,
            )
            if sim is None:
                sim = ServerSim(params, rng)
                sim.advance(warmup_s * 1000.0)
            elif params != sim.params:
                sim.set_params(params)
            before = sim.counters()
            sim.advance(sim.now_ms + window_s * 1000.0)
            env = window_environment(before, sim.counters(), phase.max_batch)
            yield SimulatedWindow(
                env=env,
                true_alpha=phase.alpha,
                true_beta=phase.beta,
                phase=index,
                saturated=bool(params.rpm >= capacity_rpm(phase.alpha, phase.beta, phase.avg_tokens, phase.max_batch)),
            )
