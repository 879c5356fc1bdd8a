"""benchmarks/real_trace.py: its hindsight baselines on the published trace, and its report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "data" / "vllm-a100-opt125m-exp13.csv"
pytestmark = pytest.mark.skipif(not TRACE.exists(), reason="../shared/data (the reference traces) is absent")


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_trace_benchmark", ROOT / "benchmarks" / "real_trace.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_hindsight_line_and_model_limit_match_the_published_figures() -> None:
    bench = _benchmark()
    from tuner.config import default_config
    from tuner.observers.offline import read_trace

    trace = read_trace(TRACE)
    figures = bench.evaluate(trace, default_config())
    # The issue quotes 3.0 % for a line ITL = a + b·concurrency fitted in hindsight.
    assert figures.baseline_mape_pct == pytest.approx(3.02, abs=0.01)
    assert figures.baseline_a_ms == pytest.approx(2.150, abs=0.001)
    assert figures.baseline_b_ms == pytest.approx(0.0221, abs=0.0001)
    assert figures.steps == 86 and figures.skipped == 0
    free, alpha, beta, constrained, _ = bench.model_limit(trace)
    assert free == pytest.approx(2.85, abs=0.02) and alpha == pytest.approx(2.08, abs=0.03)
    assert beta == pytest.approx(0.0225, abs=0.001)
    assert constrained == pytest.approx(7.03, abs=0.05)


def test_the_report_prints_both_target_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code = _benchmark().main(["--config", str(ROOT / "sample_data" / "config-vllm-a100-opt125m.json")])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert "ITL MAPE, one step ahead, from step 10:" in out
    assert "max predicted/observed wait:" in out
    assert ("MISSED" in out) == (code == 1)
