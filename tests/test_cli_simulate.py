"""``python -m tuner simulate`` as a user runs it: subprocesses, all started at once."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["step", "alpha", "alpha_std", "beta", "beta_std", "observed", "predicted", "nis", "accepted", "reason",
        "true_alpha", "true_beta"]

BAD_SCENARIOS = {
    "missing-beta": ("defaults: {steps: 4, rpm: 20, avg_tokens: 256, max_batch: 8, noise: 0.02}\n"
                     "phases:\n  - {alpha: 6}\n", "phases[0]"),
    "broken-yaml": ("defaults: {steps: 4\nphases: [\n", "YAML"),
    "noise-above-one": ("phases:\n  - {steps: 4, rpm: 20, avg_tokens: 256, max_batch: 8, alpha: 6, beta: 1,"
                        " noise: 2}\n", "phases[0].noise"),
}
BAD_CONFIGS = {
    "broken-json": ('{"filterData": {"gammaFactor": 1.0,, }}', "line 1"),
    "minState-length": (json.dumps({
        "filterData": {"gammaFactor": 1.0, "errorLevel": 0.05, "tPercentile": 1.96},
        "modelData": {"initState": [4.0, 0.2], "percentChange": [0.1, 0.1], "boundedState": True,
                      "minState": [0.1, 0.001, 0.5], "maxState": [50.0, 2.0], "expectedObservations": [200.0, 2.0]},
    }), "modelData.minState has 3 values but initState has 2"),
    "section-not-mapping": ("filterData: [1, 2]\nmodelData: {}\n", "filterData"),
}
GOOD_SCENARIO = ("defaults: {steps: 4, rpm: 20, avg_tokens: 256, max_batch: 8, noise: 0.02}\n"
                 "phases:\n  - {alpha: 6, beta: 0.5}\n  - {alpha: 8, beta: 0.5, steps: 3}\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path | None]]:
    """Every command of this module, started at once (each pays the interpreter's start-up)."""
    tmp = tmp_path_factory.mktemp("cli")
    commands: dict[str, tuple[list[str], Path | None]] = {
        "jsonl3": (["--format", "jsonl", "--seed", "3"], None),
        "jsonl3-again": (["--format", "jsonl", "--seed", "3"], None),
        "jsonl4": (["--format", "jsonl", "--seed", "4"], None),
        "csv3": (["--format", "csv", "--seed", "3"], None),
        "table3": (["--format", "table", "--seed", "3"], None),
        "des3": (["--format", "jsonl", "--seed", "3", "--simulator", "discrete-event"], None),
        "missing-scenario": (["--scenario", str(tmp / "none.yaml")], tmp / "none.yaml"),
    }
    good = tmp / "good.yaml"
    good.write_text(GOOD_SCENARIO)
    config = tmp / "config.json"
    config.write_text((ROOT / "sample_data" / "config.json").read_text())
    commands["custom"] = (["--scenario", str(good), "--config", str(config), "--format", "jsonl"], None)
    for name, (text, _) in BAD_SCENARIOS.items():
        path = tmp / f"scenario-{name}.yaml"
        path.write_text(text)
        commands[f"scenario:{name}"] = (["--scenario", str(path)], path)
    for name, (text, _) in BAD_CONFIGS.items():
        path = tmp / f"config-{name}.json"
        path.write_text(text)
        commands[f"config:{name}"] = (["--config", str(path)], path)
    procs = {
        name: (subprocess.Popen([sys.executable, "-m", "tuner", "simulate", *args], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE), path)
        for name, (args, path) in commands.items()
    }
    out = {}
    for name, (proc, path) in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        out[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), path)
    return out


@pytest.fixture(scope="module")
def jsonl_seed3(runs) -> subprocess.CompletedProcess:
    return runs["jsonl3"][0]


def test_jsonl_prints_sixty_rows_with_the_documented_keys(jsonl_seed3):
    assert jsonl_seed3.returncode == 0, jsonl_seed3.stderr
    assert jsonl_seed3.stderr == ""
    lines = jsonl_seed3.stdout.splitlines()
    assert len(lines) == 60
    rows = [json.loads(line) for line in lines]
    for k, row in enumerate(rows, start=1):
        assert list(row) == KEYS
        assert row["step"] == k
        assert set(row["observed"]) == {"wait_ms", "itl_ms"}
        assert set(row["predicted"]) == {"wait_ms", "itl_ms"}
        assert row["accepted"] is True and row["reason"] is None
        for key in ("alpha", "alpha_std", "beta", "beta_std", "nis"):
            assert isinstance(row[key], float) and row[key] == row[key]
    assert [(r["true_alpha"], r["true_beta"]) for r in rows[::20]] == [(18.0, 1.0), (22.0, 0.7), (18.0, 1.0)]


def test_same_seed_same_output_other_seed_differs(runs, jsonl_seed3):
    again = runs["jsonl3-again"][0]
    assert again.returncode == 0
    assert again.stdout == jsonl_seed3.stdout
    other = runs["jsonl4"][0]
    assert other.returncode == 0
    assert other.stdout != jsonl_seed3.stdout
    assert len(other.stdout.splitlines()) == 60


def test_csv_format(runs, jsonl_seed3):
    out = runs["csv3"][0]
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 60
    assert list(rows[0]) == ["step", "alpha", "alpha_std", "beta", "beta_std", "observed_wait_ms",
                             "observed_itl_ms", "predicted_wait_ms", "predicted_itl_ms", "nis", "accepted",
                             "reason", "true_alpha", "true_beta"]
    first = json.loads(jsonl_seed3.stdout.splitlines()[0])
    assert float(rows[0]["alpha"]) == first["alpha"]
    assert float(rows[0]["observed_itl_ms"]) == first["observed"]["itl_ms"]


def test_table_format(runs):
    out = runs["table3"][0]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 61
    header = lines[0].split()
    assert header[:5] == ["step", "alpha", "alpha_std", "beta", "beta_std"]
    assert "true_alpha" in header
    assert lines[1].split()[0] == "1" and lines[-1].split()[0] == "60"


def test_custom_scenario_and_config(runs):
    out = runs["custom"][0]
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 7
    assert [r["true_alpha"] for r in rows] == [6.0] * 4 + [8.0] * 3


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""


@pytest.mark.parametrize("name", list(BAD_SCENARIOS))
def test_bad_scenario_file_exits_2_with_one_line(runs, name):
    result, path = runs[f"scenario:{name}"]
    _assert_one_line_error(result, str(path), BAD_SCENARIOS[name][1])


def test_missing_scenario_file(runs):
    result, path = runs["missing-scenario"]
    _assert_one_line_error(result, str(path), "cannot read")


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_file_exits_2_with_one_line(runs, name):
    result, path = runs[f"config:{name}"]
    _assert_one_line_error(result, str(path), BAD_CONFIGS[name][1])


def test_discrete_event_simulator_gives_its_own_windows(runs, jsonl_seed3):
    proc, _ = runs["des3"]
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    analytic = [json.loads(line) for line in jsonl_seed3.stdout.splitlines()]
    assert len(rows) == 60
    assert [r["true_alpha"] for r in rows] == [r["true_alpha"] for r in analytic]
    assert [r["observed"]["itl_ms"] for r in rows] != [r["observed"]["itl_ms"] for r in analytic]
    assert all(r["observed"]["itl_ms"] > 0 for r in rows)
