"""Command line: ``python -m tuner simulate|replay|online …``.

Every subcommand prints one line per step as a table, CSV or jsonl (one JSON object
per step, a stable interface for scripts). Bad input files end the command with a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from tuner.config import FilterConfig, default_config, load_config
from tuner.emulator.simulation import simulate_windows
from tuner.errors import TunerError
from tuner.observers.simulated import simulate
from tuner.scenario import load_scenario, seed_scenario
from tuner.tuner import StepRecord, Tuner

FORMATS = ("table", "csv", "jsonl")
SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}_{sub}"] = v
        else:
            out[key] = value
    return out


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> None:
    """Print step rows (the jsonl layout) as a table, CSV or jsonl, as they come."""
    writer: Any = None
    for row in rows:
        row = _json_safe(row)
        if fmt == "jsonl":
            out.write(json.dumps(row) + "\n")
        elif fmt == "csv":
            flat = _flat(row)
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(flat))
                writer.writeheader()
            writer.writerow(flat)
        else:
            flat = _flat(row)
            if writer is None:
                writer = list(flat)
                out.write("  ".join(f"{k:>12}" for k in writer) + "\n")
            out.write("  ".join(f"{_cell(flat.get(k)):>12}" for k in writer) + "\n")
        out.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def step_rows(tuner: Tuner, windows: Iterable[Any], extra: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Step ``tuner`` through ``(env, window)`` pairs and yield jsonl rows."""
    for env, window in windows:
        record: StepRecord = tuner.step(env)
        yield {**record.to_dict(), **extra(window)}


def _config(path: str | None) -> FilterConfig:
    return load_config(path) if path else default_config()


def cmd_simulate(args: argparse.Namespace) -> None:
    scenario = load_scenario(args.scenario) if args.scenario else seed_scenario()
    tuner = Tuner(_config(args.config))
    rng = np.random.default_rng(args.seed)
    source = simulate_windows(scenario, rng) if args.simulator == "discrete-event" else simulate(scenario, rng)
    windows = ((w.env, w) for w in source)
    rows = step_rows(tuner, windows, lambda w: {"true_alpha": w.true_alpha, "true_beta": w.true_beta})
    write_rows(rows, args.format, sys.stdout)


def _column_mapping(text: str) -> Any:
    """``--columns rpm=RPM,avg_tokens=tok,wait=w,itl=i[,max_batch=..,batch_size=..,wait_unit=s,...]``."""
    from tuner.observers.offline import ColumnMapping

    fields: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise TunerError(f"--columns: expected name=column pairs separated by commas, got {part!r}")
        fields[name.strip()] = value.strip()
    try:
        return ColumnMapping(**fields)
    except TypeError as exc:
        raise TunerError(f"--columns: {exc}; names are rpm, avg_tokens, wait, itl, max_batch, batch_size, "
                         "wait_unit, itl_unit, rate_unit") from None


def cmd_replay(args: argparse.Namespace) -> None:
    from tuner.observers.offline import read_trace

    if args.max_batch is not None and args.max_batch < 1:
        raise TunerError(f"--max-batch must be at least 1, got {args.max_batch}")
    mapping = _column_mapping(args.columns) if args.columns else None
    trace = read_trace(Path(args.file), max_batch=args.max_batch, override_max_batch=args.max_batch is not None,
                       mapping=mapping)
    if trace.skipped or trace.notes:
        print(f"note: {trace.summary()}", file=sys.stderr)
    tuner = Tuner(_config(args.config))
    windows = ((trace.environment(i), int(trace.line[i])) for i in range(len(trace)))
    write_rows(step_rows(tuner, windows, lambda line: {"line": line}), args.format, sys.stdout)


