"""CSV trace reader: the three layouts, column mapping, and every kind of bad file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.errors import TraceError
from tuner.observers.offline import ColumnMapping, TraceLayoutError, guess_mapping, header_columns, read_trace, to_csv

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL = DATA / "vllm-a100-opt125m-exp13.csv"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
PROJECT = b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\n35.2,1024,48,27.5,201.2,49.7\n40,1000,64,30,3.5,2.8\n"


def test_project_layout_reads_columns_in_any_order_and_keeps_units() -> None:
    data = b"itl_ms,wait_ms,extra,rpm,avg_tokens,max_batch,batch_size\n49.7,201.2,x,35.2,1024,48,27.5\n"
    trace = read_trace(data, source="t.csv")
    assert trace.layout == "project"
    assert len(trace) == 1 and trace.skipped == ()
    assert (trace.rpm[0], trace.avg_tokens[0], trace.max_batch[0]) == (35.2, 1024.0, 48.0)
    assert (trace.batch_size[0], trace.wait_ms[0], trace.itl_ms[0]) == (27.5, 201.2, 49.7)
    assert trace.line.tolist() == [2]


def test_project_layout_header_is_case_insensitive_and_batch_size_optional() -> None:
    trace = read_trace(b"RPM, Avg_Tokens, Max_Batch, Wait_ms, ITL_ms\n10,100,8,1.5,20\n")
    assert trace.layout == "project"
    assert np.isnan(trace.batch_size[0])
    assert trace.environment(0).itl_ms == 20.0


def test_seed_headerless_six_columns() -> None:
    trace = read_trace(b"35.2,1024,48,27.5,201.2,49.7\n35.2,1024,48,28,210,46.6\n")
    assert trace.layout == "seed"
    assert trace.line.tolist() == [1, 2]
    assert trace.wait_ms.tolist() == [201.2, 210.0]
    assert trace.max_batch.tolist() == [48.0, 48.0]


def test_seed_headerless_with_wrong_column_count_is_refused() -> None:
    with pytest.raises(TraceError, match="5 numeric columns and no header"):
        read_trace(b"35.2,1024,48,27.5,201.2\n")


def test_vllm_layout_converts_seconds_and_accepts_bom_crlf_no_final_newline() -> None:
    data = "\ufeffRPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL\r\n636.05,1015.23,29,64,0.00336,2.713109"
    trace = read_trace(data.encode("utf-8"))
    assert trace.layout == "vllm"
    assert trace.wait_ms[0] == pytest.approx(3.36)
    assert trace.itl_ms[0] == pytest.approx(2.713109)
    assert trace.batch_size[0] == 29 and trace.max_batch[0] == 64
    assert any("seconds" in note for note in trace.notes)


def test_vllm_without_max_concurrency_needs_the_max_batch_input() -> None:
    data = b"RPM,tokens,avgConcurrency,avgWait,avgITL\r\n600,1000,30,0.003,2.7\r\n"
    with pytest.raises(TraceError, match="no maxConcurrency column"):
        read_trace(data)
    trace = read_trace(data, max_batch=64)
    assert trace.max_batch.tolist() == [64.0]
    assert trace.wait_ms[0] == pytest.approx(3.0)


def test_max_batch_input_overrides_the_column_only_when_asked() -> None:
    assert read_trace(PROJECT, max_batch=128).max_batch.tolist() == [48.0, 64.0]
    assert read_trace(PROJECT, max_batch=128, override_max_batch=True).max_batch.tolist() == [128.0, 128.0]
    with pytest.raises(TraceError, match="at least 1"):
        read_trace(PROJECT, max_batch=0)


@pytest.mark.skipif(not REAL.exists(), reason=f"{DATA} is absent (reference traces are not in this checkout)")
def test_the_published_vllm_trace() -> None:
    trace = read_trace(REAL)
    assert trace.layout == "vllm" and len(trace) == 86 and trace.skipped == ()
    assert 3.0 < float(np.median(trace.wait_ms)) < 3.7  # avgWait is about 3.3 ms once converted from seconds
    assert trace.line[0] == 2 and trace.line[-1] == 87


def test_sample_traces_all_read() -> None:
    layouts = {p.name: read_trace(p).layout for p in SAMPLES.glob("trace-*.csv")}
    assert layouts["trace-seed-demo.csv"] == "project"
    assert layouts["trace-vllm-load-steps.csv"] == "vllm"
    assert layouts["trace-headerless-cycling.csv"] == "seed"


def test_bad_cells_are_skipped_and_counted_with_their_lines() -> None:
    data = (
        b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\n"
        b"35.2,1024,48,27.5,201.2,49.7\n"  # line 2: good
        b"35.2,1024,48,27.5,abc,49.7\n"  # 3: not a number
        b"35.2,1024,48,27.5,-4,49.7\n"  # 4: negative
        b"\n"  # 5: blank, ignored
        b"35.2,1024,48,27.5,,49.7\n"  # 6: empty
        b"35.2,1024,48,27.5,201.2,49.7,99\n"  # 7: too many cells
        b"35.2,1024,48,,201.2,inf\n"  # 8: batch size may be empty, inf is not a number
        b"35.2,1024,48,,201.2,49.7\n"  # 9: good, batch size unknown
    )
    trace = read_trace(data, source="bad.csv")
    assert trace.line.tolist() == [2, 9]
    assert np.isnan(trace.batch_size[1])
    assert trace.skipped_count == 5
    assert trace.data_rows == 7
    text = trace.summary()
    for expected in ("wait_ms cell that is not a finite number (line 3)", "negative wait_ms (line 4)",
                     "empty wait_ms cell (line 6)", "wrong number of cells (line 7)",
                     "itl_ms cell that is not a finite number (line 8)"):
        assert expected in text


def test_vllm_column_names_appear_in_messages() -> None:
    data = b"RPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL\n600,1000,30,64,-0.1,2.7\n600,1000,30,64,0.1,2.7\n"
    trace = read_trace(data)
    assert "negative avgWait (wait_ms) (line 2)" in trace.summary()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\n", "no data rows"),
        (bytes(range(256)) * 4, "not a CSV file"),
        (b"\xff\xfe\x00r\x00p\x00m", "not a CSV file"),
        ("rpm;avg".encode("latin-1") + b"\xe9\n", "not a UTF-8 text file"),
        (b"rpm,avg_tokens,max_batch,wait_ms\n1,2,3,4\n", r"missing column\(s\) itl_ms for the project layout"),
        (b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\nx,y,z,1,2,3\n-1,2,3,4,5,6\n", "no usable rows"),
        (b"%PDF-1.4 some binary-ish text\n", "unknown CSV layout"),
    ],
)
def test_bad_files_raise_a_message_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(TraceError, match=message) as info:
        read_trace(data, source="upload.csv")
    assert str(info.value).startswith("upload.csv:") or "max batch" in str(info.value)


def test_no_usable_rows_message_lists_the_reasons_and_lines() -> None:
    data = b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\nx,1,2,3,4,5\n1,-1,2,3,4,5\n"
    with pytest.raises(TraceError) as info:
        read_trace(data, source="f.csv")
    assert "rpm cell that is not a finite number (line 2)" in str(info.value)
    assert "negative avg_tokens (line 3)" in str(info.value)


def test_unknown_layout_lists_columns_for_a_mapping() -> None:
    data = b"rate_per_s,out_tokens,seqs,queue_s,itl_us\n10,100,8,0.002,20000\n"
    with pytest.raises(TraceLayoutError) as info:
        read_trace(data, source="other.csv")
    assert info.value.columns == ("rate_per_s", "out_tokens", "seqs", "queue_s", "itl_us")
    assert header_columns(data) == info.value.columns
    mapping = ColumnMapping(rpm="rate_per_s", avg_tokens="out_tokens", wait="queue_s", itl="itl_us",
                            max_batch="seqs", wait_unit="s", itl_unit="us", rate_unit="per_second")
    trace = read_trace(data, mapping=mapping)
    assert trace.layout == "mapped"
    assert trace.rpm[0] == pytest.approx(600.0)
    assert trace.wait_ms[0] == pytest.approx(2.0)
    assert trace.itl_ms[0] == pytest.approx(20.0)
    assert trace.max_batch[0] == 8.0


def test_mapping_to_absent_column_and_bad_unit_are_refused() -> None:
    with pytest.raises(TraceError, match="'nope' not in the header"):
        read_trace(b"a,b,c,d\n1,2,3,4\n", mapping=ColumnMapping(rpm="a", avg_tokens="b", wait="c", itl="nope"),
                   max_batch=8)
    with pytest.raises(TraceError, match="wait_unit"):
        ColumnMapping(rpm="a", avg_tokens="b", wait="c", itl="d", wait_unit="hours")


def test_tab_separated_file_gets_a_hint() -> None:
    with pytest.raises(TraceLayoutError, match="tabs or semicolons"):
        read_trace(b"rpm\tavg_tokens\tmax_batch\n1\t2\t3\n")


def test_guess_mapping_for_the_benchmark_sweep_layout() -> None:
    columns = ("rpm", "avg_input_tokens", "avg_output_tokens", "max_batch", "replicas", "avg_batch", "ttft_ms",
               "itl_ms")
    guess = guess_mapping(columns)
    assert guess["avg_tokens"] == "avg_output_tokens"
    assert guess["batch_size"] == "avg_batch"
    assert guess["itl"] == "itl_ms"


def test_round_trip_through_the_project_layout() -> None:
    trace = read_trace(PROJECT)
    again = read_trace(to_csv(trace).encode())
    assert again.layout == "project"
    np.testing.assert_allclose(again.wait_ms, trace.wait_ms)
    np.testing.assert_allclose(again.batch_size, trace.batch_size)


def test_trace_arrays_are_read_only() -> None:
    trace = read_trace(PROJECT)
    with pytest.raises(ValueError, match="read-only"):
        trace.rpm[0] = 1.0


@pytest.fixture(scope="module")
def million_rows() -> bytes:
    row = b"600,1000,64,30,3.3,2.7\n"
    return b"rpm,avg_tokens,max_batch,batch_size,wait_ms,itl_ms\n" + row * 1_000_000


def test_a_million_rows_parse_fast_vectorized(million_rows: bytes) -> None:
    start = time.perf_counter()
    trace = read_trace(million_rows)
    elapsed = time.perf_counter() - start
    assert len(trace) == 1_000_000
    assert trace.line[-1] == 1_000_001
    assert elapsed < 10.0, f"1M rows took {elapsed:.1f} s"


def test_a_million_rows_refused_quickly_above_a_row_limit(million_rows: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(TraceError, match=r"1,000,000 data rows, more than the 100,000"):
        read_trace(million_rows, max_rows=100_000, source="big.csv")
    assert time.perf_counter() - start < 5.0


def test_blank_lines_are_ignored_but_keep_the_line_numbers() -> None:
    seed = read_trace(b"\n35.2,1024,48,27.5,201.2,49.7\n\n\n35.2,1024,48,28,210,46.6\n\n")
    assert seed.line.tolist() == [2, 5] and seed.skipped == () and seed.data_rows == 2
    project = read_trace(PROJECT.replace(b"\n40", b"\n\n40"))
    assert project.line.tolist() == [2, 4] and project.skipped == ()


_rows = st.lists(
    st.tuples(
        st.floats(0.01, 1e5), st.floats(1, 1e5), st.integers(1, 4096), st.floats(0, 4096),
        st.floats(0, 1e6), st.floats(0.01, 1e4),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(rows=_rows, layout=st.sampled_from(["project", "seed", "vllm"]), crlf=st.booleans(), bom=st.booleans())
def test_every_layout_reads_back_what_was_written(
    rows: list[tuple[float, float, int, float, float, float]], layout: str, crlf: bool, bom: bool
) -> None:
    if layout == "project":
        lines = ["itl_ms,rpm,avg_tokens,max_batch,batch_size,wait_ms"]
        lines += [f"{i!r},{r!r},{t!r},{b},{s!r},{w!r}" for r, t, b, s, w, i in rows]
    elif layout == "seed":
        lines = [f"{r!r},{t!r},{b},{s!r},{w!r},{i!r}" for r, t, b, s, w, i in rows]
    else:
        lines = ["RPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL"]
        lines += [f"{r!r},{t!r},{s!r},{b},{w / 1000!r},{i!r}" for r, t, b, s, w, i in rows]
    text = ("\r\n" if crlf else "\n").join(lines)
    trace = read_trace((("\ufeff" if bom else "") + text).encode())
    assert trace.layout == layout and len(trace) == len(rows) and trace.skipped == ()
    columns = list(zip(*rows, strict=True))
    np.testing.assert_array_equal(trace.rpm, columns[0])
    np.testing.assert_array_equal(trace.avg_tokens, columns[1])
    np.testing.assert_array_equal(trace.max_batch, columns[2])
    np.testing.assert_array_equal(trace.batch_size, columns[3])
    np.testing.assert_allclose(trace.wait_ms, columns[4], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(trace.itl_ms, columns[5])
    assert trace.line.tolist() == list(range(2 if layout != "seed" else 1, len(rows) + (2 if layout != "seed" else 1)))
