"""Cramér–Rao bound for (alpha, beta) from noisy queue observations.

For observations z_k = h(θ; env_k)·(1 + ε_k) with ε uniform on ±noise (variance
noise²/3), the Fisher information of log θ is Σ_k J_kᵀ R_k⁻¹ J_k with
J = ∂h/∂log θ; the bound on the relative standard deviation of θ is the square root
of the diagonal of its inverse.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tuner import ekf
from tuner.environment import Environment
from tuner.model import predict_queue


def relative_crb(alpha: float, beta: float, windows: list[Environment], noise: float) -> NDArray[np.float64]:
    """Lower bound on the relative standard deviation of (alpha, beta) after ``windows``."""
    env = Environment.stack(windows)
    u = np.tile(np.log([alpha, beta]), (len(windows), 1))
    z, J = ekf.jacobian(lambda v: predict_queue(np.exp(v), env), u)
    var = (noise**2 / 3.0) * z**2
    info = np.einsum("kmi,km,kmj->ij", J, 1.0 / var, J)
    return np.sqrt(np.diag(np.linalg.inv(info)))
