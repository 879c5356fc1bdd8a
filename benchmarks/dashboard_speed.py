"""Dashboard speed: a 10,000-row trace replayed and plotted; a Step click with 1,000 steps of history.

    python benchmarks/dashboard_speed.py [--rows 10000] [--history 1000] [--clicks 7]

1. Replay: a 10,000-row trace in the project's CSV layout (written to a temporary folder
   by the project's simulator) is parsed, stepped through the tuner to the end, and every
   figure of a page is built and serialized to JSON (what Streamlit sends to the browser).
   The tuner's share (the filter itself) is printed beside the total. Target ≤ 5 s.
2. Step click: the Simulated page under Streamlit's AppTest, with a run that already has
   1,000 steps of history; the median time of a Step click's full re-run (script, figures,
   serialization). Target ≤ 300 ms.
Exit status 0 when both targets are met.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.config import default_config
from tuner.dashboard.figures import all_figures
from tuner.dashboard.run import Run, SimulatedSource, TraceSource
from tuner.observers.offline import read_trace
from tuner.observers.simulated import simulate
from tuner.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
REPLAY_TARGET_S = 5.0
CLICK_TARGET_MS = 300.0


def long_scenario(steps: int) -> dict:
    """The seed's server (alpha 18, beta 1 ms; 1024 tokens; max batch 48) under a load cycling
    20 → 30 → 35 rpm, with alpha/beta changing every 2,000 steps."""
    phases = []
    for i in range(max(1, -(-steps // 2000))):
        phases.append({"steps": min(2000, steps - 2000 * i), "alpha": 18.0 if i % 2 == 0 else 22.0,
                       "beta": 1.0 if i % 2 == 0 else 0.7})
    return {"defaults": {"rpm": [20, 30, 35], "avg_tokens": 1024, "max_batch": 48, "noise": 0.05},
            "phases": phases}


def write_trace(path: Path, rows: int, seed: int = 0) -> None:
    scenario = parse_scenario(long_scenario(rows))
    lines = ["rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms"]
    for w in simulate(scenario, np.random.default_rng(seed)):
        e = w.env
        lines.append(f"{e.rpm:g},{e.avg_tokens:g},{e.max_batch:d},{e.batch_size:.4f},{e.wait_ms:.4f},{e.itl_ms:.5f}")
    path.write_text("\n".join(lines) + "\n")


def replay_and_plot(rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace-10k.csv"
        write_trace(path, rows)
        start = time.perf_counter()
        trace = read_trace(path)
        parsed = time.perf_counter()
        run = Run(default_config(), TraceSource.create(trace))
        run.step(len(trace))
        stepped = time.perf_counter()
        figures = all_figures(run.history.frame(), run.config.nis_gate)
        payload = sum(len(fig.to_json()) for fig in figures.values())
        plotted = time.perf_counter()
    return {"rows": float(len(trace)), "parse_s": parsed - start, "steps_s": stepped - parsed,
            "plot_s": plotted - stepped, "total_s": plotted - start, "payload_kb": payload / 1024}


def step_click(history: int, clicks: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    scenario = parse_scenario(long_scenario(history + clicks + 10))
    run = Run(default_config(), SimulatedSource.create(scenario, 0))
    run.step(history)
    at = AppTest.from_file(str(ROOT / "pages" / "1_Simulated.py"), default_timeout=60)
    at.session_state["sim.scenario"] = scenario
    at.session_state["sim.seed"] = 0
    at.session_state["sim.run"] = run
    at.run()
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    times = []
    for _ in range(clicks):
        start = time.perf_counter()
        at.button(key="sim.step").click().run()
        times.append(time.perf_counter() - start)
    assert len(at.session_state["sim.run"].history) == history + clicks
    return {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times),
            "history": float(history)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--clicks", type=int, default=7)
    args = parser.parse_args(argv)
    replay = replay_and_plot(args.rows)
    per_step_ms = 1000 * replay["steps_s"] / replay["rows"]
    replay_ok = replay["total_s"] <= REPLAY_TARGET_S
    print(f"replay + plot of a {int(replay['rows']):,}-row trace: {replay['total_s']:.2f} s "
          f"(target ≤ {REPLAY_TARGET_S:g} s: {'met' if replay_ok else 'MISSED'})")
    print(f"  parse {replay['parse_s']:.2f} s · tuner steps {replay['steps_s']:.2f} s ({per_step_ms:.2f} ms/step) · "
          f"figures + JSON {replay['plot_s']:.2f} s ({replay['payload_kb']:.0f} kB)")
    click = step_click(args.history, args.clicks)
    click_ok = click["median_ms"] <= CLICK_TARGET_MS
    print(f"Step click with {int(click['history']):,} steps of history (AppTest re-run): median "
          f"{click['median_ms']:.0f} ms, max {click['max_ms']:.0f} ms "
          f"(target ≤ {CLICK_TARGET_MS:g} ms: {'met' if click_ok else 'MISSED'})")
    return 0 if replay_ok and click_ok else 1


if __name__ == "__main__":
    sys.exit(main())
