"""Offline observer: measurement windows read from a CSV trace.

Three layouts are recognised from the first line of the file:

``project``
    A header with the units in the column names: ``rpm, avg_tokens, max_batch,
    batch_size, wait_ms, itl_ms`` (any order, extra columns ignored; ``max_batch`` may be
    left out when the max batch size is given separately, ``batch_size`` may be left out).
``seed``
    No header, six numeric columns in the seed's order: rpm, average output tokens per
    request, max batch size, batch size, average queue time (ms), average token time (ms).
``vllm``
    The published vLLM trace header ``RPM, tokens, avgConcurrency, maxConcurrency,
    avgWait, avgITL`` with ``avgWait`` in **seconds** and ``avgITL`` in milliseconds;
    ``maxConcurrency`` may be absent (the max batch size is then given separately).

A UTF-8 byte-order mark, CRLF line ends and a missing final newline are accepted in all
of them. Any other header raises :class:`TraceLayoutError`, which lists the columns so a
caller can offer a :class:`ColumnMapping` instead.

Parsing is vectorized (pandas' C reader), so a 1,000,000-row file reads in about a
second. Cells that are empty, not numbers or negative make their row unusable: such
rows are skipped and counted by reason, with the first line numbers of each reason.
Line numbers are those of the file (1 = the first line, the header if there is one).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tuner.environment import Environment
from tuner.errors import TraceError

FIELDS = ("rpm", "avg_tokens", "max_batch", "batch_size", "wait_ms", "itl_ms")
"""The project's own column names, also the fields of a :class:`Trace`."""
REQUIRED = ("rpm", "avg_tokens", "wait_ms", "itl_ms")
"""Fields every layout must provide (max_batch may come from an input instead)."""

TIME_UNITS_MS = MappingProxyType({"s": 1000.0, "ms": 1.0, "us": 1e-3})
"""Factor from a time unit to milliseconds."""
RATE_UNITS_PER_MIN = MappingProxyType({"per_minute": 1.0, "per_second": 60.0})
"""Factor from an arrival-rate unit to requests per minute."""

VLLM_COLUMNS = MappingProxyType({
    "rpm": "rpm",
    "tokens": "avg_tokens",
    "avgconcurrency": "batch_size",
    "maxconcurrency": "max_batch",
    "avgwait": "wait_ms",
    "avgitl": "itl_ms",
})
"""vLLM header (lower case) → field."""

SHOWN_LINES = 5
"""How many line numbers a skip reason lists."""


class TraceLayoutError(TraceError):
    """The header matches none of the known layouts; ``columns`` lists what it holds."""

    def __init__(self, message: str, columns: tuple[str, ...]) -> None:
        super().__init__(message)
        self.columns = columns


@dataclass(frozen=True)
class ColumnMapping:
    """Which column of an unknown layout holds which field, and in which unit.

    ``max_batch`` and ``batch_size`` may be None (the max batch size then comes from an
    input, the batch size is unknown).
    """

    rpm: str
    avg_tokens: str
    wait: str
    itl: str
    max_batch: str | None = None
    batch_size: str | None = None
    wait_unit: str = "ms"
    """One of ``s``, ``ms``, ``us``."""
    itl_unit: str = "ms"
    rate_unit: str = "per_minute"
    """``per_minute`` or ``per_second``."""

    def __post_init__(self) -> None:
        for name in ("wait_unit", "itl_unit"):
            if getattr(self, name) not in TIME_UNITS_MS:
                raise TraceError(f"{name} must be one of {', '.join(TIME_UNITS_MS)}, got {getattr(self, name)!r}")
        if self.rate_unit not in RATE_UNITS_PER_MIN:
            raise TraceError(f"rate_unit must be one of {', '.join(RATE_UNITS_PER_MIN)}, got {self.rate_unit!r}")

    def columns(self) -> dict[str, str]:
        """Field → column name, for the fields that are mapped."""
        out = {"rpm": self.rpm, "avg_tokens": self.avg_tokens, "wait_ms": self.wait, "itl_ms": self.itl}
        if self.max_batch:
            out["max_batch"] = self.max_batch
        if self.batch_size:
            out["batch_size"] = self.batch_size
        return out