def cmd_online(args: argparse.Namespace) -> None:
    import time

    from tuner.observers.prometheus import PrometheusObserver, PrometheusSettings, load_query_templates
    from tuner.online import OnlineTuner

    if args.steps is not None and args.steps < 1:
        raise TunerError(f"--steps must be at least 1, got {args.steps}")
    if not args.interval > 0:
        raise TunerError(f"--interval must be positive, got {args.interval}")
    settings = PrometheusSettings.from_env(
        address=args.prometheus,
        token=args.token,
        namespace=args.namespace,
        model=args.model,
        window=args.window,
        max_batch=args.max_batch,
        server_label=args.server_label,
        time_scale=args.time_scale,
        queries=load_query_templates(args.queries) if args.queries else None,
    )
    online = OnlineTuner(PrometheusObserver(settings), _config(args.config))

    def rows() -> Iterator[dict[str, Any]]:
        count = 0
        next_at = time.monotonic()
        while args.steps is None or count < args.steps:
            cycle = online.cycle()
            count += 1
            if not cycle.ok:
                print(f"step {count}: {cycle.status}", file=sys.stderr, flush=True)
            for row in cycle.rows():
                if args.server is None or row["server"] == args.server:
                    yield row
            if args.steps is not None and count >= args.steps:
                break
            next_at += args.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    write_rows(rows(), args.format, sys.stdout)
    if online.failures == online.cycles:
        raise TunerError(f"no cycle succeeded; the last one: {online.last.status if online.last else 'none ran'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuner", description="Tune alpha/beta of an LLM server's queueing model."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="tune against the simulated observer")
    sim.add_argument("--scenario", help="scenario YAML (default: the seed's 3-phase demo)")
    sim.add_argument("--config", help="tuner configuration, JSON or YAML (default: the seed's)")
    sim.add_argument("--seed", type=int, default=0, help="random seed of the observation noise")
    sim.add_argument(
        "--simulator",
        choices=("analytic", "discrete-event"),
        default="analytic",
        help="analytic queue plus uniform noise (default), or a discrete-event continuous-batching server",
    )
    sim.add_argument("--format", choices=FORMATS, default="table")
    sim.set_defaults(func=cmd_simulate)

    rep = sub.add_parser("replay", help="tune against a CSV trace (project, seed or vLLM layout)")
    rep.add_argument("file", help="CSV trace")
    rep.add_argument("--config", help="tuner configuration, JSON or YAML (default: the seed's)")
    rep.add_argument("--max-batch", type=int, help="server max batch size (needed when the trace has none; "
                     "overrides the trace's column)")
    rep.add_argument("--columns", help="column mapping for other layouts, e.g. "
                     "rpm=rate,avg_tokens=tokens,wait=queue_s,wait_unit=s,itl=itl_ms,max_batch=max_seqs")
    rep.add_argument("--format", choices=FORMATS, default="table")
    rep.set_defaults(func=cmd_replay)

    onl = sub.add_parser("online", help="tune every server from a Prometheus that scrapes vLLM")
    onl.add_argument("--prometheus", help="Prometheus URL (default: $PROMETHEUS_ADDRESS, else http://localhost:9090)")
    onl.add_argument("--token", help="bearer token (default: $TOKEN; prefer the variable, arguments show in ps)")
    onl.add_argument("--namespace", default="platform-opt", help="namespace label (default platform-opt; '' for any)")
    onl.add_argument("--model", default="opt-125", help="regex searched in model_name (default opt-125)")
    onl.add_argument("--window", default="1m", help="query window, a Prometheus duration (default 1m)")
    onl.add_argument("--max-batch", type=int, default=256, help="max batch size of the servers (default 256)")
    onl.add_argument("--server-label", default="pod", help="label that names a server (default pod)")
    onl.add_argument("--server", help="print only this server's rows (default: every server)")
    onl.add_argument("--steps", type=int, help="stop after N cycles (default: run until interrupted)")
    onl.add_argument("--interval", type=float, default=60.0, help="seconds between cycles (default 60)")
    onl.add_argument("--queries", help="YAML file of PromQL templates overriding the defaults")
    onl.add_argument("--time-scale", type=float, default=1.0,
                     help="emulated seconds per real second (the emulator's --speedup; default 1)")
    onl.add_argument("--config", help="tuner configuration, JSON or YAML (default: the seed's)")
    onl.add_argument("--format", choices=FORMATS, default="table")
    onl.set_defaults(func=cmd_online)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    return 0
