"""Accuracy of the tuner on simulated scenarios, beside the seed-style filter and the Cramér–Rao bound.

    python benchmarks/accuracy.py [--seeds 20]

Prints, for the seed's 3-phase demo: per phase the median and 90th-percentile
phase-end error of alpha and beta, the median number of steps until both are within
5 % of the new truth, and the Cramér–Rao bound (relative σ) for the phase's
observations. Then the varying-load scenario and scenarios the filter was not tuned
on. "seed-style" is the same code configured like the reference implementation:
linear state, fixed R = f·expected², Q = (percentChange·x)², one plain EKF update.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.config import FilterConfig, default_config
from tuner.environment import Environment
from tuner.fisher import relative_crb
from tuner.observers.simulated import simulate
from tuner.scenario import Scenario, parse_scenario, seed_scenario
from tuner.tuner import Tuner


def seed_style(config: FilterConfig) -> FilterConfig:
    return dataclasses.replace(
        config, state_space="linear", adaptive=False, iterations=1, relative_noise=False, drift_fraction=1.0
    )


@dataclasses.dataclass(frozen=True)
class Run:
    error_pct: np.ndarray  # (steps, 2) |estimate/truth − 1|·100
    itl_error_pct: np.ndarray  # (steps,) one-step-ahead |predicted/observed − 1|·100
    at_bound: bool
    finite: bool
    final_std: np.ndarray
    final_error: np.ndarray  # estimate − truth at the last step, ms


def run(config: FilterConfig, scenario: Scenario, seed: int) -> Run:
    tuner = Tuner(config)
    errors, itl = [], []
    at_bound = False
    lo = np.asarray(config.min_state) if config.bounded_state else None
    hi = np.asarray(config.max_state) if config.bounded_state else None
    for window in simulate(scenario, np.random.default_rng(seed)):
        record = tuner.step(window.env)
        state = np.asarray(record.state)
        errors.append(np.abs(state / [window.true_alpha, window.true_beta] - 1) * 100)
        if record.predicted is not None:
            itl.append(abs(record.predicted[1] / window.env.itl_ms - 1) * 100)
        if lo is not None and (np.isclose(state, lo, rtol=1e-6).any() or np.isclose(state, hi, rtol=1e-6).any()):
            at_bound = True
    final = tuner.state
    truth = np.array([window.true_alpha, window.true_beta])
    return Run(np.array(errors), np.array(itl), at_bound, bool(np.isfinite(final).all()), tuner.std, final - truth)


def seed_table(config: FilterConfig, label: str, seeds: int) -> None:
    scenario = seed_scenario()
    runs = [run(config, scenario, s) for s in range(seeds)]
    err = np.stack([r.error_pct for r in runs])  # seeds, steps, 2
    print(f"\n{label}: seed 3-phase demo, {seeds} seeds (errors in %)")
    print(
        f"{'phase':>6} {'median a':>9} {'median b':>9} {'p90 a':>7} {'p90 b':>7}"
        f" {'steps to 5%':>12} {'CRB a':>7} {'CRB b':>7}"
    )
    start = 0
    for index, phase in enumerate(scenario.phases):
        end = start + phase.steps - 1
        window = err[:, start : end + 1]
        within = []
        for s in range(seeds):
            ok = np.flatnonzero((window[s] <= 5).all(axis=1))
            within.append(ok[0] + 1 if ok.size else np.inf)
        env = Environment(phase.rpm[0], phase.avg_tokens, phase.max_batch)
        crb = relative_crb(phase.alpha, phase.beta, [env] * phase.steps, phase.noise) * 100
        med = np.median(err[:, end], axis=0)
        p90 = np.percentile(err[:, end], 90, axis=0)
        steps = np.median(within)
        print(
            f"{index + 1:>6} {med[0]:>9.2f} {med[1]:>9.2f} {p90[0]:>7.2f} {p90[1]:>7.2f} {steps:>12.1f}"
            f" {crb[0]:>7.2f} {crb[1]:>7.2f}"
        )
        start = end + 1
    pinned = sum(r.at_bound for r in runs)
    print(f"  runs with an estimate at a bound: {pinned}/{seeds}")


def drift_scenario(steps: int = 60) -> Scenario:
    alphas = np.linspace(18, 24, steps)
    betas = np.linspace(1.0, 0.8, steps)
    phases = [{"alpha": float(a), "beta": float(b), "steps": 1} for a, b in zip(alphas, betas, strict=True)]
    return parse_scenario(
        {"defaults": {"rpm": 35.2, "avg_tokens": 1024, "max_batch": 48, "noise": 0.05}, "phases": phases}
    )


def scenarios() -> dict[str, tuple[Scenario, str]]:
    def one(label: str, **phase: object) -> Scenario:
        return parse_scenario({"phases": [phase]}, label)

    return {
        "varying load 20/30/40 rpm, 21 steps": (
            one("vary", steps=21, rpm=[20, 30, 40], avg_tokens=1024, max_batch=48, alpha=18, beta=1, noise=0.05),
            "end",
        ),
        "B=256, T=256, 2400 rpm, a=6 b=0.05": (
            one("big", steps=40, rpm=[1800, 2400, 3000], avg_tokens=256, max_batch=256, alpha=6, beta=0.05, noise=0.05),
            "end",
        ),
        "noise ±15 %, varying load": (
            one("noisy", steps=40, rpm=[20, 30, 40], avg_tokens=1024, max_batch=48, alpha=18, beta=1, noise=0.15),
            "end",
        ),
        "near saturation (41 rpm, capacity 42.6)": (
            one("sat", steps=40, rpm=41, avg_tokens=1024, max_batch=48, alpha=18, beta=1, noise=0.05),
            "end",
        ),
        "slow drift a 18→24, b 1→0.8 over 60 steps": (drift_scenario(), "end"),
        "zero wait, B=128, T=256, 150 rpm, a/b jump as in the demo": (
            parse_scenario(
                {
                    "defaults": {"steps": 20, "rpm": 150, "avg_tokens": 256, "max_batch": 128, "noise": 0.05},
                    "phases": [{"alpha": 18, "beta": 1}, {"alpha": 22, "beta": 0.7}, {"alpha": 18, "beta": 1}],
                }
            ),
            "itl",
        ),
        "zero wait (10 rpm): a, b not separable": (
            one("zero", steps=60, rpm=10, avg_tokens=1024, max_batch=48, alpha=18, beta=1, noise=0.05),
            "itl",
        ),
    }


def scenario_table(configs: dict[str, FilterConfig], seeds: int) -> None:
    print(f"\nOther scenarios, {seeds} seeds: median final error a/b (%), median one-step ITL error (%) over the last")
    print("half, median final σ/estimate (%), share of runs whose final error is within 2σ (an honest σ covers")
    print("about 95 %), runs with an estimate at a bound or non-finite")
    for name, (scenario, _) in scenarios().items():
        print(f"  {name}")
        for label, config in configs.items():
            runs = [run(config, scenario, s) for s in range(seeds)]
            final = np.median([r.error_pct[-1] for r in runs], axis=0)
            half = scenario.total_steps // 2
            itl = np.median([np.mean(r.itl_error_pct[half:]) for r in runs])
            truth = np.array([scenario.phases[-1].alpha, scenario.phases[-1].beta])
            rel_std = np.median([r.final_std / truth * 100 for r in runs], axis=0)
            covered = np.mean([np.abs(r.final_error) <= 2 * r.final_std for r in runs], axis=0) * 100
            bad = sum(r.at_bound or not r.finite for r in runs)
            print(
                f"    {label:>11}: a {final[0]:6.2f}  b {final[1]:6.2f}  ITL {itl:5.2f}"
                f"  σ a {rel_std[0]:6.2f} b {rel_std[1]:6.2f}  2σ covers a {covered[0]:3.0f} % b {covered[1]:3.0f} %"
                f"  bound/non-finite {bad}/{seeds}"
            )


def discrete_event_table(seeds: int) -> None:
    """The seed demo on the emulator's discrete-event server (one-minute windows, counted rates)."""
    from tuner.config import load_config
    from tuner.emulator.simulation import simulate_windows

    emulator = load_config(Path(__file__).resolve().parent.parent / "sample_data" / "config-emulator.json")
    configs = {
        "seed config": default_config(),
        "seed config, rateWindowMinutes 1": dataclasses.replace(default_config(), rate_window_minutes=1.0),
        "emulator config, rateWindowMinutes 0": dataclasses.replace(emulator, rate_window_minutes=0.0),
        "emulator config, rateWindowMinutes 1": dataclasses.replace(emulator, rate_window_minutes=1.0),
    }
    windows = [list(simulate_windows(seed_scenario(), np.random.default_rng(s))) for s in range(seeds)]
    print(f"\nSeed demo on the discrete-event server (one-minute windows: the rate is a Poisson count), {seeds} seeds:")
    print("median phase-end error a/b (%) in phases 1, 2, 3")
    for label, config in configs.items():
        ends = []
        for run_windows in windows:
            tuner = Tuner(config)
            errors = []
            for window in run_windows:
                state = tuner.step(window.env).state
                errors.append(np.abs(np.asarray(state) / [window.true_alpha, window.true_beta] - 1) * 100)
            ends.append([errors[k] for k in (19, 39, 59)])
        med = np.median(np.array(ends), axis=0)
        shown = "   ".join(f"{a:6.1f} / {b:5.1f}" for a, b in med)
        print(f"  {label:<38} {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    ours = default_config()
    baseline = seed_style(ours)
    seed_table(ours, "model-tuner", args.seeds)
    seed_table(baseline, "seed-style EKF", args.seeds)
    scenario_table({"model-tuner": ours, "seed-style": baseline}, args.seeds)
    discrete_event_table(min(args.seeds, 10))


if __name__ == "__main__":
    main()
