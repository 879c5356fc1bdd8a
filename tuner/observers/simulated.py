"""Simulated observer: the analytic queue plus uniform multiplicative noise."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tuner.environment import Environment
from tuner.queueing import solve_queue
from tuner.scenario import Scenario


@dataclass(frozen=True)
class SimulatedWindow:
    env: Environment
    true_alpha: float
    true_beta: float
    phase: int
    saturated: bool


def simulate(scenario: Scenario, rng: np.random.Generator) -> Iterator[SimulatedWindow]:
    """Yield one window per scenario step; noise draws come from ``rng``."""
    for index, phase in enumerate(scenario.phases):
        for k in range(phase.steps):
            rpm = phase.rpm_at(k)
            q = solve_queue(phase.alpha, phase.beta, rpm, phase.avg_tokens, phase.max_batch)
            noise = 1.0 + rng.uniform(-phase.noise, phase.noise, size=3)
            yield SimulatedWindow(
                env=Environment(
                    rpm=rpm,
                    avg_tokens=phase.avg_tokens,
                    max_batch=phase.max_batch,
                    batch_size=float(q.mean_batch) * noise[2],
                    wait_ms=float(q.wait_ms) * noise[0],
                    itl_ms=float(q.itl_ms) * noise[1],
                ),
                true_alpha=phase.alpha,
                true_beta=phase.beta,
                phase=index,
                saturated=bool(q.saturated),
            )
