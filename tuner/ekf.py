"""Extended Kalman filter steps, pure and vectorized over many servers.

Arrays carry one server per leading index: state ``u`` (N, n), covariance ``P``
(N, n, n), observation ``z`` (N, m). The filter works in *filter coordinates* u: the
state itself ("linear") or its logarithm ("log"), where a random walk of a fixed
variance is a fixed percentage change and positivity comes for free.

One step (predict in ``tuner.py``, then :func:`update`):
1. predict: random walk, P⁻ = P + Q;
2. linearize h at the prior by forward differences (one vectorized call of h for
   the base point and the n shifted points);
3. optionally inflate P⁻ when the innovation is too large for it (the state moved:
   start-up or a regime change), by the smallest factor φ ≥ 1 that makes the NIS
   equal to its expectation m;
4. update with Gauss-Newton iterations (iterated EKF; one iteration is the plain EKF),
   Joseph-form covariance, ``solve`` instead of inverses.
Gating and bookkeeping live in ``tuner.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
PredictU = Callable[[Array], Array]
"""h in filter coordinates: u (..., N, n) → z (..., N, m)."""
Variance = Callable[[Array, Array], Array]
"""Observation variances (..., N, m) for predictions ẑ (..., N, m) and observations z (N, m)."""

JACOBIAN_STEP = 1e-6
MAX_INFLATION = 1e6
EXPLAINABLE = 0.01
"""Inflation only answers misfits along directions where H P Hᵀ is at least this share of R."""
LINEARITY_TOLERANCE = 0.1
"""A Gauss-Newton step is final once h at its target misses the linear prediction by less than this many σ."""
GRID_CHUNK_ROWS = 256
"""Rows searched together by :func:`grid_start` (bounds its memory: G·rows·B floats)."""


@dataclass(frozen=True)
class StepArrays:
    """Everything one vectorized step produced, one entry per server."""

    u: Array
    """Posterior state in filter coordinates, (N, n)."""
    P: Array
    """Posterior covariance in filter coordinates, (N, n, n)."""
    predicted: Array
    """h at the prior state, before the update, (N, m)."""
    innovation: Array
    """z − predicted, (N, m)."""
    nis: Array
    """Normalized innovation squared yᵀS⁻¹y with the un-inflated prior, (N,)."""
    inflation: Array
    """Factor applied to P⁻ before the update (1 = none), (N,)."""
    innovation_var: Array
    """diag(φ·H P⁻ Hᵀ + R): the variance of each innovation the update allowed for, (N, m)."""


def jacobian(predict_u: PredictU, u: Array) -> tuple[Array, Array]:
    """h(u) and its Jacobian by forward differences: (N, m) and (N, m, n)."""
    n = u.shape[-1]
    delta = JACOBIAN_STEP * np.maximum(1.0, np.abs(u))  # (N, n)
    shifts = np.eye(n)[:, None, :] * delta[None, :, :]  # (n, N, n)
    points = np.concatenate([u[None], u[None] + shifts], axis=0)  # (n+1, N, n)
    z = predict_u(points)  # (n+1, N, m)
    base = z[0]
    H = (z[1:] - base[None]) / delta.T[:, :, None]  # (n, N, m)
    return base, np.transpose(H, (1, 2, 0))


def _symmetric(P: Array) -> Array:
    return 0.5 * (P + np.swapaxes(P, -1, -2))


def nis_of(y: Array, S: Array) -> Array:
    """yᵀ S⁻¹ y for stacks of innovations and innovation covariances."""
    return np.einsum("...i,...i->...", y, np.linalg.solve(S, y[..., None])[..., 0])


def inflation_factor(y: Array, HPH: Array, R: Array, target: float) -> Array:
    """Smallest φ ≥ 1 with yᵀ(φ·HPHᵀ + R)⁻¹y ≤ target, capped at MAX_INFLATION.

    In the basis where R is white and HPHᵀ diagonal (eigenvalues d), the NIS is
    Σ w²/(φ·d + 1), convex and decreasing in φ: Newton from φ = 1 converges from below.
    """
    r_isqrt = 1.0 / np.sqrt(np.diagonal(R, axis1=-2, axis2=-1))  # R is diagonal
    A = HPH * r_isqrt[..., :, None] * r_isqrt[..., None, :]
    d, V = np.linalg.eigh(A)
    d = np.maximum(d, 0.0)
    w2 = np.einsum("...ji,...j->...i", V, y * r_isqrt) ** 2
    # A misfit where the state's uncertainty is negligible beside the noise (d < EXPLAINABLE)
    # is not evidence that the state moved: inflating P cannot explain it (the learned R can).
    w2 = np.where(d >= EXPLAINABLE, w2, 0.0)
    phi = np.ones(y.shape[:-1])
    for _ in range(60):
        denom = phi[..., None] * d + 1.0
        f = (w2 / denom).sum(-1) - target
        active = f > 1e-9 * target
        if not active.any():
            break
        df = -(w2 * d / denom**2).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(active & (df < 0), -f / df, 0.0)
        phi = np.minimum(phi + step, MAX_INFLATION)
    return phi


def grid_start(
    predict_u: PredictU,
    u_prior: Array,
    P_prior: Array,
    z: Array,
    variance: Variance,
    noise: Array,
    lower: Array,
    upper: Array,
    points_per_axis: int,
    candidates: int = 4,
) -> Array:
    """Best starting points for the Gauss-Newton iterations on a grid over the bounds.

    A global look before the local iterations, for priors far from the data (start-up,
    large jumps). On a grid over the box [lower, upper] (plus the prior itself) it
    minimizes a coarse MAP objective: the misfit is measured as log((z + f)/(ẑ + f)),
    f being the noise floor, with a tolerance of one grid cell's worth of relative
    change, so that a sharp likelihood cannot hide between grid points. Returns the
    prior and the best ``candidates − 1`` grid points, (candidates, N, n).
    """
    N, n = u_prior.shape
    axes = np.linspace(0.0, 1.0, points_per_axis)
    unit = np.stack(np.meshgrid(*([axes] * n), indexing="ij"), axis=-1).reshape(-1, n)  # (G, n)
    grid = lower[None] + unit[:, None, :] * (upper - lower)[None]  # (G, N, n)
    grid = np.concatenate([u_prior[None], grid], axis=0)
    zg = predict_u(grid)
    floor = np.sqrt(_scaled(variance(np.zeros_like(z), z), noise))  # σ at ẑ = 0: the absolute floor
    tolerance = np.max((upper - lower) / (points_per_axis - 1), axis=-1)[:, None]  # one cell, in log units
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        misfit = np.log((np.abs(z) + floor) / (np.abs(zg) + floor))
        fit = ((misfit / tolerance) ** 2).sum(-1)
    d = grid - u_prior[None]
    prior = np.einsum(
        "gni,gni->gn", d, np.linalg.solve(np.broadcast_to(P_prior, d.shape[:1] + P_prior.shape), d[..., None])[..., 0]
    )
    cost = np.where(np.isfinite(fit), fit + prior, np.inf)
    best = np.argsort(cost, axis=0)[:candidates]  # (C, N)
    best[0] = 0  # always keep the prior itself as a candidate
    best[1:] = np.argsort(np.where(np.arange(grid.shape[0])[:, None] == 0, np.inf, cost), axis=0)[: candidates - 1]
    return grid[best, np.arange(N)[None, :]]  # (C, N, n)


def map_cost(
    z_hat: Array, u: Array, z: Array, u_prior: Array, P_prior: Array, variance: Variance, noise: Array
) -> Array:
    """(z − ẑ)ᵀR⁻¹(z − ẑ) + (u − u⁻)ᵀP⁻¹(u − u⁻); leading axes of z_hat/u broadcast over (N,)."""
    with np.errstate(invalid="ignore", over="ignore"):
        fit = ((z - z_hat) ** 2 / (_scaled(variance(z_hat, z), noise))).sum(-1)
    d = u - u_prior
    P = np.broadcast_to(P_prior, d.shape[:-1] + P_prior.shape[-2:])
    prior = np.einsum("...i,...i->...", d, np.linalg.solve(P, d[..., None])[..., 0])
    return np.where(np.isfinite(fit), fit + prior, np.inf)


def update(
    predict_u: PredictU,
    u_prior: Array,
    P_prior: Array,
    z: Array,
    variance: Variance,
    *,
    noise_factor: Array | None = None,
    noise_extra: Array | None = None,
    iterations: int = 1,
    inflate_above: float | None = None,
    inflate_target: float | None = None,
    max_variance: Array | None = None,
    lower: Array | None = None,
    upper: Array | None = None,
    grid_above: float | None = None,
    grid_points: int = 15,
    grid_rows: NDArray[np.bool_] | None = None,
    predict_rows: Callable[[NDArray[np.int64]], PredictU] | None = None,
    trust_below: float | None = None,
) -> StepArrays:
    """Measurement update of a stack of filters whose prior is (u_prior, P_prior).

    ``variance(ẑ, z)`` gives the observation variances (…, m), R = diag of it times
    ``noise_factor`` (N, m; default 1) plus ``noise_extra`` (N, m; default 0);
    ``iterations``: Gauss-Newton iterations (1 = plain EKF), see :func:`gauss_newton`;
    ``inflate_above``: NIS level above which P⁻ is inflated (None: never), by the least
    factor that brings the NIS down to ``inflate_target`` (default: ``inflate_above``),
    keeping each variance below ``max_variance`` (n,) when given;
    ``lower``/``upper``: bounds on u (N, n) or None;
    ``grid_above``: NIS level above which the iterations start from :func:`grid_start`
    (needs bounds; only in ``grid_rows`` when given);
    ``trust_below``: NIS level below which the first Gauss-Newton step is taken without
    checking the linearization (None: always check); ``predict_rows(idx)``: h for the rows idx only (default: evaluate
    all rows and keep those).
    """
    N, n = u_prior.shape
    eye = np.eye(n)
    noise = np.stack(
        [
            np.ones_like(z) if noise_factor is None else noise_factor,
            np.zeros_like(z) if noise_extra is None else noise_extra,
        ],
        axis=-1,
    )  # (N, m, 2): rows are indexed together with z wherever a subset of filters is worked on
    if predict_rows is None:
        predict_rows = _all_rows(predict_u, u_prior)
    z_pred, H = jacobian(predict_u, u_prior)
    R = _diag(_scaled(variance(z_pred, z), noise))
    y0 = z - z_pred
    HPH = H @ P_prior @ np.swapaxes(H, -1, -2)
    nis = nis_of(y0, HPH + R)

    phi = np.ones(N)
    if inflate_above is not None:
        trigger = nis > inflate_above
        if trigger.any():
            phi = np.where(trigger, inflation_factor(y0, HPH, R, inflate_target or inflate_above), 1.0)
            if max_variance is not None:
                room = np.min(max_variance / np.diagonal(P_prior, axis1=-2, axis2=-1), axis=-1)
                phi = np.clip(phi, 1.0, np.maximum(room, 1.0))
            P_prior = P_prior * phi[:, None, None]

    u_i, z_i, H_i = u_prior, z_pred, H
    if grid_above is not None and lower is not None and upper is not None:
        far = nis > grid_above
        if grid_rows is not None:
            far &= grid_rows
        if far.any():
            # Multi-start: Gauss-Newton from the prior and the best grid points, keep the best.
            idx = np.flatnonzero(far)
            # The grid costs G evaluations of h per row: search it in chunks of rows.
            starts = np.concatenate(
                [
                    grid_start(
                        predict_rows(chunk),
                        u_prior[chunk],
                        P_prior[chunk],
                        z[chunk],
                        variance,
                        noise[chunk],
                        lower[chunk],
                        upper[chunk],
                        grid_points,
                    )
                    for chunk in np.array_split(idx, max(1, idx.size // GRID_CHUNK_ROWS))
                ],
                axis=1,
            )
            C = starts.shape[0]
            rep = np.tile(idx, C)  # candidate c of far row j sits at c·len(idx) + j
            u0 = starts.reshape(-1, n)
            z0, H0 = jacobian(predict_rows(rep), u0)
            uc, _, _, _ = gauss_newton(
                lambda sub: predict_rows(rep[sub]),
                u0,
                z0,
                H0,
                u_prior[rep],
                P_prior[rep],
                z[rep],
                variance,
                noise[rep],
                lower[rep],
                upper[rep],
                max(iterations, 4),
            )
            zc = predict_rows(rep)(uc)
            cost = map_cost(zc, uc, z[rep], u_prior[rep], P_prior[rep], variance, noise[rep]).reshape(C, -1)
            best = np.argmin(np.where(np.isfinite(cost), cost, np.inf), axis=0)
            u_i = u_prior.copy()
            u_i[idx] = uc.reshape(C, -1, n)[best, np.arange(idx.size)]
            z_i, H_i = jacobian(predict_u, u_i)
    if iterations <= 1:
        # The plain EKF: one linear step from the prior.
        K, R_i = _gain(H_i, P_prior, R)
        u_post = u_i + np.einsum("...ij,...j->...i", K, z - z_i)
        if lower is not None and upper is not None:
            u_post = np.clip(u_post, lower, upper)
    else:
        # An unsurprising innovation (NIS within its typical range, and no multi-start)
        # is a small step where the linearization holds: the plain EKF step is taken as is.
        trusted = (nis <= trust_below) & (u_i == u_prior).all(axis=-1) if trust_below is not None else None
        u_post, z_i, H_i, K = gauss_newton(
            predict_rows, u_i, z_i, H_i, u_prior, P_prior, z, variance, noise, lower, upper, iterations, trusted
        )
        R_i = _diag(_scaled(variance(z_i, z), noise))
    A = eye - K @ H_i
    P_post = _symmetric(A @ P_prior @ np.swapaxes(A, -1, -2) + K @ R_i @ np.swapaxes(K, -1, -2))

    return StepArrays(
        u=u_post,
        P=P_post,
        predicted=z_pred,
        innovation=y0,
        nis=nis,
        inflation=phi,
        innovation_var=phi[:, None] * np.diagonal(HPH, axis1=-2, axis2=-1) + np.diagonal(R, axis1=-2, axis2=-1),
    )


def gauss_newton(
    predict_rows: Callable[[NDArray[np.int64]], PredictU],
    u: Array,
    z_u: Array,
    H: Array,
    u_prior: Array,
    P_prior: Array,
    z: Array,
    variance: Variance,
    noise: Array,
    lower: Array | None,
    upper: Array | None,
    iterations: int,
    trusted: NDArray[np.bool_] | None = None,
) -> tuple[Array, Array, Array, Array]:
    """Iterated-EKF steps from ``u`` (linearized as z_u, H) towards the MAP estimate.

    Returns (u_post, z_lin, H_lin, K): the estimate, the last linearization (h and its
    Jacobian) and the Kalman gain there, from which the covariance follows. Each filter runs on its own:
    once h at its Gauss-Newton target matches the linearization (see
    LINEARITY_TOLERANCE) and the MAP cost did not rise, it takes that step and stops;
    otherwise the step is backtracked (halved) until the MAP cost does not increase, h
    is linearized again at the new point, and so on, ``iterations`` times at most. Only running filters evaluate h
    (``predict_rows(idx)`` is h for the rows idx). ``trusted`` rows take their first
    step without the check.
    """
    u, z_u, H = u.copy(), z_u.copy(), H.copy()
    u_post = u.copy()
    gain = np.zeros(u.shape + z.shape[-1:])
    active = np.arange(u.shape[0])
    cost = np.full(u.shape[0], np.nan)  # MAP cost at u, computed where a check needs it
    for i in range(iterations):
        a = active
        K, _ = _gain(H[a], P_prior[a], _diag(_scaled(variance(z_u[a], z[a]), noise[a])))
        gain[a] = K
        y = z[a] - z_u[a] - np.einsum("...ij,...j->...i", H[a], u_prior[a] - u[a])
        step = u_prior[a] + np.einsum("...ij,...j->...i", K, y) - u[a]
        if lower is not None and upper is not None:
            step = _within_box(u[a], step, lower[a], upper[a])
        target = u[a] + step
        # The step is final when h at the target is what the linearization promised
        # (within LINEARITY_TOLERANCE of each observation's σ) and the MAP cost did not
        # rise; otherwise it is backtracked and h linearized again where it lands.
        done = np.zeros(a.size, dtype=bool) if trusted is None or i > 0 else trusted[a].copy()
        c = np.flatnonzero(~done)
        if c.size:
            rows = a[c]
            unknown = rows[np.isnan(cost[rows])]
            if unknown.size:
                cost[unknown] = map_cost(
                    z_u[unknown], u[unknown], z[unknown], u_prior[unknown], P_prior[unknown], variance, noise[unknown]
                )
            z_t = predict_rows(rows)(target[c])
            promised = z_u[rows] + np.einsum("...ij,...j->...i", H[rows], step[c])
            sigma = np.sqrt(_scaled(variance(z_u[rows], z[rows]), noise[rows]))
            with np.errstate(invalid="ignore"):
                linear = (np.abs(z_t - promised) <= LINEARITY_TOLERANCE * sigma).all(axis=-1)
            cost_t = map_cost(z_t, target[c], z[rows], u_prior[rows], P_prior[rows], variance, noise[rows])
            done[c] = linear & (cost_t <= cost[rows])
        if i == iterations - 1:
            # Out of iterations: the line-searched point stands where the step is not small.
            u_post[a[~done]] = u[a[~done]]
            u_post[a[done]] = target[done]
            break
        u_post[a[done]] = target[done]
        active, step = a[~done], step[~done]
        if active.size == 0:
            break
        a = active
        predict = predict_rows(a)
        t = np.ones(a.size)
        for _ in range(8):
            u_try = u[a] + t[:, None] * step
            z_try = predict(u_try)
            cost_try = map_cost(z_try, u_try, z[a], u_prior[a], P_prior[a], variance, noise[a])
            worse = ~(cost_try <= cost[a])
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        moved = ~worse
        u[a] = np.where(moved[:, None], u_try, u[a])
        cost[a] = np.where(moved, cost_try, cost[a])
        z_u[a], H[a] = jacobian(predict, u[a])
    return u_post, z_u, H, gain


def _within_box(u: Array, step: Array, lower: Array, upper: Array) -> Array:
    """The part of ``step`` from ``u`` that stays in [lower, upper], keeping its direction.

    Components pushing out of a bound ``u`` already sits on are dropped; the rest is
    shortened (not clipped per component, which would turn a descent direction of the MAP
    cost into an arbitrary one) until it reaches the first bound. A ``u`` outside the box
    (a state restored under narrower bounds) is first brought back into it.
    """
    inside = np.clip(u, lower, upper)
    step = np.where(((inside <= lower) & (step < 0)) | ((inside >= upper) & (step > 0)), 0.0, step)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(step > 0, (upper - inside) / step, np.where(step < 0, (lower - inside) / step, np.inf))
    scale = np.minimum(1.0, room.min(axis=-1))
    return (inside - u) + step * scale[..., None]


def _scaled(var: Array, noise: Array) -> Array:
    """Observation variances with each filter's learned scale and added variance, ``noise`` (…, m, 2)."""
    return var * noise[..., 0] + noise[..., 1]


def _all_rows(predict_u: PredictU, u: Array) -> Callable[[NDArray[np.int64]], PredictU]:
    """``predict_rows`` for an h that only takes every row: evaluate all, keep some."""

    def rows(idx: NDArray[np.int64]) -> PredictU:
        def predict(v: Array) -> Array:
            full = np.broadcast_to(u, v.shape[:-2] + u.shape).copy()
            full[..., idx, :] = v
            return predict_u(full)[..., idx, :]

        return predict

    return rows


def _gain(H: Array, P: Array, R: Array) -> tuple[Array, Array]:
    """Kalman gain K = P Hᵀ S⁻¹ via solve (Kᵀ = S⁻¹ H P since S and P are symmetric)."""
    S = H @ P @ np.swapaxes(H, -1, -2) + R
    return np.swapaxes(np.linalg.solve(S, H @ P), -1, -2), R


def _diag(v: Array) -> Array:
    return v[..., :, None] * np.eye(v.shape[-1])
