"""Filter state for one server (:class:`Tuner`) or many at once (:class:`FilterBank`).

The math is in ``ekf.py``; this module holds x and P between steps, turns the
configuration into noise matrices, applies the NIS gate and skips unusable windows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2

from tuner import ekf
from tuner.config import FilterConfig
from tuner.model import QUEUE_MODEL, ObservationModel

Array = NDArray[np.float64]

INFLATE_PROBABILITY = 0.99
"""NIS quantile above which the adaptive filter inflates its covariance."""
GATE_PATIENCE = 3
"""Consecutive gated steps after which the filter accepts the data as a regime change."""
INFLATE_TARGET = 0.9
"""NIS quantile the inflation brings the innovation down to (the least inflation that makes it plausible)."""
TRUST_PROBABILITY = 0.9
"""NIS quantile below which the update's first step needs no linearization check."""
GRID_STEPS = 5
"""Filters search the grid only during their first accepted steps (start-up, far from the data)."""
GRID_PROBABILITY = 0.9999
"""NIS quantile above which the update first searches a grid over the bounds."""
RATE_STEP = 0.01
"""Relative change of the counted rate for the central difference ∂h/∂rate."""
FLOOR_FRACTION = 0.01
"""Observations below this fraction of expectedObservations count as zero (noise floor)."""
NOISE_MEMORY = 0.8
"""Each step the learned observation-noise scale closes 1 − NOISE_MEMORY of its log gap (about 5 steps)."""


