"""Oracle and property tests of tuner.queueing.solve_queue.

The oracle is a plain state-by-state solve of the birth-death chain n = 0..K (K = 100·B),
written here independently of the closed-form geometric tail of the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.queueing import TAIL_FACTOR, capacity_rpm, solve_queue


def reference_solve(alpha: float, beta: float, rpm: float, tokens: float, big_b: int) -> dict[str, float]:
    """State-by-state solve: log q(n) = log q(n-1) + log(λ/μ(n)) for n = 1..K."""
    lam = rpm / 60000.0
    k_max = 100 * big_b
    log_q = np.empty(k_max + 1)
    log_q[0] = 0.0
    acc = 0.0
    for n in range(1, k_max + 1):
        b = min(n, big_b)
        mu = b / ((alpha + beta * b) * tokens)
        acc += math.log(lam / mu)
        log_q[n] = acc
    top = log_q.max()
    log_z = top + math.log(np.exp(log_q - top).sum())  # logsumexp
    p = np.exp(log_q - log_z)
    n = np.arange(k_max + 1, dtype=float)
    batch = np.minimum(n, big_b)
    mean_requests = float((n * p).sum())
    mean_batch = float((batch * p).sum())
    queued = float(((n - batch) * p).sum())  # L − S without cancellation
    not_full = float(p[:-1].sum())  # 1 − p_K as the mass of states 0..K−1
    throughput = lam * not_full
    return {
        "wait_ms": queued / throughput,
        "itl_ms": mean_batch / throughput / tokens,
        "mean_requests": mean_requests,
        "mean_batch": mean_batch,
        "throughput_per_ms": throughput,
        "full_probability": float(p[-1]),
        "rho": lam * tokens * (alpha + beta * big_b) / big_b,
    }


def _cap(alpha: float, beta: float, tokens: float, big_b: int) -> float:
    return 60000.0 * big_b / ((alpha + beta * big_b) * tokens)


# (alpha, beta, rpm, avg_tokens, max_batch)
CASES = [
    pytest.param(18.0, 1.0, 35.2, 1024.0, 48, id="seed-moderate"),
    pytest.param(18.0, 1.0, 1.0, 1024.0, 48, id="light"),
    pytest.param(18.0, 1.0, 0.01, 1024.0, 48, id="tiny-load"),
    pytest.param(18.0, 1.0, 42.0, 1024.0, 48, id="just-below-capacity"),
    pytest.param(18.0, 1.0, 43.0, 1024.0, 48, id="just-above-capacity"),
    pytest.param(18.0, 1.0, _cap(18.0, 1.0, 1024.0, 48), 1024.0, 48, id="at-capacity"),
    pytest.param(18.0, 1.0, _cap(18.0, 1.0, 1024.0, 48) * (1 + 1e-7), 1024.0, 48, id="capacity+1e-7"),
    pytest.param(18.0, 1.0, _cap(18.0, 1.0, 1024.0, 48) * (1 - 1e-5), 1024.0, 48, id="capacity-1e-5"),
    pytest.param(18.0, 1.0, 1e4, 1024.0, 48, id="heavy-overload"),
    pytest.param(18.0, 1.0, 1e6, 1024.0, 48, id="extreme-overload"),
    pytest.param(10.0, 0.5, 3.0, 100.0, 1, id="B1-moderate"),
    pytest.param(10.0, 0.5, 200.0, 100.0, 1, id="B1-overload"),
    pytest.param(0.3, 0.01, 5.0, 20.0, 1, id="B1-light"),
    pytest.param(5.0, 0.2, 200.0, 500.0, 256, id="B256-moderate"),
    pytest.param(5.0, 0.2, 5000.0, 500.0, 256, id="B256-overload"),
    pytest.param(2.0, 0.05, 4300.0, 256.0, 1024, id="B1024"),
]


@pytest.mark.parametrize(("alpha", "beta", "rpm", "tokens", "big_b"), CASES)
def test_solve_queue_matches_state_by_state_reference(alpha, beta, rpm, tokens, big_b):
    ref = reference_solve(alpha, beta, rpm, tokens, big_b)
    got = solve_queue(alpha, beta, rpm, tokens, big_b)
    for name in ("wait_ms", "itl_ms", "mean_requests", "mean_batch", "throughput_per_ms"):
        np.testing.assert_allclose(float(getattr(got, name)), ref[name], rtol=1e-9, atol=0, err_msg=name)
    np.testing.assert_allclose(float(got.full_probability), ref["full_probability"], rtol=1e-9, atol=1e-300)
    if abs(ref["rho"] - 1.0) > 1e-12:  # exactly at ρ = 1 the flag depends on the last bit of ρ
        assert bool(got.saturated) == (ref["rho"] >= 1.0)


def test_reference_sanity_light_load_has_no_queue():
    """The oracle itself: at a tiny load nobody waits and ITL is α + β (one request in the batch)."""
    ref = reference_solve(18.0, 1.0, 1e-3, 1024.0, 48)
    assert ref["wait_ms"] < 1e-12
    assert ref["itl_ms"] == pytest.approx(19.0, rel=1e-4)


# --- M/M/1: B = 1, β = 0, service rate μ = 1/(αT) -------------------------------------------


def _mm1_truncated(rho: float, lam: float, k_max: int) -> tuple[float, float]:
    """Exact wait and ITL·T of the M/M/1/K queue with p_n ∝ ρ^n, n = 0..K."""
    n = np.arange(k_max + 1, dtype=float)
    w = rho**n
    p = w / w.sum()
    queued = float((np.maximum(n - 1, 0) * p).sum())
    throughput = lam * (1 - p[-1])
    busy = 1 - p[0]
    return queued / throughput, busy / throughput


@pytest.mark.parametrize("rho", [0.1, 0.3, 0.5])
def test_mm1_untruncated_closed_form_at_low_load(rho):
    alpha, tokens = 2.0, 50.0
    mu = 1.0 / (alpha * tokens)
    lam = rho * mu
    got = solve_queue(alpha, 0.0, lam * 60000.0, tokens, 1)
    # W_q = ρ/(μ − λ); truncation at K = 100 changes it by O(ρ^100), negligible here.
    np.testing.assert_allclose(float(got.wait_ms), rho / (mu - lam), rtol=1e-9)
    # Busy server fraction ρ, throughput λ: ITL = (S/X)/T = (1/μ)/T = α.
    np.testing.assert_allclose(float(got.itl_ms), alpha, rtol=1e-9)
    assert not bool(got.saturated)


@pytest.mark.parametrize("rho", [0.5, 0.99, 1.0, 1.01, 1.5, 20.0])
def test_mm1_truncated_exact_formula(rho):
    alpha, tokens = 3.0, 10.0
    mu = 1.0 / (alpha * tokens)
    lam = rho * mu
    got = solve_queue(alpha, 0.0, lam * 60000.0, tokens, 1)
    wait, time_in_service = _mm1_truncated(rho, lam, TAIL_FACTOR * 1)
    np.testing.assert_allclose(float(got.wait_ms), wait, rtol=1e-9)
    np.testing.assert_allclose(float(got.itl_ms), time_in_service / tokens, rtol=1e-9)
    # Flow balance of the truncated chain λ(1 − p_K) = μ(1 − p_0): ITL is exactly α at every load.
    np.testing.assert_allclose(float(got.itl_ms), alpha, rtol=1e-9)
    assert bool(got.saturated) == (rho >= 1.0)


# --- vectorization ----------------------------------------------------------------------------


def test_vectorized_mixed_batches_equal_per_server_calls():
    rng = np.random.default_rng(7)
    n = 12
    alpha = rng.uniform(0.5, 40.0, n)
    beta = rng.uniform(0.0, 2.0, n)
    tokens = rng.uniform(10.0, 2000.0, n)
    big_b = np.array([1, 2, 8, 48, 48, 64, 256, 3, 1, 100, 17, 256])
    cap = capacity_rpm(alpha, beta, tokens, big_b)
    rpm = cap * rng.choice([1e-4, 0.3, 0.9, 1.0, 1.2, 50.0], n)
    vec = solve_queue(alpha, beta, rpm, tokens, big_b)
    for i in range(n):
        one = solve_queue(alpha[i], beta[i], rpm[i], tokens[i], big_b[i])
        for name in ("wait_ms", "itl_ms", "mean_requests", "mean_batch", "throughput_per_ms", "full_probability"):
            np.testing.assert_allclose(getattr(vec, name)[i], float(getattr(one, name)), rtol=1e-12, atol=0,
                                       err_msg=f"{name} server {i}")
        assert vec.saturated[i] == bool(one.saturated)


def test_vectorized_shape_broadcasts():
    got = solve_queue(np.full((2, 3), 18.0), 1.0, np.array([10.0, 35.2, 60.0]), 1024.0, 48)
    assert got.wait_ms.shape == (2, 3)
    assert got.itl_ms.shape == (2, 3)
    assert got.saturated.shape == (2, 3)
    np.testing.assert_array_equal(got.itl_ms[0], got.itl_ms[1])


def test_saturated_flag_iff_rho_at_least_one():
    alpha, beta, tokens = 18.0, 1.0, 1024.0
    big_b = np.array([1, 48, 48, 48, 48, 256, 256])
    factor = np.array([0.5, 0.999, 1.000001, 1.001, 10.0, 0.7, 3.0])
    rpm = factor * 60000.0 * big_b / ((alpha + beta * big_b) * tokens)
    got = solve_queue(alpha, beta, rpm, tokens, big_b)
    rho = rpm / 60000.0 * tokens * (alpha + beta * big_b) / big_b
    np.testing.assert_array_equal(got.saturated, rho >= 1.0)
    assert got.saturated.tolist() == [False, False, True, True, True, False, True]


# --- extremes -------------------------------------------------------------------------------


def test_all_outputs_finite_for_extreme_inputs():
    grid = np.array(
        np.meshgrid([1e-6, 1e-2, 35.2, 1e4, 1e7], [1e-3, 1.0, 1e3], [0.0, 1e-3, 1.0], [1.0, 1024.0],
                    [1, 48, 1024], indexing="ij")
    ).reshape(5, -1)
    rpm, alpha, beta, tokens, big_b = grid
    got = solve_queue(alpha, beta, rpm, tokens, big_b)
    for name in ("wait_ms", "itl_ms", "mean_requests", "mean_batch", "throughput_per_ms", "full_probability"):
        values = getattr(got, name)
        assert np.isfinite(values).all(), name
        assert (values >= 0).all(), name
    assert (got.itl_ms > 0).all()
    assert (got.throughput_per_ms > 0).all()
    # Overload is flagged, never a silent zero: the wait is positive where ρ ≫ 1.
    rho = rpm / 60000.0 * tokens * (alpha + beta * big_b) / big_b
    assert (got.wait_ms[rho > 10] > 0).all()
    np.testing.assert_array_equal(got.saturated, rho >= 1)


# --- properties -----------------------------------------------------------------------------

positive = st.floats(min_value=1e-2, max_value=200.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    alpha=positive,
    beta=st.floats(min_value=0.0, max_value=5.0),
    tokens=st.floats(min_value=1.0, max_value=4096.0),
    big_b=st.integers(min_value=1, max_value=256),
    log_rpm=st.lists(st.floats(min_value=-4.0, max_value=6.0), min_size=2, max_size=6),
)
def test_outputs_finite_nonnegative_and_monotone_in_load(alpha, beta, tokens, big_b, log_rpm):
    rpm = np.sort(10.0 ** np.asarray(log_rpm))
    got = solve_queue(alpha, beta, rpm, tokens, big_b)
    for name in ("wait_ms", "itl_ms", "mean_requests", "mean_batch", "throughput_per_ms", "full_probability"):
        values = getattr(got, name)
        assert np.isfinite(values).all(), name
        assert (values >= 0).all(), name
    # Non-decreasing in load. ITL is flat where β = 0 (it is α at every load) and on the
    # saturated plateau; a relative slack of 1e-10 absorbs rounding there, nothing more.
    for name in ("wait_ms", "itl_ms"):
        v = getattr(got, name)
        assert (v[1:] >= v[:-1] * (1 - 1e-10)).all(), (name, rpm, v)
