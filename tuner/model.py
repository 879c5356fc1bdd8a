"""Observation models h(x, env) → z that the filter can tune.

A model is a pure function of the state (natural units, any leading shape, last axis
the state entries) and an environment whose fields broadcast against the leading
shape; it returns the predicted observations on the last axis. The queueing model of
``queueing.py`` is the default; any other callable of that shape plugs in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tuner.environment import Environment
from tuner.queueing import solve_queue

Predict = Callable[[NDArray[np.float64], Any], NDArray[np.float64]]


def _observed(env: Any) -> NDArray[np.float64]:
    return env.observed()


def _invalid_reasons(env: Any) -> list[str | None]:
    return env.invalid_reasons()


@dataclass(frozen=True)
class ObservationModel:
    """An observation model with names for its state and observation entries."""

    predict: Predict
    """h(x, env) → z, vectorized over the leading axes of x."""
    state_names: tuple[str, ...]
    observation_names: tuple[str, ...]
    observe: Callable[[Any], NDArray[np.float64]] = _observed
    """Reads the observation vector z out of an environment."""
    invalid_reasons: Callable[[Any], list[str | None]] = _invalid_reasons
    """Per server: why its environment cannot be used, or None."""
    counted_rate: str | None = None
    """The environment field holding an event rate per minute measured by counting (its
    Poisson noise enters R when the configuration sets rateWindowMinutes), or None."""


MIN_PARAMETER_MS = 1e-9
"""alpha and beta are read as at least this: an unbounded linear-space filter may try
a negative value on its way, where the queue has no meaning."""


def predict_queue(x: NDArray[np.float64], env: Environment) -> NDArray[np.float64]:
    """The queueing model: x = [alpha, beta] (ms) → z = [wait_ms, itl_ms]."""
    x = np.maximum(x, MIN_PARAMETER_MS)
    metrics = solve_queue(x[..., 0], x[..., 1], env.rpm, env.avg_tokens, env.max_batch)
    return np.stack([metrics.wait_ms, metrics.itl_ms], axis=-1)


QUEUE_MODEL = ObservationModel(
    predict=predict_queue,
    state_names=("alpha", "beta"),
    observation_names=("wait_ms", "itl_ms"),
    counted_rate="rpm",
)
