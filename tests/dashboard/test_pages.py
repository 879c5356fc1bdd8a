"""AppTest of the dashboard pages: buttons, config edits, uploads good and bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tuner.config import config_to_json, default_config

ROOT = Path(__file__).resolve().parents[2]
SIMULATED = str(ROOT / "pages" / "1_Simulated.py")
OFFLINE = str(ROOT / "pages" / "2_Offline.py")
HOME = str(ROOT / "app.py")
TIMEOUT = 60


def _open(path: str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=TIMEOUT)
    at.run()
    _no_failure(at)
    return at


def _no_failure(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e for e in at.error], [e.value for e in at.error]


def _progress(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# --- Simulated -------------------------------------------------------------------------------


def test_home_page_explains_links_and_embeds_the_simulated_mode() -> None:
    at = _open(HOME)
    assert at.title[0].value == "model-tuner"
    links = [link.proto.page for link in at.get("page_link")]
    assert "Simulated" in links and "Offline" in links
    assert _charts(at) == 5
    at.button(key="sim.step").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 1 of 60")


def test_simulated_step_run_n_run_to_end_and_reset() -> None:
    at = _open(SIMULATED)
    assert _progress(at).startswith("Step 0 of 60")
    assert _charts(at) == 5
    at.button(key="sim.step").click().run()
    _no_failure(at)
    run = at.session_state["sim.run"]
    first = run.history.frame().iloc[0].to_dict()
    assert len(run.history) == 1
    at.number_input(key="sim.n").set_value(15)
    at.button(key="sim.run_n").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 16 of 60")
    run = at.session_state["sim.run"]
    assert run.history.frame().iloc[0].to_dict() == first  # appended, not recomputed
    assert run.history.frame()["true_alpha"].tolist()[:16] == [18.0] * 16
    at.button(key="sim.run_end").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 60 of 60")
    assert at.button(key="sim.step").disabled
    table = at.dataframe[-1].value
    assert table["step"].iloc[0] == 60
    assert abs(table["alpha (ms)"].iloc[0] - 18.0) / 18.0 < 0.15  # the seed demo ends at alpha = 18
    at.button(key="sim.reset").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 0 of 60")
    assert len(at.session_state["sim.run"].history) == 0


def test_simulated_invalid_config_edit_is_shown_in_place_and_keeps_the_run() -> None:
    at = _open(SIMULATED)
    at.button(key="sim.step").click().run()
    bad = default_config().to_mapping()
    bad["modelData"]["minState"] = [0.1, 0.001, 3.0]
    at.text_area(key="sim.config_text").input(json.dumps(bad)).run()
    errors = [e.value for e in at.sidebar.error]
    assert any("modelData.minState has 3 values but initState has 2" in e for e in errors), errors
    assert at.sidebar.button(key="sim.config_apply").disabled
    assert len(at.session_state["sim.run"].history) == 1
    at.text_area(key="sim.config_text").input("{not json").run()
    assert any("not valid JSON" in e.value for e in at.sidebar.error)
    assert not at.exception


def test_simulated_valid_config_edit_applies_and_restarts() -> None:
    at = _open(SIMULATED)
    at.button(key="sim.step").click().run()
    edited = default_config().to_mapping()
    edited["modelData"]["initState"] = [10.0, 0.5]
    at.text_area(key="sim.config_text").input(json.dumps(edited)).run()
    assert any("press Apply" in i.value for i in at.sidebar.info)
    at.sidebar.button(key="sim.config_apply").click().run()
    _no_failure(at)
    run = at.session_state["sim.run"]
    assert run.config.init_state == (10.0, 0.5)
    assert len(run.history) == 0
    at.button(key="sim.step").click().run()
    assert len(at.session_state["sim.run"].history) == 1


def test_simulated_config_upload_good_and_bad() -> None:
    at = _open(SIMULATED)
    at.button(key="sim.step").click().run()
    good = default_config().to_mapping()
    good["filterData"]["errorLevel"] = 0.1
    yaml_text = "filterData:\n  gammaFactor: 1\n  errorLevel: 0.1\n  tPercentile: 1.96\nmodelData:\n" \
                "  initState: [4, 0.2]\n  percentChange: [0.1, 0.1]\n  expectedObservations: [200, 2]\n"
    at.sidebar.get("file_uploader")[0].upload("cfg.yaml", yaml_text.encode(), "application/x-yaml")
    at.run()
    _no_failure(at)
    assert at.session_state["sim.config"].error_level == 0.1
    assert len(at.session_state["sim.run"].history) == 0  # a new configuration restarts the run
    at.button(key="sim.step").click().run()
    at.sidebar.get("file_uploader")[0].upload("bad.json", b'{"filterData": {}}', "application/json")
    at.run()
    assert any("Upload not applied: bad.json: modelData is missing" in e.value for e in at.sidebar.error)
    assert at.session_state["sim.config"].error_level == 0.1
    assert len(at.session_state["sim.run"].history) == 1
    assert config_to_json(at.session_state["sim.config"])  # still downloadable


def test_simulated_seed_change_applies_a_new_noise_draw() -> None:
    at = _open(SIMULATED)
    at.button(key="sim.run_end").click().run()
    before = at.session_state["sim.run"].history.frame()["wait_ms_observed"].tolist()
    at.number_input(key="sim.seed_input").set_value(7).run()
    assert any("press Apply" in i.value for i in at.info)
    at.button(key="sim.apply_scenario").click().run()
    _no_failure(at)
    assert at.session_state["sim.seed"] == 7
    at.button(key="sim.run_end").click().run()
    after = at.session_state["sim.run"].history.frame()["wait_ms_observed"].tolist()
    assert len(after) == 60 and after != before


def test_simulated_discrete_event_option_runs_the_continuous_batching_simulation() -> None:
    at = _open(SIMULATED)
    at.button(key="sim.run_end").click().run()
    analytic = at.session_state["sim.run"].history.frame()["itl_ms_observed"].tolist()
    at.radio(key="sim.simulator_input").set_value("discrete-event").run()
    assert any("press Apply" in i.value for i in at.info)
    at.button(key="sim.apply_scenario").click().run()
    _no_failure(at)
    run = at.session_state["sim.run"]
    assert run.source.simulator == "discrete-event"
    at.button(key="sim.run_n").click().run()
    _no_failure(at)
    frame = at.session_state["sim.run"].history.frame()
    assert 0 < len(frame) <= 60
    # Windows of a simulated server: the load is counted (whole requests per minute), not the scenario's 35.2.
    assert frame["rpm"].iloc[0] != 35.2
    assert frame["itl_ms_observed"].tolist() != analytic[: len(frame)]
    assert _charts(at) == 5
    assert any("rateWindowMinutes" in i.value for i in at.info)  # the hint for counted rates


def test_simulated_bad_scenario_upload_is_reported() -> None:
    at = _open(SIMULATED)
    uploader = next(u for u in at.get("file_uploader") if u.proto.id.endswith("sim.scenario_upload")
                or "scenario" in u.label.lower())
    uploader.upload("s.yaml", b"phases:\n  - {steps: 5, rpm: -3}\n", "application/x-yaml")
    at.run()
    assert any("Scenario not loaded" in e.value and "missing" in e.value for e in at.error)
    assert at.session_state["sim.run"].total == 60


# --- Offline ----------------------------------------------------------------------------------


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="off.kind").set_value("Upload a CSV").run()
    uploader = next(u for u in at.get("file_uploader") if "CSV trace" in u.label)
    uploader.upload(name, data, "text/csv")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_offline_opens_on_a_sample_and_steps() -> None:
    at = _open(OFFLINE)
    assert any("trace-seed-demo.csv: 60 usable windows" in s.value for s in at.success)
    assert _charts(at) == 5
    at.button(key="off.step").click().run()
    at.number_input(key="off.n").set_value(9)
    at.button(key="off.run_n").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 10 of 60")
    history = at.session_state["off.run"].history.frame()
    assert history["line"].tolist() == list(range(2, 12))
    at.button(key="off.reset").click().run()
    assert _progress(at).startswith("Step 0 of 60")


def test_offline_sample_with_bad_rows_warns_with_counts() -> None:
    at = _open(OFFLINE)
    at.selectbox(key="off.sample").select_index(
        [p.name for p in at.selectbox(key="off.sample").options].index("trace-with-bad-rows.csv")
        if not isinstance(at.selectbox(key="off.sample").options[0], str)
        else at.selectbox(key="off.sample").options.index("trace-with-bad-rows.csv")
    ).run()
    warnings = [w.value for w in at.warning]
    assert any("16 usable windows of 20 rows" in w and "line 4" in w for w in warnings), warnings
    at.button(key="off.run_end").click().run()
    history = at.session_state["off.run"].history.frame()
    assert (history["status"] == "skipped").sum() == 1  # the idle window (rpm 0)
    assert _progress(at).startswith("Step 16 of 16")


def test_offline_good_vllm_upload_then_run_to_end() -> None:
    data = "\ufeffRPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL\r\n" + "\r\n".join(
        f"{600 + 5 * i},1000,{28 + i % 3},64,0.0033,{2.7 + 0.01 * (i % 4)}" for i in range(30)
    )
    at = _upload(_open(OFFLINE), "exp.csv", data.encode("utf-8"))
    assert any("exp.csv: 30 usable windows of 30 rows (vllm layout)" in s.value for s in at.success)
    at.button(key="off.run_end").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 30 of 30")
    history = at.session_state["off.run"].history.frame()
    assert history["wait_ms_observed"].iloc[0] == pytest.approx(3.3)


BAD_UPLOADS = [
    ("empty.csv", b"", "the file is empty"),
    ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not a CSV file"),
    ("missing.csv", b"rpm,avg_tokens,max_batch,wait_ms\n1,2,3,4\n", "missing column(s) itl_ms"),
    ("cells.csv", b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\nabc,1,2,3,4,5\n1,2,3,4,-5,6\n",
     "no usable rows"),
    ("huge.csv", b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\n" + b"600,1000,64,30,3.3,2.7\n" * 1_000_000,
     "1,000,000 data rows, more than the 100,000"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_offline_bad_upload_shows_a_message_and_keeps_the_history(name: str, data: bytes, message: str) -> None:
    at = _open(OFFLINE)
    at.number_input(key="off.n").set_value(5)
    at.button(key="off.run_n").click().run()
    _upload(at, name, data)
    errors = [e.value for e in at.error]
    assert any(message in e and name in e for e in errors), errors
    assert any("is kept" in e for e in errors)
    run = at.session_state["off.run"]
    assert run.source.label == "trace-seed-demo.csv" and len(run.history) == 5
    at.button(key="off.step").click().run()
    assert len(at.session_state["off.run"].history) == 6


def test_offline_unknown_layout_offers_a_column_mapping() -> None:
    data = b"rate_per_s,out_tokens,seqs,queue_s,itl_us\n" + b"".join(
        f"{10 + i % 3},1000,64,0.002,{2700 + 10 * i}\n".encode() for i in range(12)
    )
    at = _upload(_open(OFFLINE), "other.csv", data)
    assert any("unknown CSV layout" in e.value for e in at.error)
    at.selectbox(key="off.map_rpm").set_value("rate_per_s")
    at.selectbox(key="off.map_rate_unit").set_value("per_second")
    at.selectbox(key="off.map_avg_tokens").set_value("out_tokens")
    at.selectbox(key="off.map_wait").set_value("queue_s")
    at.selectbox(key="off.map_wait_unit").set_value("s")
    at.selectbox(key="off.map_itl").set_value("itl_us")
    at.selectbox(key="off.map_itl_unit").set_value("us")
    at.selectbox(key="off.map_max_batch").set_value("seqs")
    at.run()
    at.button(key="off.map_apply").click().run()
    _no_failure(at)
    run = at.session_state["off.run"]
    assert run.source.label == "other.csv" and run.total == 12
    trace = run.source.trace
    assert trace.rpm[0] == pytest.approx(600.0) and trace.wait_ms[0] == pytest.approx(2.0)
    assert trace.itl_ms[0] == pytest.approx(2.7)
    at.button(key="off.step").click().run()
    assert _progress(at).startswith("Step 1 of 12")


def test_offline_trace_without_max_batch_uses_the_input() -> None:
    data = b"RPM,tokens,avgConcurrency,avgWait,avgITL\n600,1000,30,0.003,2.7\n610,1000,31,0.003,2.72\n"
    at = _open(OFFLINE)
    at.number_input(key="off.max_batch").set_value(32).run()
    _upload(at, "nomax.csv", data)
    assert any("32 (given) is used" in s.value for s in at.success)
    assert at.session_state["off.run"].source.trace.max_batch.tolist() == [32.0, 32.0]



REAL = ROOT.parent / "shared" / "data" / "vllm-a100-opt125m-exp13.csv"


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data (the reference traces) is absent")
def test_offline_replays_the_real_vllm_trace_to_the_end() -> None:
    at = _upload(_open(OFFLINE), REAL.name, REAL.read_bytes())
    assert any("86 usable windows of 86 rows (vllm layout)" in s.value for s in at.success)
    at.button(key="off.run_end").click().run()
    _no_failure(at)
    assert _progress(at).startswith("Step 86 of 86")
    history = at.session_state["off.run"].history.frame()
    assert history["wait_ms_observed"].between(3.0, 5.1).all()  # seconds converted to ms
    assert history["itl_ms_predicted"].notna().all()


@pytest.mark.parametrize("page", ["app.py", "pages/1_Simulated.py", "pages/2_Offline.py", "pages/3_Online.py",
                                  "pages/4_Service.py"])
def test_every_page_opens_with_its_title_and_no_stray_text(page: str) -> None:
    """Streamlit's "magic" writes a bare string literal of a page script onto the page: the title comes first."""
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]  # (the Service page may say no service is running)
    first = at.main[0]
    shown = getattr(first, "value", "")
    assert type(first).__name__ == "Title", f"{page} starts with {type(first).__name__}: {shown!r}"
