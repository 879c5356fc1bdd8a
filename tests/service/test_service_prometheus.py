"""The service with Prometheus as its source: the vLLM emulator, a real Prometheus, the service subprocess."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.online.promstack import PROMETHEUS, emulator, prometheus
from tuner.config import default_config

pytestmark = pytest.mark.prometheus

SPEEDUP = 100
WINDOW = "3s"


def test_prometheus_source_discovers_and_tunes_every_server(start_service: Any, tmp_path: Path) -> None:
    if not Path(PROMETHEUS).exists() and not shutil.which("prometheus"):
        pytest.fail("Prometheus is not installed: apt-get install prometheus (the README's test command does)")
    mapping = default_config().to_mapping()
    mapping["filterData"]["errorLevel"] = [0.5, 0.05]  # windows of a real queue: bursty waits, steady ITL
    mapping["modelData"]["expectedObservations"] = [5000.0, 2.0]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(mapping))
    args = ["--servers", "2", "--alpha", "8,12", "--beta", "0.3,0.5", "--rpm", "300,200", "--tokens", "100"]
    args += ["--max-batch", "16", "--speedup", str(SPEEDUP), "--seed", "5", "--server-prefix", "pod-x"]
    with emulator(tmp_path, *args) as emu, prometheus(tmp_path, [emu.url.split("//")[1]]) as prom:
        prom.wait_for(f"rate(vllm:request_success_total[{WINDOW}])", 2, timeout_s=40)
        svc = start_service(
            "--source", "prometheus", "--prometheus", prom.url, "--window", WINDOW, "--max-batch", "16",
            "--time-scale", str(SPEEDUP), "--period", "1", "--config", str(config), "--state", "",
        )  # fmt: skip
        health = svc.wait_for(
            lambda h: h["servers"] == 2 and h["last_cycle"] and h["last_cycle"]["accepted"] == 2 and h["cycles"] >= 4,
            60,
            "two servers tuned from Prometheus",
        )
        assert health["source"].startswith("prometheus")
        servers = {s["server_name"]: s for s in svc.get("/servers").json()["servers"]}
        assert set(servers) == {"pod-x-0", "pod-x-1"}
        for name, s in servers.items():
            assert s["accepted"] >= 2 and math.isfinite(s["nis"])
            p = svc.get("/getparams", params={"server_name": name}).json()
            assert p["alpha"] > 0 and p["beta"] > 0
        # Independent filters: fed different servers' windows, the estimates differ.
        assert servers["pod-x-0"]["alpha"] != servers["pod-x-1"]["alpha"]

        # Prometheus stops: cycles fail as "prometheus" errors, the estimates stay, the service lives.
        prom.stop()
        first = svc.wait_for(lambda h: h["errors"].get("prometheus", 0) >= 1, 60, "a prometheus error")
        kept = svc.get("/servers").json()
        svc.wait_for(lambda h: h["errors"].get("prometheus", 0) >= first["errors"]["prometheus"] + 2, 60, "more errors")
        assert svc.health()["status"] == "degraded"
        assert svc.get("/servers").json()["servers"] == kept["servers"]
        assert svc.proc.poll() is None
