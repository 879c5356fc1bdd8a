"""`python -m tuner replay`: formats, options and one-line errors, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
REAL = ROOT.parent / "shared" / "data" / "vllm-a100-opt125m-exp13.csv"


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tuner", "replay", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_jsonl_has_the_simulate_fields_without_truth() -> None:
    out = _replay(str(SAMPLES / "trace-seed-demo.csv"), "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 60
    expected = {"step", "alpha", "beta", "alpha_std", "beta_std", "observed", "predicted", "nis", "accepted",
                "reason", "line"}
    assert set(rows[0]) == expected
    assert set(rows[0]["observed"]) == {"wait_ms", "itl_ms"}
    assert rows[0]["line"] == 2 and rows[-1]["step"] == 60
    assert "true_alpha" not in rows[0]


def test_csv_and_table_formats() -> None:
    csv_out = _replay(str(SAMPLES / "trace-headerless-cycling.csv"), "--format", "csv")
    assert csv_out.returncode == 0
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("step,alpha,alpha_std,beta,beta_std,observed_wait_ms") and len(lines) == 43
    table = _replay(str(SAMPLES / "trace-headerless-cycling.csv"))
    assert table.returncode == 0 and "predicted_itl_ms" in table.stdout.splitlines()[0]


def test_skipped_rows_are_reported_on_stderr() -> None:
    out = _replay(str(SAMPLES / "trace-with-bad-rows.csv"), "--format", "jsonl")
    assert out.returncode == 0
    assert "16 usable windows of 20 rows" in out.stderr and "line 4" in out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert next(r["reason"] for r in rows if not r["accepted"]).startswith("skipped")


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b"", [], "the file is empty"),
        (b"RPM,tokens,avgConcurrency,avgWait,avgITL\n600,1000,30,0.003,2.7\n", [], "no maxConcurrency column"),
        (b"a,b\n1,2\n", [], "unknown CSV layout"),
        (b"\x00\x01\x02binary", [], "not a CSV file"),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path: Path, content: bytes, extra: list[str], message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    out = _replay(str(path), *extra)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr
    assert "Traceback" not in out.stderr


def test_max_batch_and_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "nomax.csv"
    path.write_bytes(b"RPM,tokens,avgConcurrency,avgWait,avgITL\n600,1000,30,0.003,2.7\n")
    assert _replay(str(path), "--max-batch", "64").returncode == 0
    assert _replay(str(path), "--max-batch", "0").returncode == 2
    other = tmp_path / "other.csv"
    other.write_bytes(b"r,t,q,i,b\n600,1000,3.0,2.7,64\n610,1000,3.1,2.8,64\n")
    out = _replay(str(other), "--columns", "rpm=r,avg_tokens=t,wait=q,itl=i,max_batch=b", "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["observed"] == {"wait_ms": 3.0, "itl_ms": 2.7}
    bad = _replay(str(other), "--columns", "rpm=r,nonsense")
    assert bad.returncode == 2 and "--columns" in bad.stderr


def test_missing_file_and_bad_config(tmp_path: Path) -> None:
    assert "cannot read" in _replay(str(tmp_path / "nope.csv")).stderr
    config = tmp_path / "c.json"
    config.write_text('{"filterData": {"gammaFactor": 1}}')
    out = _replay(str(SAMPLES / "trace-seed-demo.csv"), "--config", str(config))
    assert out.returncode == 2 and "modelData is missing" in out.stderr


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data is absent")
def test_the_real_vllm_trace_replays() -> None:
    out = _replay(str(REAL), "--format", "jsonl", "--config", str(SAMPLES / "config-vllm-a100-opt125m.json"))
    assert out.returncode == 0
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 86 and rows[0]["observed"]["wait_ms"] == pytest.approx(3.36)
