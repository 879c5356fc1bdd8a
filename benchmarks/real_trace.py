"""Accuracy on a real trace: one-step-ahead predictions of the tuner on vLLM exp13.

    python benchmarks/real_trace.py [--config FILE] [--trace FILE] [--from-step 10]

Replays ``../shared/data/vllm-a100-opt125m-exp13.csv`` (real vLLM serving opt-125m on an
A100, load stepped 580 → 950 rpm, max batch 64) through the tuner and prints, for the
prediction made *before* each step's update:

- ITL mean absolute percentage error from step 10 on (target ≤ 3.5 %), and over all steps;
- the largest ratio predicted / observed queue wait (target: never above 10), and how many
  steps predict a wait above 100 ms;

beside the hindsight baseline: a least-squares line ITL = a + b·concurrency fitted to the
whole trace (which sees the future, so no online filter is expected to beat it).
Exit status 0 when both targets are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.config import FilterConfig, default_config, load_config
from tuner.observers.offline import Trace, read_trace
from tuner.tuner import Tuner

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO.parent / "shared" / "data" / "vllm-a100-opt125m-exp13.csv"
ITL_MAPE_TARGET_PCT = 3.5
WAIT_RATIO_TARGET = 10.0


@dataclass(frozen=True)
class Figures:
    itl_mape_pct: float
    """ITL MAPE (%) of the one-step-ahead prediction, from ``from_step`` on."""
    itl_mape_all_pct: float
    max_wait_ratio: float
    """max over steps of predicted / observed wait."""
    steps_wait_above_100ms: int
    steps: int
    baseline_mape_pct: float
    baseline_mape_from_pct: float
    baseline_a_ms: float
    baseline_b_ms: float
    final_state: tuple[float, ...]
    final_std: tuple[float, ...]
    rejected: int
    skipped: int


def evaluate(trace: Trace, config: FilterConfig, from_step: int = 10) -> Figures:
    tuner = Tuner(config)
    predicted = np.full((len(trace), 2), np.nan)
    rejected = skipped = 0
    for i in range(len(trace)):
        record = tuner.step(trace.environment(i))
        if record.predicted is not None:
            predicted[i] = record.predicted
        if not record.accepted:
            if record.predicted is None:
                skipped += 1
            else:
                rejected += 1
    steps = np.arange(1, len(trace) + 1)
    late = steps >= from_step
    itl_err = np.abs(predicted[:, 1] - trace.itl_ms) / trace.itl_ms
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = predicted[:, 0] / trace.wait_ms
    # Hindsight baseline: ITL = a + b·concurrency, least squares over the whole trace.
    design = np.column_stack([np.ones(len(trace)), trace.batch_size])
    (a, b), *_ = np.linalg.lstsq(design, trace.itl_ms, rcond=None)
    base_err = np.abs(design @ np.array([a, b]) - trace.itl_ms) / trace.itl_ms
    return Figures(
        itl_mape_pct=100 * float(np.nanmean(itl_err[late])),
        itl_mape_all_pct=100 * float(np.nanmean(itl_err)),
        max_wait_ratio=float(np.nanmax(ratio)),
        steps_wait_above_100ms=int(np.sum(predicted[:, 0] > 100)),
        steps=len(trace),
        baseline_mape_pct=100 * float(np.mean(base_err)),
        baseline_mape_from_pct=100 * float(np.mean(base_err[late])),
        baseline_a_ms=float(a),
        baseline_b_ms=float(b),
        final_state=tuple(float(v) for v in tuner.state),
        final_std=tuple(float(v) for v in tuner.std),
        rejected=rejected,
        skipped=skipped,
    )


def model_limit(trace: Trace, from_step: int = 10) -> tuple[float, float, float, float, float]:
    """The best the queueing model can do with one fixed (alpha, beta) chosen in hindsight.

    Returns (ITL MAPE % without constraint, its alpha, beta; ITL MAPE % among the states whose
    predicted wait stays within WAIT_RATIO_TARGET × observed on every window, its alpha).
    A grid over alpha 0.5..4 ms and beta 0.001..0.06 ms, vectorized.
    """
    from tuner.queueing import solve_queue

    alphas, betas = np.linspace(0.5, 4.0, 141), np.linspace(0.001, 0.06, 119)
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    a, b = a.reshape(-1, 1), b.reshape(-1, 1)
    q = solve_queue(a, b, trace.rpm[None], trace.avg_tokens[None], trace.max_batch[None])
    late = np.arange(1, len(trace) + 1) >= from_step
    mape = 100 * (np.abs(q.itl_ms - trace.itl_ms[None]) / trace.itl_ms[None])[:, late].mean(axis=1)
    ratio_ok = (q.wait_ms / trace.wait_ms[None]).max(axis=1) <= WAIT_RATIO_TARGET
    best = int(np.argmin(mape))
    constrained = np.where(ratio_ok, mape, np.inf)
    best_ok = int(np.argmin(constrained))
    return float(mape[best]), float(a[best, 0]), float(b[best, 0]), float(constrained[best_ok]), float(a[best_ok, 0])


@dataclass(frozen=True)
class Policy:
    label: str
    itl_mape_pct: float
    max_wait_ratio: float


def hindsight_policies(
    trace: Trace, from_step: int = 10, windows: tuple[int, ...] = (5, 20), caps: tuple[float, ...] = (np.inf, 10.0, 3.0)
) -> list[Policy]:
    """What the queueing model allows on this trace, whatever the filter: better-informed predictors.

    On a grid of (alpha, beta) the queue is solved for every window once. Then:
    - "per-window oracle": for each window, the state closest in ITL among those whose predicted
      wait stays within WAIT_RATIO_TARGET × that window's observed wait (it knows the window it
      predicts, so no causal predictor can beat it);
    - "fit last k, wait ≤ c×": predict each window with the state that best fits the ITL of the k
      windows before it among the states that kept the predicted wait within c × observed on them
      (a least-squares refit every step: a filter with a k-window memory and hindsight over it).
    """
    from tuner.queueing import solve_queue

    alphas = np.geomspace(0.3, 5.0, 121)
    betas = np.concatenate([[1e-6], np.geomspace(1e-4, 0.1, 120)])
    a, b = (v.reshape(-1, 1) for v in np.meshgrid(alphas, betas, indexing="ij"))
    q = solve_queue(a, b, trace.rpm[None], trace.avg_tokens[None], trace.max_batch[None])
    err = np.abs(q.itl_ms / trace.itl_ms[None] - 1)  # (grid, windows)
    ratio = q.wait_ms / trace.wait_ms[None]
    targets = np.arange(from_step - 1, len(trace))
    ok_now = ratio[:, targets] <= WAIT_RATIO_TARGET
    oracle = np.where(ok_now, err[:, targets], np.inf).min(axis=0)
    policies = [Policy(f"per-window oracle, wait ≤ {WAIT_RATIO_TARGET:g}× on the window itself",
                       100 * float(oracle.mean()), WAIT_RATIO_TARGET)]
    for cap in caps:
        for k in windows:
            errors, ratios = [], []
            for i in targets:
                past = slice(max(0, i - k), i)
                feasible = (ratio[:, past] <= cap).all(axis=1)
                best = int(np.argmin(np.where(feasible, err[:, past].mean(axis=1), np.inf)))
                errors.append(err[best, i])
                ratios.append(ratio[best, i])
            label = f"fit the last {k} windows" + ("" if np.isinf(cap) else f", wait ≤ {cap:g}× on them")
            policies.append(Policy(label, 100 * float(np.mean(errors)), float(np.max(ratios))))
    return policies


FILTER_FILES = ("tuner/ekf.py", "tuner/tuner.py", "tuner/queueing.py", "tuner/config.py", "tuner/model.py")


def filter_version() -> str:
    """The last commit touching the filter's files, '+local changes' when they differ from it."""
    import subprocess

    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h %cI", "--", *FILTER_FILES], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *FILTER_FILES], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return (commit or "unknown") + (" + local changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--config", type=Path, help="tuner configuration (default: the seed's)")
    parser.add_argument("--from-step", type=int, default=10)
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"trace not found: {args.trace} (the reference traces live in ../shared/data/)", file=sys.stderr)
        return 2
    trace = read_trace(args.trace)
    config = load_config(args.config) if args.config else default_config()
    f = evaluate(trace, config, args.from_step)
    itl_ok = f.itl_mape_pct <= ITL_MAPE_TARGET_PCT
    wait_ok = f.max_wait_ratio <= WAIT_RATIO_TARGET
    print(f"trace:  {args.trace.name} ({f.steps} windows, {trace.layout} layout)")
    print(f"config: {args.config or 'default (the seed demo config)'}")
    print(f"filter: {filter_version()}")
    print(f"ITL MAPE, one step ahead, from step {args.from_step}: {f.itl_mape_pct:6.2f} %   "
          f"(target ≤ {ITL_MAPE_TARGET_PCT} %: {'met' if itl_ok else 'MISSED'})")
    print(f"ITL MAPE, one step ahead, all steps:       {f.itl_mape_all_pct:6.2f} %")
    print(f"max predicted/observed wait:               {f.max_wait_ratio:10.3g}   "
          f"(target ≤ {WAIT_RATIO_TARGET:g}: {'met' if wait_ok else 'MISSED'})")
    print(f"steps predicting a wait above 100 ms:      {f.steps_wait_above_100ms} of {f.steps}")
    print(f"rejected / skipped steps:                  {f.rejected} / {f.skipped}")
    print(f"hindsight line ITL = {f.baseline_a_ms:.3f} + {f.baseline_b_ms:.4f}·concurrency ms: "
          f"MAPE {f.baseline_mape_pct:.2f} % (all), {f.baseline_mape_from_pct:.2f} % (from step {args.from_step})")
    alpha, beta = f.final_state[:2]
    print(f"final estimate: alpha = {alpha:.4g} ± {f.final_std[0]:.2g} ms, beta = {beta:.4g} ± {f.final_std[1]:.2g} ms")
    free, fa, fb, ok, _ = model_limit(trace, args.from_step)
    print(f"model limit, one fixed (alpha, beta) in hindsight: ITL MAPE {free:.2f} % at ({fa:.3g}, {fb:.3g}) ms; "
          f"{ok:.2f} % when its predicted wait must stay ≤ {WAIT_RATIO_TARGET:g}× observed on every window")
    print(f"what the model allows from step {args.from_step} (better-informed predictors than any filter; "
          "ITL MAPE, max predicted/observed wait):")
    for p in hindsight_policies(trace, args.from_step):
        shown = f"≤ {p.max_wait_ratio:g}" if p.label.startswith("per-window") else f"{p.max_wait_ratio:.3g}"
        print(f"  {p.label:<52} {p.itl_mape_pct:6.2f} %   {shown}")
    return 0 if itl_ok and wait_ok else 1


if __name__ == "__main__":
    sys.exit(main())
