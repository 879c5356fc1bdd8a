"""One emulator pair and one real Prometheus for every online test (session scope)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.online.promstack import PROMETHEUS, EmulatorProcess, PrometheusProcess, emulator, prometheus
from tuner.config import FilterConfig, load_config
from tuner.observers.prometheus import PrometheusSettings

SPEEDUP = 100.0
"""Emulated seconds per real second: a 3 s query window holds 5 emulated minutes."""
WINDOW = "3s"
WINDOW_S = 3.0
TOKENS = 100
MAX_BATCH = 16
TRUTH = {"vllm-opt-125m-0": (8.0, 0.3), "vllm-opt-125m-1": (12.0, 0.5)}
"""(α, β) ms of the two main emulated servers."""
LEGACY = "legacy-opt-125m-0"
"""A third server, in another emulator process, that only exposes vllm:time_per_output_token_seconds."""


def online_config() -> FilterConfig:
    """The shipped sample_data/config-emulator.json: the seed's configuration with an observation
    noise fitted to windows of a real queue (the queue wait of a 5-minute window scatters by tens
    of percent, the ITL by well under 1 %: errorLevel 50 % and 5 %, waits below about 50 ms count
    as zero) and the rate counted over 5 emulated minutes (a 3 s window at speed-up 100)."""
    config = load_config(Path(__file__).resolve().parents[2] / "sample_data" / "config-emulator.json")
    assert config.rate_window_minutes == WINDOW_S * SPEEDUP / 60
    return config


@dataclass
class Stack:
    emulator: EmulatorProcess
    legacy: EmulatorProcess
    prometheus: PrometheusProcess
    tmp: Path

    def settings(self, **overrides: Any) -> PrometheusSettings:
        values: dict[str, Any] = {
            "address": self.prometheus.url,
            "window": WINDOW,
            "max_batch": MAX_BATCH,
            "time_scale": SPEEDUP,
        }
        values.update(overrides)
        return PrometheusSettings(**values)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(PROMETHEUS).exists() and not shutil.which("prometheus"):
        pytest.fail("Prometheus is not installed: apt-get install prometheus (the README's test command does)")
    tmp = tmp_path_factory.mktemp("online")
    common = ["--tokens", str(TOKENS), "--max-batch", str(MAX_BATCH), "--speedup", str(SPEEDUP)]
    with contextlib.ExitStack() as stack:
        main = stack.enter_context(
            emulator(tmp, "--servers", "2", "--alpha", "8,12", "--beta", "0.3,0.5", "--rpm", "200,150",
                     "--seed", "3", *common)
        )
        legacy = stack.enter_context(
            emulator(tmp, "--servers", "1", "--alpha", "10", "--beta", "0.4", "--rpm", "200", "--seed", "4",
                     "--server-prefix", "legacy-opt-125m", "--itl-metric", "time_per_output_token", *common)
        )
        prom = stack.enter_context(prometheus(tmp, [main.url.split("//")[1], legacy.url.split("//")[1]]))
        # Every server has a full window of data once rate() over WINDOW gives three series.
        prom.wait_for(f"rate(vllm:request_success_total[{WINDOW}])", 3, timeout_s=40)
        yield Stack(main, legacy, prom, tmp)