@dataclass(frozen=True)
class SkipReason:
    """Rows skipped for one reason: how many, and the first few line numbers."""

    reason: str
    count: int
    lines: tuple[int, ...]

    def describe(self) -> str:
        shown = ", ".join(str(n) for n in self.lines)
        more = f" and {self.count - len(self.lines)} more" if self.count > len(self.lines) else ""
        word = "line" if self.count == 1 else "lines"
        return f"{self.count} {self.reason} ({word} {shown}{more})"


@dataclass(frozen=True)
class Trace:
    """A parsed trace: one entry per usable window, in file order (read-only arrays)."""

    rpm: NDArray[np.float64]
    """Arrival rate, requests per minute."""
    avg_tokens: NDArray[np.float64]
    """Average output tokens per request."""
    max_batch: NDArray[np.float64]
    """Max batch size of the server."""
    batch_size: NDArray[np.float64]
    """Observed average batch size (NaN when the trace has none)."""
    wait_ms: NDArray[np.float64]
    """Observed average queue wait, ms."""
    itl_ms: NDArray[np.float64]
    """Observed average inter-token latency, ms."""
    line: NDArray[np.int64]
    """Line of the file each window comes from."""
    layout: str
    """``project``, ``seed``, ``vllm`` or ``mapped``."""
    source: str
    data_rows: int
    """Data rows in the file (usable or not)."""
    skipped: tuple[SkipReason, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    """What the reader assumed (units converted, max batch from the input)."""

    def __len__(self) -> int:
        return int(self.rpm.size)

    @property
    def skipped_count(self) -> int:
        return sum(s.count for s in self.skipped)

    def environment(self, index: int) -> Environment:
        """Window ``index`` as the tuner's environment."""
        return Environment(
            rpm=float(self.rpm[index]),
            avg_tokens=float(self.avg_tokens[index]),
            max_batch=float(self.max_batch[index]),
            batch_size=float(self.batch_size[index]),
            wait_ms=float(self.wait_ms[index]),
            itl_ms=float(self.itl_ms[index]),
        )

    def environments(self) -> Iterator[Environment]:
        for i in range(len(self)):
            yield self.environment(i)

    def to_frame(self) -> pd.DataFrame:
        """The usable windows in the project's layout, with the file line of each."""
        return pd.DataFrame({"line": self.line, **{f: getattr(self, f) for f in FIELDS}})

    def summary(self) -> str:
        """One paragraph for a user: what was read, what was skipped, what was assumed."""
        text = f"{self.source}: {len(self):,} usable windows of {self.data_rows:,} rows ({self.layout} layout)"
        if self.skipped:
            text += "; skipped " + "; ".join(s.describe() for s in self.skipped)
        if self.notes:
            text += ". " + " ".join(self.notes)
        return text


def to_csv(trace: Trace) -> str:
    """The trace in the project's own layout (units in the column names)."""
    return trace.to_frame()[list(FIELDS)].to_csv(index=False, lineterminator="\n", float_format="%.6g")


# --- reading -----------------------------------------------------------------------


def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        text = data
    else:
        if b"\x00" in data[:65536]:
            raise TraceError(f"{source}: not a CSV file (it holds binary data)")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TraceError(f"{source}: not a UTF-8 text file (bad byte at offset {exc.start})") from None
    return text.removeprefix("\ufeff")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _split_header(line: str) -> list[str]:
    return [c.strip().strip('"').strip() for c in line.split(",")]


def header_columns(data: bytes | str, source: str = "trace") -> tuple[str, ...]:
    """The column names of a headed CSV (for building a :class:`ColumnMapping`)."""
    text = _decode(data, source)
    line = _first_line(text)
    if not line:
        raise TraceError(f"{source}: the file is empty")
    return tuple(_split_header(line))


def guess_mapping(columns: tuple[str, ...]) -> dict[str, str | None]:
    """A best guess of field → column for an unknown header (None where nothing fits)."""
    lowered = {c.lower().replace(" ", "").replace("_", ""): c for c in columns}
    hints = {
        "rpm": ("rpm", "rpmtotal", "requestsperminute", "arrivalrate", "rate"),
        "avg_tokens": ("avgoutputtokens", "avgtokens", "outputtokens", "tokens"),
        "max_batch": ("maxbatch", "maxconcurrency", "maxnumseqs", "maxbatchsize"),
        "batch_size": ("avgbatch", "batchsize", "avgconcurrency", "concurrency"),
        "wait": ("waitms", "avgwait", "queuetime", "queuems", "wait", "ttftms"),
        "itl": ("itlms", "avgitl", "itl", "tokentime", "tpotms"),
    }
    out: dict[str, str | None] = {}
    for key, names in hints.items():
        out[key] = next((lowered[n] for n in names if n in lowered), None)
    return out


def _detect(line: str, source: str) -> tuple[str, dict[str, str] | None, list[str] | None]:
    """(layout, column → field for headed layouts, header names or None if headerless)."""
    cells = _split_header(line)
    if all(_is_number(c) for c in cells if c) and any(cells):
        if len(cells) != len(FIELDS):
            raise TraceError(
                f"{source}: line 1 has {len(cells)} numeric columns and no header; a headerless trace has "
                f"the seed's 6 columns ({', '.join(FIELDS)})"
            )
        return "seed", None, None
    lowered = [c.lower() for c in cells]
    if set(REQUIRED) <= set(lowered):
        return "project", {c: c.lower() for c in cells if c.lower() in FIELDS}, cells
    vllm_needed = {"rpm", "tokens", "avgconcurrency", "avgwait", "avgitl"}
    if vllm_needed <= set(lowered):
        return "vllm", {c: VLLM_COLUMNS[c.lower()] for c in cells if c.lower() in VLLM_COLUMNS}, cells
    columns = tuple(cells)
    near_project = [f for f in REQUIRED if f not in lowered]
    near_vllm = sorted(vllm_needed - set(lowered))
    if len(near_project) <= 2 or len(near_vllm) <= 2:
        layout, missing = ("project", near_project) if len(near_project) <= len(near_vllm) else ("vLLM", near_vllm)
        raise TraceLayoutError(
            f"{source}: missing column(s) {', '.join(missing)} for the {layout} layout (the header has "
            f"{', '.join(repr(c) for c in cells)}); add them or map the columns instead",
            columns,
        )
    hint = ""
    if len(cells) == 1 and any(sep in line for sep in ("\t", ";")):
        hint = " (the columns seem separated by tabs or semicolons; use commas)"
    missing = [f for f in REQUIRED if f not in lowered]
    raise TraceLayoutError(
        f"{source}: unknown CSV layout{hint}: header has {', '.join(repr(c) for c in cells)}; expected the "
        f"project's columns ({', '.join(FIELDS)}; missing {', '.join(missing)}), the vLLM layout "
        "(RPM, tokens, avgConcurrency, maxConcurrency, avgWait, avgITL) or 6 numeric columns without a header; "
        "map the columns instead (--columns on the command line)",
        columns,
    )


def _read_frame(text: str, source: str, header: bool, names: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The cells (numeric columns as float64, others as strings), plus the parser's messages about bad lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame = pd.read_csv(
                io.StringIO(text),
                header=0 if header else None,
                names=None if header else names,
                keep_default_na=False,
                skip_blank_lines=False,
                on_bad_lines="warn",
                skipinitialspace=True,
                engine="c",
            )
        except pd.errors.EmptyDataError:
            raise TraceError(f"{source}: the file is empty") from None
        except pd.errors.ParserError as exc:
            raise TraceError(f"{source}: not a readable CSV file: {str(exc).strip()}") from None
    bad_lines = [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
    return frame, bad_lines


def _bad_line_numbers(messages: list[str]) -> list[int]:
    out: list[int] = []
    for message in messages:
        for part in message.split("Skipping line ")[1:]:
            number = part.split(":", 1)[0].strip()
            if number.isdigit():
                out.append(int(number))
    return out


def read_trace(
    data: bytes | str | Path,
    *,
    source: str | None = None,
    max_batch: float | None = None,
    override_max_batch: bool = False,
    mapping: ColumnMapping | None = None,
    max_rows: int | None = None,
) -> Trace:
    """Parse a CSV trace: ``data`` is the file's content (bytes) or its path (str or Path).

    ``max_batch``: the server's max batch size, used when the trace has no max batch
    column (and instead of the column with ``override_max_batch``). ``mapping``: columns of a layout the
    reader does not know. ``max_rows``: refuse files with more data rows than this.
    Raises :class:`TraceError` (or :class:`TraceLayoutError`) with a message naming the
    file, lines and columns at fault.
    """
    if isinstance(data, (str, Path)):
        source = source or str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as exc:
            raise TraceError(f"{source}: cannot read: {exc.strerror or exc}") from None
    source = source or "trace"
    if max_batch is not None and (not math.isfinite(max_batch) or max_batch < 1):
        raise TraceError(f"the max batch size must be at least 1, got {max_batch!r}")
    text = _decode(data, source)
    line = _first_line(text)
    if not line:
        raise TraceError(f"{source}: the file is empty")
    notes: list[str] = []
    if mapping is not None:
        cells = _split_header(line)
        columns = mapping.columns()
        absent = [c for c in columns.values() if c not in cells]
        if absent:
            raise TraceError(f"{source}: mapped column(s) {', '.join(map(repr, absent))} not in the header")
        layout, rename, header = "mapped", {c: f for f, c in columns.items()}, True
        scale = {
            "wait_ms": TIME_UNITS_MS[mapping.wait_unit],
            "itl_ms": TIME_UNITS_MS[mapping.itl_unit],
            "rpm": RATE_UNITS_PER_MIN[mapping.rate_unit],
        }
    else:
        layout, rename_or_none, names = _detect(line, source)
        header = names is not None
        rename = rename_or_none or {}
        scale = {"wait_ms": 1000.0} if layout == "vllm" else {}
        if layout == "vllm":
            notes.append("avgWait was read as seconds and converted to ms.")
    leading_blank = text.index(line)
    first_line_number = text[:leading_blank].count("\n") + 1

    if max_rows is not None and text.count("\n") > max_rows:  # refuse before parsing
        rows = sum(1 for ln in text.splitlines() if ln.strip()) - (1 if header else 0)
        if rows > max_rows:
            raise TraceError(
                f"{source}: {rows:,} data rows, more than the {max_rows:,} this view replays; "
                "split the file or replay it with `python -m tuner replay`"
            )
    frame, bad_messages = _read_frame(text[leading_blank:], source, header, list(FIELDS) if not header else None)
    if header:
        frame = frame.rename(columns={c: c.strip() for c in frame.columns if isinstance(c, str)})
        frame = frame[[c for c in frame.columns if c in rename]].rename(columns=rename)
    # Line numbers: pandas keeps blank lines as empty rows (skip_blank_lines=False) and
    # drops the rows with a wrong cell count, which it reports by line.
    line_offset = first_line_number + (1 if header else 0)
    bad_lines = sorted(n + first_line_number - 1 for n in _bad_line_numbers(bad_messages))
    candidates = np.arange(line_offset, line_offset + len(frame) + len(bad_lines), dtype=np.int64)
    lines = np.setdiff1d(candidates, np.asarray(bad_lines, dtype=np.int64), assume_unique=True)[: len(frame)]
    blank = np.ones(len(frame), dtype=bool)
    for name in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[name].dtype):
            blank &= frame[name].isna().to_numpy()
        else:
            blank &= frame[name].fillna("").astype(str).str.strip().eq("").to_numpy()
    if not header and frame.shape[1] != len(FIELDS):
        raise TraceError(f"{source}: a headerless trace needs the seed's 6 columns, found {frame.shape[1]}")
    frame, lines = frame.loc[~blank].reset_index(drop=True), lines[~blank]
    if frame.empty and not bad_lines:
        raise TraceError(f"{source}: no data rows" + (" after the header" if header else ""))
    data_rows = len(frame) + len(bad_lines)
    if max_rows is not None and data_rows > max_rows:
        raise TraceError(
            f"{source}: {data_rows:,} data rows, more than the {max_rows:,} this view replays; "
            "split the file or replay it with `python -m tuner replay`"
        )

    values: dict[str, NDArray[np.float64]] = {}
    usable = np.ones(len(frame), dtype=bool)
    reasons: list[tuple[str, NDArray[np.bool_]]] = []
    for name in FIELDS:
        if name not in frame.columns:
            continue
        if pd.api.types.is_numeric_dtype(frame[name].dtype):  # the fast path: every cell a number
            number = frame[name].to_numpy(dtype=float)
            empty = np.zeros(len(frame), dtype=bool)
        else:
            raw = frame[name].fillna("").astype(str).str.strip()
            number = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
            empty = raw.eq("").to_numpy()
        optional = name == "batch_size"
        not_number = ~np.isfinite(number) & ~empty
        column = _column_label(name, rename)
        if not optional and empty.any():
            reasons.append((f"with an empty {column} cell", empty & usable))
        if not_number.any():
            reasons.append((f"with a {column} cell that is not a finite number", not_number & usable))
        number = number * scale.get(name, 1.0)
        negative = np.isfinite(number) & (number < 0)
        if negative.any():
            reasons.append((f"with a negative {column}", negative & usable))
        if optional:
            usable &= ~not_number & ~negative
            number = np.where(empty, np.nan, number)
        else:
            usable &= ~empty & ~not_number & ~negative
        values[name] = number

    missing = [f for f in REQUIRED if f not in values]
    if missing:
        raise TraceError(f"{source}: missing column(s) {', '.join(missing)}")
    if max_batch is not None and (override_max_batch or "max_batch" not in values):
        if "max_batch" in values:
            notes.append(f"The max batch size {max_batch:g} given overrides the file's column.")
        else:
            notes.append(f"The file has no max batch column: {max_batch:g} (given) is used.")
        values["max_batch"] = np.full(len(frame), float(max_batch))
    elif "max_batch" not in values:
        name = "maxConcurrency" if layout == "vllm" else "max_batch"
        raise TraceError(
            f"{source}: the trace has no {name} column; give the server's max batch size (e.g. --max-batch 64)"
        )
    else:
        small = np.isfinite(values["max_batch"]) & (values["max_batch"] < 1)
        if small.any():
            reasons.append((f"with a {_column_label('max_batch', rename)} below 1", small & usable))
        usable &= ~small
    if "batch_size" not in values:
        values["batch_size"] = np.full(len(frame), np.nan)

    skipped = [
        SkipReason(reason=f"row{'s' if int(mask.sum()) != 1 else ''} {text_}", count=int(mask.sum()),
                   lines=tuple(int(n) for n in lines[mask][:SHOWN_LINES]))
        for text_, mask in reasons
        if mask.any()
    ]
    if bad_lines:
        skipped.append(
            SkipReason(
                reason=f"row{'s' if len(bad_lines) != 1 else ''} with the wrong number of cells",
                count=len(bad_lines),
                lines=tuple(bad_lines[:SHOWN_LINES]),
            )
        )
    skipped = sorted((s for s in skipped if s.count), key=lambda s: s.lines[0] if s.lines else 0)
    if not usable.any() or not len(frame):
        why = "; ".join(s.describe() for s in skipped)
        raise TraceError(f"{source}: no usable rows: {why}")
    arrays = {name: _frozen(values[name][usable]) for name in FIELDS}
    return Trace(
        **arrays,
        line=_frozen(lines[usable]),
        layout=layout,
        source=source,
        data_rows=data_rows,
        skipped=tuple(skipped),
        notes=tuple(notes),
    )


def _column_label(field_name: str, rename: Mapping[str, str]) -> str:
    """The file's own name for a field (e.g. avgWait), or the field name."""
    for column, name in rename.items():
        if name == field_name:
            return column if column == field_name else f"{column} ({field_name})"
    return field_name


def _frozen(array: NDArray) -> NDArray:
    out = np.ascontiguousarray(array)
    out.setflags(write=False)
    return out
