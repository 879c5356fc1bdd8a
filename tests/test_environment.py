"""Environment: per-row validity reasons, stacking, observation vector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.environment import Environment

GOOD = {"rpm": 35.2, "avg_tokens": 1024.0, "max_batch": 48, "batch_size": 30.0, "wait_ms": 200.0, "itl_ms": 2.0}


def test_valid_scalar_window_has_no_reason():
    env = Environment(**GOOD)
    assert env.invalid_reason() is None
    assert env.invalid_reasons() == [None]


def test_zero_wait_is_valid_but_zero_itl_is_not():
    assert Environment(**{**GOOD, "wait_ms": 0.0}).invalid_reason() is None
    reason = Environment(**{**GOOD, "itl_ms": 0.0}).invalid_reason()
    assert reason is not None and "itl_ms" in reason


@pytest.mark.parametrize(("field", "value"), [
    ("rpm", 0.0), ("rpm", -1.0), ("rpm", math.nan), ("rpm", math.inf),
    ("avg_tokens", 0.0), ("avg_tokens", -2.0), ("avg_tokens", math.nan),
    ("max_batch", 0.0), ("max_batch", 0.99), ("max_batch", math.inf),
    ("wait_ms", -1.0), ("wait_ms", math.nan), ("wait_ms", math.inf),
    ("itl_ms", -1.0), ("itl_ms", math.nan), ("itl_ms", -math.inf),
])
def test_each_invalid_field_is_named(field, value):
    reason = Environment(**{**GOOD, field: value}).invalid_reason()
    assert reason is not None
    assert field in reason


def test_unset_observations_are_invalid_for_a_step():
    env = Environment(rpm=35.2, avg_tokens=1024.0, max_batch=48)
    assert "wait_ms" in env.invalid_reason()


def test_batch_size_is_informative_only():
    assert Environment(**{**GOOD, "batch_size": math.nan}).invalid_reason() is None


def test_invalid_reasons_per_row():
    env = Environment(
        rpm=np.array([35.2, 0.0, 35.2, 35.2, 35.2, 35.2]),
        avg_tokens=np.array([1024.0, 1024.0, -1.0, 1024.0, 1024.0, 1024.0]),
        max_batch=np.array([48.0, 48.0, 48.0, 0.0, 48.0, 48.0]),
        wait_ms=np.array([200.0, 200.0, 200.0, 200.0, np.nan, 200.0]),
        itl_ms=np.array([2.0, 2.0, 2.0, 2.0, 2.0, np.inf]),
    )
    reasons = env.invalid_reasons()
    assert len(reasons) == 6
    assert reasons[0] is None
    for i, field in enumerate(["rpm", "avg_tokens", "max_batch", "wait_ms", "itl_ms"], start=1):
        assert reasons[i] is not None and field in reasons[i], (i, reasons[i])


def test_scalar_fields_broadcast_over_rows():
    env = Environment(rpm=np.array([10.0, -1.0, 30.0]), avg_tokens=512.0, max_batch=16, wait_ms=1.0, itl_ms=3.0)
    reasons = env.invalid_reasons()
    assert reasons[0] is None and reasons[2] is None
    assert "rpm" in reasons[1]


def test_stack_makes_one_array_per_field():
    windows = [Environment(**GOOD), Environment(**{**GOOD, "rpm": 10.0, "max_batch": 8, "itl_ms": 3.5})]
    stacked = Environment.stack(windows)
    np.testing.assert_array_equal(stacked.rpm, [35.2, 10.0])
    np.testing.assert_array_equal(stacked.max_batch, [48.0, 8.0])
    np.testing.assert_array_equal(stacked.itl_ms, [2.0, 3.5])
    np.testing.assert_array_equal(stacked.observed(), [[200.0, 2.0], [200.0, 3.5]])
    assert stacked.invalid_reasons() == [None, None]


def test_observed_and_to_dict():
    env = Environment(**GOOD)
    np.testing.assert_array_equal(env.observed(), [200.0, 2.0])
    d = env.to_dict()
    assert d == {k: float(v) for k, v in GOOD.items()}
