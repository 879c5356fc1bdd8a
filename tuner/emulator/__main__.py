"""``python -m tuner.emulator``: serve emulated vLLM metrics for Prometheus.

Example (two servers, 60× faster than real time)::

    python -m tuner.emulator --port 8000 --servers 2 --rpm 300,500 --alpha 8,12 --beta 0.3,0.5 --speedup 60
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import numpy as np

from tuner.emulator.exposition import ITL_METRICS
from tuner.emulator.server import Emulator, schedule_from_scenario, serve
from tuner.emulator.simulation import TOKEN_DISTRIBUTIONS, ServerParams
from tuner.errors import TunerError
from tuner.scenario import load_scenario


def _numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list, got {text!r}") from None
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tuner.emulator",
        description="Serve /metrics of emulated vLLM servers (discrete-event simulation of continuous batching). "
        "Numeric knobs take one value for every server or a comma-separated list, one per server.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default 8000)")
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    p.add_argument("--servers", type=int, default=1, help="number of emulated servers (default 1)")
    p.add_argument("--rpm", type=_numbers, default=[300.0], help="arrival rate, requests/min (default 300)")
    p.add_argument("--tokens", type=_numbers, default=[128.0], help="mean output tokens per request (default 128)")
    p.add_argument("--alpha", type=_numbers, default=[8.0], help="iteration time α, ms (default 8)")
    p.add_argument("--beta", type=_numbers, default=[0.25], help="iteration time per running request β, ms (0.25)")
    p.add_argument("--max-batch", type=_numbers, default=[64.0], help="max running requests (default 64)")
    p.add_argument("--token-distribution", choices=TOKEN_DISTRIBUTIONS, default="geometric")
    p.add_argument("--model-name", default="facebook/opt-125m", help="model_name label (default facebook/opt-125m)")
    p.add_argument("--namespace", default="platform-opt", help="namespace label; empty: none (default platform-opt)")
    p.add_argument("--server-label", default="pod", help="label naming each server (default pod)")
    p.add_argument("--server-prefix", default="vllm-opt-125m", help="server names are PREFIX-0, PREFIX-1, …")
    p.add_argument("--speedup", type=float, default=1.0, help="emulated seconds per real second (default 1)")
    p.add_argument("--itl-metric", choices=tuple(ITL_METRICS), default="both",
                   help="ITL histogram name(s): inter_token_latency (vLLM ≥ 0.11), time_per_output_token, both")
    p.add_argument("--scenario", type=Path, help="scenario YAML: change the knobs of every server step by step")
    p.add_argument("--step-seconds", type=float, default=60.0, help="emulated seconds per scenario step (default 60)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh entropy)")
    return p


def _per_server(name: str, values: list[float], n: int) -> list[float]:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise TunerError(f"--{name} has {len(values)} values but --servers is {n}")
    return values


def build_emulator(args: argparse.Namespace) -> Emulator:
    n = args.servers
    if n < 1:
        raise TunerError("--servers must be at least 1")
    keys = ("rpm", "tokens", "alpha", "beta", "max_batch")
    columns = {k: _per_server(k.replace("_", "-"), getattr(args, k), n) for k in keys}
    params = []
    for i in range(n):
        try:
            params.append(
                ServerParams(
                    rpm=columns["rpm"][i],
                    avg_tokens=columns["tokens"][i],
                    alpha_ms=columns["alpha"][i],
                    beta_ms=columns["beta"][i],
                    max_batch=columns["max_batch"][i],
                    token_distribution=args.token_distribution,
                ).validated()
            )
        except ValueError as exc:
            raise TunerError(f"server {i}: {exc}") from None
    schedule = schedule_from_scenario(load_scenario(args.scenario), args.step_seconds) if args.scenario else []
    try:
        return Emulator(
            params,
            [f"{args.server_prefix}-{i}" for i in range(n)],
            np.random.default_rng(args.seed),
            model_name=args.model_name,
            namespace=args.namespace or None,
            server_label=args.server_label,
            speedup=args.speedup,
            itl_metric=args.itl_metric,
            schedule=schedule,
        )
    except ValueError as exc:
        raise TunerError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        emulator = build_emulator(args)
        httpd = serve(emulator, args.host, args.port)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    port = httpd.server_address[1]
    if args.port_file:
        args.port_file.write_text(str(port))
    print(
        f"emulating {len(emulator.names)} server(s) {', '.join(emulator.names)} at {args.speedup:g}x: "
        f"http://{args.host}:{port}/metrics (control: /control)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
