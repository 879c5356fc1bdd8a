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

JACOBIAN_STEP = 1e-6
MAX_INFLATION = 1e6


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


def update(
    predict_u: PredictU,
    u_prior: Array,
    P_prior: Array,
    z: Array,
    noise: Callable[[Array], Array],
    *,
    iterations: int = 1,
    inflate_above: float | None = None,
    lower: Array | None = None,
    upper: Array | None = None,
) -> StepArrays:
    """Measurement update of a stack of filters whose prior is (u_prior, P_prior).

    ``noise(z_pred)`` returns R (N, m, m, diagonal) for the predicted observations;
    ``inflate_above``: NIS level above which P⁻ is inflated (None: never);
    ``lower``/``upper``: bounds on u (N, n) or None.
    """
    n = u_prior.shape[-1]
    eye = np.eye(n)
    z_pred, H = jacobian(predict_u, u_prior)
    R = noise(z_pred)
    y0 = z - z_pred
    HPH = H @ P_prior @ np.swapaxes(H, -1, -2)
    nis = nis_of(y0, HPH + R)

    phi = np.ones(u_prior.shape[0])
    if inflate_above is not None:
        trigger = nis > inflate_above
        if trigger.any():
            phi = np.where(trigger, inflation_factor(y0, HPH, R, float(z.shape[-1])), 1.0)
            P_prior = P_prior * phi[:, None, None]

    u_i, z_i, H_i = u_prior, z_pred, H
    for i in range(iterations):
        if i > 0:
            z_i, H_i = jacobian(predict_u, u_i)
        Ht = np.swapaxes(H_i, -1, -2)
        S = H_i @ P_prior @ Ht + R
        # Kᵀ = S⁻¹ H P (S and P symmetric), so K = (S⁻¹ H P)ᵀ.
        K = np.swapaxes(np.linalg.solve(S, H_i @ P_prior), -1, -2)
        y = z - z_i - np.einsum("...ij,...j->...i", H_i, u_prior - u_i)
        u_next = u_prior + np.einsum("...ij,...j->...i", K, y)
        if lower is not None and upper is not None:
            u_next = np.clip(u_next, lower, upper)
        u_i = u_next

    A = eye - K @ H_i
    P_post = A @ P_prior @ np.swapaxes(A, -1, -2) + K @ R @ np.swapaxes(K, -1, -2)
    P_post = _symmetric(P_post)

    return StepArrays(u=u_i, P=P_post, predicted=z_pred, innovation=y0, nis=nis, inflation=phi)