@dataclass(frozen=True)
class StepRecord:
    """What one step of one filter did. State figures are in natural units."""

    step: int
    state_names: tuple[str, ...]
    observation_names: tuple[str, ...]
    state: tuple[float, ...]
    std: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    predicted: tuple[float, ...] | None
    """h(x_prior; env), the prediction made before this step's update."""
    observed: tuple[float, ...] | None
    innovation: tuple[float, ...] | None
    nis: float | None
    accepted: bool
    reason: str | None = None
    """Why the update was skipped or rejected."""
    inflation: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The stable jsonl layout of ``python -m tuner``."""
        out: dict[str, Any] = {"step": self.step}
        for name, value, sd in zip(self.state_names, self.state, self.std, strict=True):
            out[name] = value
            out[f"{name}_std"] = sd
        out["observed"] = _named(self.observation_names, self.observed)
        out["predicted"] = _named(self.observation_names, self.predicted)
        out["nis"] = self.nis
        out["accepted"] = self.accepted
        out["reason"] = self.reason
        return out


def _named(names: tuple[str, ...], values: tuple[float, ...] | None) -> dict[str, float | None]:
    if values is None:
        return dict.fromkeys(names)
    return {n: (v if math.isfinite(v) else None) for n, v in zip(names, values, strict=True)}


@dataclass(frozen=True)
class BankStep:
    """One vectorized step of a bank; entries of rows that were not stepped are NaN/False."""

    predicted: Array
    observed: Array
    innovation: Array
    nis: Array
    accepted: NDArray[np.bool_]
    inflation: Array
    reasons: list[str | None]


class FilterBank:
    """N independent filters with one configuration and one model, stepped together."""

    def __init__(self, config: FilterConfig, model: ObservationModel = QUEUE_MODEL, size: int = 1) -> None:
        n = len(config.init_state)
        if n != len(model.state_names):
            raise ValueError(f"config has {n} state entries, model {len(model.state_names)}")
        self.config = config
        self.model = model
        self.log_space = config.state_space == "log"
        self._change = np.asarray(config.percent_change)
        self._max_variance: Array | None = None
        if config.bounded_state:
            lo, hi = np.asarray(config.min_state), np.asarray(config.max_state)
            self._lower, self._upper = self._to_u(lo), self._to_u(hi)
            self._max_variance = ((self._upper - self._lower) / 4.0) ** 2
        else:
            self._lower = self._upper = None
        m = len(model.observation_names)
        self._gate = float(chi2.ppf(config.nis_gate, m)) if config.nis_gate is not None else None
        self._inflate_above = float(chi2.ppf(INFLATE_PROBABILITY, m)) if config.adaptive else None
        self._inflate_target = float(chi2.ppf(INFLATE_TARGET, m)) if config.adaptive else None
        self._floor = np.asarray(config.expected_observations)
        self._noise_s = config.noise_scale
        self._grid_above = float(chi2.ppf(GRID_PROBABILITY, m)) if config.adaptive else None
        self._trust_below = float(chi2.ppf(TRUST_PROBABILITY, m))
        self.u = np.empty((0, n))
        self.P = np.empty((0, n, n))
        self.noise_log_scale = np.empty((0, m))  # log of the learned multiplier of R, per observation
        self.steps = np.empty(0, dtype=np.int64)
        self.accepted_count = np.empty(0, dtype=np.int64)
        self.rejected_count = np.empty(0, dtype=np.int64)
        self.skipped_count = np.empty(0, dtype=np.int64)
        self.streak = np.empty(0, dtype=np.int64)  # consecutive gated steps
        self.add(size)

    # --- coordinates -------------------------------------------------------------
    def _to_u(self, x: Array) -> Array:
        return np.log(x) if self.log_space else np.asarray(x, dtype=float)

    def _to_x(self, u: Array) -> Array:
        return np.exp(u) if self.log_space else u

    def _process_noise(self, u: Array) -> Array:
        """Q per filter (N, n, n): the seed's (percentChange·x)², times driftFraction²."""
        change = self.config.drift_fraction * self._change
        var = np.broadcast_to(change**2, u.shape) if self.log_space else (change * u) ** 2
        return var[..., :, None] * np.eye(u.shape[-1])

    def _initial_covariance(self, u: Array) -> Array:
        var = np.broadcast_to(self._change**2, u.shape) if self.log_space else (self._change * u) ** 2
        return var[..., :, None] * np.eye(u.shape[-1])

    def _base_noise(self, z_hat: Array, z: Array) -> Array:
        """Configured observation variances (…, m): σ_i = s·(min(|ẑ_i|, |z_i|) + floor_i).

        Relative to the smaller of prediction and observation, so a wild prediction
        does not make itself look plausible by inflating its own noise.
        """
        if not self.config.relative_noise:
            return np.broadcast_to((self._noise_s * self._floor) ** 2, np.shape(z_hat)).copy()
        size = np.fmin(np.abs(z_hat), np.abs(z))  # fmin: a NaN prediction falls back to z
        return (self._noise_s * (size + FLOOR_FRACTION * self._floor)) ** 2

    def _rate_noise(self, u: Array, env: Any) -> Array | None:
        """Observation variance (N, m) that the counting noise of the arrival rate causes, or None.

        A rate counted over w minutes is a Poisson count over w: var(rpm) = rpm / w. Carried
        through h by a central difference at the prior, (∂h/∂rpm)²·var(rpm). It matters most
        near saturation, where h is steepest in the load and one window's count says least;
        with exact rates (a simulation's analytic windows) leave rateWindowMinutes at 0.
        """
        field = self.model.counted_rate
        minutes = self.config.rate_window_minutes
        if not minutes > 0 or field is None or not dataclasses.is_dataclass(env):
            return None
        rate = np.broadcast_to(np.asarray(getattr(env, field), dtype=float), u.shape[:1])
        x = self._to_x(u)
        up = dataclasses.replace(env, **{field: rate * (1 + RATE_STEP)})
        down = dataclasses.replace(env, **{field: rate * (1 - RATE_STEP)})
        with np.errstate(invalid="ignore", over="ignore"):
            dz = (self.model.predict(x, up) - self.model.predict(x, down)) / (2 * RATE_STEP * rate)[:, None]
            extra = dz**2 * (rate / minutes)[:, None]
        return np.nan_to_num(extra, nan=0.0, posinf=np.finfo(float).max)

    def noise_scale_factor(self, rows: Any = slice(None)) -> Array:
        """Learned multiplier (≥ 1) of the configured observation variance, (N, m)."""
        return np.exp(self.noise_log_scale[rows])

    # --- size --------------------------------------------------------------------
    def __len__(self) -> int:
        return self.u.shape[0]

    def add(self, count: int = 1) -> range:
        """Append filters at the initial state; returns their row indices."""
        start = len(self)
        u0 = np.tile(self._to_u(np.asarray(self.config.init_state, dtype=float)), (count, 1))
        self.u = np.concatenate([self.u, u0])
        self.P = np.concatenate([self.P, self._initial_covariance(u0)])
        m = self.noise_log_scale.shape[1]
        self.noise_log_scale = np.concatenate([self.noise_log_scale, np.zeros((count, m))])
        for name in self._ROW_ARRAYS[3:]:
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(count, dtype=np.int64)]))
        return range(start, start + count)

    def reset(self, rows: Any = slice(None)) -> None:
        u0 = self._to_u(np.asarray(self.config.init_state, dtype=float))
        self.u[rows] = u0
        self.P[rows] = self._initial_covariance(self.u[rows])
        for name in self._ROW_ARRAYS[2:]:
            getattr(self, name)[rows] = 0

    def keep(self, rows: NDArray[np.bool_]) -> None:
        """Drop every filter whose entry in the mask ``rows`` is False; the others keep their order."""
        for name in self._ROW_ARRAYS:
            setattr(self, name, getattr(self, name)[rows])

    _ROW_ARRAYS = (
        "u",
        "P",
        "noise_log_scale",
        "steps",
        "accepted_count",
        "rejected_count",
        "skipped_count",
        "streak",
    )

    def snapshot(self, rows: Any = slice(None)) -> dict[str, np.ndarray]:
        """Copies of every per-filter array for ``rows``: enough to restore the filters exactly."""
        return {name: getattr(self, name)[rows].copy() for name in self._ROW_ARRAYS}

    def restore(self, rows: Any, snapshot: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`snapshot` returned (rows must exist: see :meth:`add`)."""
        for name in self._ROW_ARRAYS:
            getattr(self, name)[rows] = snapshot[name]

    # --- reading -----------------------------------------------------------------
    @property
    def state(self) -> Array:
        """x in natural units, (N, n)."""
        return self._to_x(self.u)

    @property
    def covariance(self) -> Array:
        """Cov(x) in natural units (delta method in log space), (N, n, n)."""
        if not self.log_space:
            return self.P.copy()
        x = self.state
        return self.P * x[:, :, None] * x[:, None, :]

    @property
    def std(self) -> Array:
        return np.sqrt(np.diagonal(self.covariance, axis1=-2, axis2=-1))

    # --- stepping ----------------------------------------------------------------
    def step(self, env: Any, rows: NDArray[np.int64] | None = None) -> BankStep:
        """Step the filters in ``rows`` (default: all) with one environment each.

        ``env`` holds one entry per stepped row (fields broadcast over them).
        """
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        k = rows.size
        m = len(self.model.observation_names)
        reasons = self.model.invalid_reasons(env)
        if len(reasons) == 1 and k > 1:
            reasons = reasons * k
        valid = np.array([r is None for r in reasons], dtype=bool)
        out_pred = np.full((k, m), np.nan)
        out_inn = np.full((k, m), np.nan)
        out_nis = np.full(k, np.nan)
        out_phi = np.ones(k)
        accepted = np.zeros(k, dtype=bool)
        observed = np.full((k, m), np.nan)
        self.steps[rows] += 1
        self.skipped_count[rows[~valid]] += 1

        if valid.any():
            vidx = np.flatnonzero(valid)
            sub_env = _take(env, vidx, k)
            z = np.broadcast_to(self.model.observe(sub_env), (vidx.size, m)).astype(float)
            observed[vidx] = z
            r = rows[vidx]
            u_prev, P_prev = self.u[r], self.P[r]
            P_prior = P_prev + self._process_noise(u_prev)

            def predict_u(u: Array) -> Array:
                return self.model.predict(self._to_x(u), sub_env)

            factor = self.noise_scale_factor(r) if self.config.adaptive else np.ones((r.size, m))

            lower = upper = None
            if self._lower is not None:
                lower = np.broadcast_to(self._lower, u_prev.shape)
                upper = np.broadcast_to(self._upper, u_prev.shape)

            def predict_rows(idx: NDArray[np.int64]) -> ekf.PredictU:
                rows_env = _take(sub_env, idx, vidx.size)
                return lambda u: self.model.predict(self._to_x(u), rows_env)

            res = ekf.update(
                predict_u,
                u_prev,
                P_prior,
                z,
                self._base_noise,
                noise_factor=factor,
                noise_extra=self._rate_noise(u_prev, sub_env),
                iterations=self.config.iterations,
                max_variance=self._max_variance,
                inflate_above=self._inflate_above,
                inflate_target=self._inflate_target,
                lower=lower,
                upper=upper,
                grid_above=self._grid_above,
                grid_rows=self.accepted_count[r] < GRID_STEPS,
                predict_rows=predict_rows,
                trust_below=self._trust_below,
            )
            ok = np.ones(vidx.size, dtype=bool)
            if self._gate is not None:
                gating = (self.accepted_count[r] >= self.config.gate_warmup) & (self.streak[r] < GATE_PATIENCE)
                ok = ~(gating & (res.nis > self._gate))
            self.u[r] = np.where(ok[:, None], res.u, u_prev)
            self.P[r] = np.where(ok[:, None, None], self._capped(res.P), P_prev)
            if self.config.adaptive:
                # An observation whose innovations stay larger than the update allowed for,
                # even after inflation, is one the model cannot follow: learn a larger R
                # for it. The ratio is measured against the R already learned, so the log
                # scale integrates it (each step closes 1 − NOISE_MEMORY of the gap in log
                # terms); never below 1. A steady offset ends up as a typical miss; a random
                # miss settles at about 0.28 of its variance (the log of a chi-square averages
                # −1.27): averaging the ratio itself instead learned a bigger R but made the
                # filter sluggish (seed demo phase 2: 12 % instead of 1.8 % α error).
                ratio = np.maximum(res.innovation**2 / res.innovation_var, 1e-12)
                updated = self.noise_log_scale[r] + (1 - NOISE_MEMORY) * np.log(ratio)
                self.noise_log_scale[r] = np.where(ok[:, None], np.maximum(updated, 0.0), self.noise_log_scale[r])
            self.accepted_count[r[ok]] += 1
            self.rejected_count[r[~ok]] += 1
            self.streak[r] = np.where(ok, 0, self.streak[r] + 1)
            out_pred[vidx], out_inn[vidx], out_nis[vidx] = res.predicted, res.innovation, res.nis
            out_phi[vidx] = res.inflation
            accepted[vidx] = ok
            for j in np.flatnonzero(~ok):
                reasons[vidx[j]] = f"rejected: NIS {res.nis[j]:.3g} above the gate {self._gate:.3g}"
        reasons = [None if a else (r or "skipped") for a, r in zip(accepted, reasons, strict=True)]
        for i in np.flatnonzero(~valid):
            reasons[i] = f"skipped: {reasons[i]}" if not str(reasons[i]).startswith("skipped") else reasons[i]
        return BankStep(out_pred, observed, out_inn, out_nis, accepted, out_phi, reasons)

    def _capped(self, P: Array) -> Array:
        """Keep each variance within the prior width the bounds allow (log space: (log range/4)²)."""
        if self._max_variance is None:
            return P
        cap = self._max_variance
        d = np.diagonal(P, axis1=-2, axis2=-1)
        scale = np.sqrt(np.minimum(1.0, cap / np.maximum(d, 1e-300)))
        return P * scale[..., :, None] * scale[..., None, :]

    def record(self, row: int, result: BankStep, index: int) -> StepRecord:
        """The StepRecord of filter ``row`` for the ``index``-th entry of a BankStep."""
        cov = self.covariance[row]
        ok = bool(result.accepted[index])
        predicted = result.predicted[index]
        has_pred = bool(np.isfinite(predicted).all())
        return StepRecord(
            step=int(self.steps[row]),
            state_names=self.model.state_names,
            observation_names=self.model.observation_names,
            state=tuple(float(v) for v in self.state[row]),
            std=tuple(float(v) for v in np.sqrt(np.diag(cov))),
            covariance=tuple(tuple(float(v) for v in r) for r in cov),
            predicted=tuple(float(v) for v in predicted) if has_pred else None,
            observed=tuple(float(v) for v in result.observed[index]),
            innovation=tuple(float(v) for v in result.innovation[index]) if has_pred else None,
            nis=float(result.nis[index]) if has_pred else None,
            accepted=ok,
            reason=result.reasons[index],
            inflation=float(result.inflation[index]),
        )


def _take(env: Any, idx: NDArray[np.int64], size: int) -> Any:
    """The entries ``idx`` of an environment whose fields hold ``size`` entries (or one)."""
    if idx.size == size:
        return env
    if not dataclasses.is_dataclass(env):
        raise TypeError("a partial step needs a dataclass environment")
    changes = {}
    for f in dataclasses.fields(env):
        value = np.asarray(getattr(env, f.name))
        if value.ndim >= 1 and value.shape[0] == size:
            changes[f.name] = value[idx]
    return dataclasses.replace(env, **changes)


class Tuner:
    """One server's filter: ``step(env)`` → :class:`StepRecord`."""

    def __init__(self, config: FilterConfig, model: ObservationModel = QUEUE_MODEL) -> None:
        self._bank = FilterBank(config, model, size=1)

    @property
    def config(self) -> FilterConfig:
        return self._bank.config

    @property
    def model(self) -> ObservationModel:
        return self._bank.model

    @property
    def state(self) -> NDArray[np.float64]:
        return self._bank.state[0].copy()

    @property
    def std(self) -> NDArray[np.float64]:
        return self._bank.std[0]

    @property
    def covariance(self) -> NDArray[np.float64]:
        return self._bank.covariance[0]

    @property
    def steps(self) -> int:
        return int(self._bank.steps[0])

    def step(self, env: Any) -> StepRecord:
        result = self._bank.step(env, np.array([0]))
        return self._bank.record(0, result, 0)

    def reset(self) -> None:
        self._bank.reset()

    def predict(self, env: Any) -> NDArray[np.float64]:
        """The model's prediction for ``env`` at the current state."""
        return self.model.predict(self._bank.state[0], env)
