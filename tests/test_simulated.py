"""Simulated observer: reproducible noise from the passed Generator, within ±noise of the model."""

from __future__ import annotations

import numpy as np

from tuner.observers.simulated import simulate
from tuner.queueing import solve_queue
from tuner.scenario import parse_scenario, seed_scenario


def _observations(seed, scenario=None):
    return [(w.env.wait_ms, w.env.itl_ms, w.env.batch_size)
            for w in simulate(scenario or seed_scenario(), np.random.default_rng(seed))]


def test_same_seed_reproduces_exactly():
    assert _observations(5) == _observations(5)


def test_other_seed_differs():
    a, b = _observations(5), _observations(6)
    assert len(a) == len(b) == 60
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_windows_follow_the_phases():
    windows = list(simulate(seed_scenario(), np.random.default_rng(0)))
    assert len(windows) == 60
    assert [w.phase for w in windows] == [0] * 20 + [1] * 20 + [2] * 20
    assert [(w.true_alpha, w.true_beta) for w in windows[::20]] == [(18.0, 1.0), (22.0, 0.7), (18.0, 1.0)]
    for w in windows:
        assert (w.env.rpm, w.env.avg_tokens, w.env.max_batch) == (35.2, 1024.0, 48)
        assert w.env.invalid_reason() is None


def test_noise_within_bounds_of_the_analytic_model():
    scenario = parse_scenario({
        "defaults": {"steps": 200, "avg_tokens": 512, "max_batch": 32, "alpha": 10, "beta": 0.5},
        "phases": [{"rpm": [40, 80, 120], "noise": 0.05}, {"rpm": 400, "noise": 0.2, "steps": 100},
                   {"rpm": 60, "noise": 0.0, "steps": 5}],
    })
    ratios = {0: [], 1: [], 2: []}
    for w in simulate(scenario, np.random.default_rng(1)):
        phase = scenario.phases[w.phase]
        q = solve_queue(phase.alpha, phase.beta, w.env.rpm, phase.avg_tokens, phase.max_batch)
        assert w.saturated == bool(q.saturated)
        for observed, model in ((w.env.wait_ms, q.wait_ms), (w.env.itl_ms, q.itl_ms),
                                (w.env.batch_size, q.mean_batch)):
            ratio = observed / float(model)
            assert 1 - phase.noise <= ratio <= 1 + phase.noise
            ratios[w.phase].append(ratio)
    # Uniform noise: it actually spreads over most of ±noise (not a constant factor), and none at 0.
    r0 = np.array(ratios[0])
    assert r0.min() < 1 - 0.8 * 0.05 and r0.max() > 1 + 0.8 * 0.05
    assert abs(r0.mean() - 1) < 0.01
    assert np.array(ratios[1]).max() > 1 + 0.8 * 0.2
    assert ratios[2] == [1.0] * 15
    # The load cycles inside the first phase.
    windows = list(simulate(scenario, np.random.default_rng(1)))
    assert [w.env.rpm for w in windows[:4]] == [40.0, 80.0, 120.0, 40.0]
    assert windows[250].saturated
