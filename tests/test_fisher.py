"""Cramér–Rao bound at the seed's operating point."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.environment import Environment
from tuner.fisher import relative_crb
from tuner.model import predict_queue

SEED = {"rpm": 35.2, "avg_tokens": 1024.0, "max_batch": 48}


def _windows(n, **over):
    return [Environment(**{**SEED, **over}) for _ in range(n)]


def _independent_crb(alpha, beta, windows, noise):
    """Fisher information of log θ with a central-difference Jacobian, written here."""
    info = np.zeros((2, 2))
    theta = np.log([alpha, beta])
    for env in windows:
        z = predict_queue(np.exp(theta), env)
        J = np.zeros((2, 2))
        for j in range(2):
            d = np.zeros(2)
            d[j] = 1e-5
            J[:, j] = (predict_queue(np.exp(theta + d), env) - predict_queue(np.exp(theta - d), env)) / 2e-5
        R_inv = np.diag(1.0 / (noise**2 / 3.0 * z**2))  # uniform ±noise: variance noise²/3
        info += J.T @ R_inv @ J
    return np.sqrt(np.diag(np.linalg.inv(info)))


def test_seed_point_bound_is_the_issues_figure():
    crb = relative_crb(18.0, 1.0, _windows(20), 0.05)
    assert crb.shape == (2,)
    assert abs(crb[0] * 100 - 2.7) <= 0.1
    assert abs(crb[1] * 100 - 1.24) <= 0.1


def test_matches_an_independent_fisher_computation():
    windows = _windows(7) + _windows(7, rpm=20.0) + _windows(7, rpm=40.0)
    got = relative_crb(18.0, 1.0, windows, 0.05)
    # forward (code) vs central (here) differences: ~1e-5 relative.
    np.testing.assert_allclose(got, _independent_crb(18.0, 1.0, windows, 0.05), rtol=1e-4)


@pytest.mark.parametrize("n", [5, 80, 320])
def test_scales_as_one_over_sqrt_n(n):
    base = relative_crb(18.0, 1.0, _windows(20), 0.05)
    np.testing.assert_allclose(relative_crb(18.0, 1.0, _windows(n), 0.05), base * np.sqrt(20 / n), rtol=1e-9)


def test_scales_linearly_with_noise():
    base = relative_crb(18.0, 1.0, _windows(20), 0.05)
    np.testing.assert_allclose(relative_crb(18.0, 1.0, _windows(20), 0.10), 2 * base, rtol=1e-9)


def test_varying_load_tightens_the_bound():
    cycling = [Environment(**{**SEED, "rpm": r}) for r in [20.0, 30.0, 40.0] * 7]
    crb = relative_crb(18.0, 1.0, cycling, 0.05)
    assert (crb < relative_crb(18.0, 1.0, _windows(21), 0.05)).all()
