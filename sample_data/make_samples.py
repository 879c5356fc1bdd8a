"""Write the sample traces of sample_data/ with the project's own simulated observer.

    python sample_data/make_samples.py

Each trace is a scenario (below) run through ``tuner.observers.simulated.simulate`` with
``numpy.random.default_rng(<seed>)``, then written in one of the three CSV layouts the
offline reader accepts. Running it again rewrites the same files byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.observers.simulated import SimulatedWindow, simulate
from tuner.scenario import parse_scenario, seed_scenario

HERE = Path(__file__).resolve().parent


def _windows(scenario_mapping: dict | None, seed: int) -> list[SimulatedWindow]:
    scenario = seed_scenario() if scenario_mapping is None else parse_scenario(scenario_mapping)
    return list(simulate(scenario, np.random.default_rng(seed)))


def _project(windows: list[SimulatedWindow]) -> list[str]:
    lines = ["rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms"]
    for w in windows:
        e = w.env
        lines.append(f"{e.rpm:.6g},{e.avg_tokens:.6g},{e.max_batch:d},{e.batch_size:.4f},{e.wait_ms:.4f},{e.itl_ms:.5f}")
    return lines


def main() -> None:
    # 1. The seed's 3-phase demo (alpha/beta jump at steps 21 and 41), project layout.
    seed_demo = _windows(None, seed=1)
    (HERE / "trace-seed-demo.csv").write_text("\n".join(_project(seed_demo)) + "\n", encoding="utf-8")

    # 2. A vLLM-like server under stepped load, in the published vLLM layout: avgWait in
    #    seconds, UTF-8 byte-order mark, CRLF, no final newline (as the real exp13 trace).
    ramp = _windows(
        {
            "defaults": {"steps": 20, "avg_tokens": 1000, "max_batch": 64, "alpha": 1.9, "beta": 0.03,
                         "noise": 0.03},
            "phases": [{"rpm": 580}, {"rpm": 710}, {"rpm": 850}, {"rpm": 950}],
        },
        seed=2,
    )
    rows = ["RPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL"]
    for w in ramp:
        e = w.env
        rows.append(f"{e.rpm:.2f},{e.avg_tokens:.2f},{e.batch_size:.1f},{e.max_batch:d},"
                    f"{e.wait_ms / 1000:.6f},{e.itl_ms:.6f}")
    (HERE / "trace-vllm-load-steps.csv").write_bytes(("\ufeff" + "\r\n".join(rows)).encode("utf-8"))

    # 3. The seed's headerless 6-column layout, load cycling 20 → 30 → 40 rpm.
    cycling = _windows(
        {
            "defaults": {"steps": 42, "rpm": [20, 30, 40], "avg_tokens": 1024, "max_batch": 48, "alpha": 18,
                         "beta": 1.0, "noise": 0.05},
            "phases": [{}],
        },
        seed=3,
    )
    (HERE / "trace-headerless-cycling.csv").write_text("\n".join(_project(cycling)[1:]) + "\n", encoding="utf-8")

    # 4. The seed demo's first phase with defects a real export has: a non-numeric cell, an
    #    empty cell, a negative wait, an idle window (rpm 0, which the tuner skips) and a
    #    short row. The reader skips and counts the first four kinds; the tuner skips rpm 0.
    lines = _project(seed_demo[:20])
    lines[3] = lines[3].replace(lines[3].split(",")[4], "n/a")
    lines[6] = ",".join(lines[6].split(",")[:5]) + ","
    lines[9] = lines[9].replace("," + lines[9].split(",")[4] + ",", ",-1.0,")
    lines[12] = "0," + ",".join(lines[12].split(",")[1:])
    lines[15] = ",".join(lines[15].split(",")[:4])
    (HERE / "trace-with-bad-rows.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
