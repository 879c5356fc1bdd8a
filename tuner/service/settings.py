"""Service settings: command-line flags over environment variables over defaults.

Every variable and its default is listed in the README ("Tuner service").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.config import FilterConfig, default_config, load_config
from tuner.errors import ConfigError

DEFAULT_TUNER_HOST = "127.0.0.1"
DEFAULT_TUNER_PORT = 8081
"""Not 8080: the collector defaults to 8080 (the reference defaults both to 8080)."""
DEFAULT_COLLECTOR_HOST = "127.0.0.1"
DEFAULT_COLLECTOR_PORT = 8080
DEFAULT_PERIOD_S = 10.0
DEFAULT_COLLECTOR_TIMEOUT_S = 5.0
DEFAULT_STATE = "tuner-state.sqlite"
DEFAULT_FORGET_AFTER_S = 86400.0
"""A server with no window for a day is dropped (pods come and go; their filters would pile up)."""
SOURCES = ("collector", "prometheus", "none")
CONFIG_NAMES = ("config.json", "config.yaml", "config.yml")
"""Files looked for, in this order, when the configuration path is a directory."""


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_TUNER_HOST
    port: int = DEFAULT_TUNER_PORT
    collector_host: str = DEFAULT_COLLECTOR_HOST
    collector_port: int = DEFAULT_COLLECTOR_PORT
    collector_timeout_s: float = DEFAULT_COLLECTOR_TIMEOUT_S
    period_s: float = DEFAULT_PERIOD_S
    """Seconds between tuning cycles; 0 disables the loop (POST /tune still works)."""
    forget_after_s: float = DEFAULT_FORGET_AFTER_S
    """Drop a server after this many seconds without a window for it; 0 keeps every server."""
    config_path: str | None = None
    """A configuration file, or a directory holding one of CONFIG_NAMES; None: the built-in default."""
    state_path: str | None = DEFAULT_STATE
    """SQLite file of the filter states; None or "" keeps them in memory only."""
    source: str = "collector"
    """Where the loop gets its windows: "collector" (GET /getenv), "prometheus" or "none"."""
    prometheus_address: str | None = None
    prometheus_namespace: str | None = None
    prometheus_model: str | None = None
    prometheus_window: str | None = None
    prometheus_max_batch: int | None = None
    prometheus_server_label: str | None = None
    prometheus_time_scale: float | None = None
    """Emulated seconds per real second (the emulator's --speedup); 1 for real servers."""
    prometheus_queries: str | None = None
    """A YAML/JSON file of PromQL templates overriding the observer's defaults."""
    log_level: str = "info"

    @property
    def collector_url(self) -> str:
        host = self.collector_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return f"http://{host}:{self.collector_port}/getenv"


def resolve_config_path(path: str | Path) -> Path:
    """The configuration file for a file or directory path (ConfigError when there is none)."""
    p = Path(path)
    if p.is_dir():
        for name in CONFIG_NAMES:
            if (p / name).is_file():
                return p / name
        raise ConfigError(f"{p}: a configuration directory must hold one of {', '.join(CONFIG_NAMES)}")
    return p


def load_filter_config(settings: Settings) -> FilterConfig:
    if not settings.config_path:
        return default_config()
    return load_config(resolve_config_path(settings.config_path))


def _number(env: Mapping[str, str], key: str, kind: type, default: float | int | None) -> float | int | None:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a valid {kind.__name__}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tuner.service",
        description="Serve tuned alpha/beta over HTTP and tune them periodically from a collector or Prometheus.",
    )
    p.add_argument("--host", help=f"listen address (TUNER_HOST, default {DEFAULT_TUNER_HOST})")
    p.add_argument("--port", type=int, help=f"listen port (TUNER_PORT, default {DEFAULT_TUNER_PORT})")
    p.add_argument("--collector-host", help=f"collector host (COLLECTOR_HOST, default {DEFAULT_COLLECTOR_HOST})")
    p.add_argument(
        "--collector-port", type=int, help=f"collector port (COLLECTOR_PORT, default {DEFAULT_COLLECTOR_PORT})"
    )
    p.add_argument(
        "--collector-timeout",
        type=float,
        help=f"seconds to wait for /getenv (COLLECTOR_TIMEOUT, default {DEFAULT_COLLECTOR_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--period", type=float, help=f"seconds between cycles, 0 disables (TUNER_PERIOD, default {DEFAULT_PERIOD_S:g})"
    )
    p.add_argument(
        "--forget-after",
        type=float,
        help="seconds without a window after which a server is dropped, 0 never "
        f"(TUNER_FORGET_AFTER, default {DEFAULT_FORGET_AFTER_S:g})",
    )
    p.add_argument("--config", help="configuration file or directory (TUNER_CONFIG, default: built-in seed config)")
    p.add_argument("--state", help=f"SQLite state file, '' for none (TUNER_STATE, default {DEFAULT_STATE})")
    p.add_argument("--source", choices=SOURCES, help="where windows come from (TUNER_SOURCE, default collector)")
    p.add_argument("--prometheus", help="Prometheus address for --source prometheus (PROMETHEUS_ADDRESS)")
    p.add_argument("--namespace", help="Prometheus namespace filter (TUNER_PROM_NAMESPACE)")
    p.add_argument("--model", help="model name pattern (TUNER_PROM_MODEL)")
    p.add_argument("--window", help="query window, e.g. 1m (TUNER_PROM_WINDOW)")
    p.add_argument("--max-batch", type=int, help="max batch size of the servers (TUNER_PROM_MAX_BATCH)")
    p.add_argument("--server-label", help="label that identifies a server, e.g. pod (TUNER_PROM_SERVER_LABEL)")
    p.add_argument("--time-scale", type=float, help="emulator speed-up, 1 for real servers (TUNER_PROM_TIME_SCALE)")
    p.add_argument("--queries", help="YAML/JSON file of PromQL templates overriding the defaults (TUNER_PROM_QUERIES)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="(TUNER_LOG_LEVEL, default info)")
    return p


def settings_from(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags override environment variables, which override the defaults."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)

    def pick(flag: object, key: str, kind: type, default: object) -> object:
        if flag is not None:
            return flag
        if kind is str:
            raw = env.get(key)
            return default if raw is None or raw == "" else raw
        return _number(env, key, kind, default)  # type: ignore[arg-type]

    state = args.state if args.state is not None else env.get("TUNER_STATE", DEFAULT_STATE)
    source = pick(args.source, "TUNER_SOURCE", str, "collector")
    if source not in SOURCES:
        raise ConfigError(f"TUNER_SOURCE={source!r} must be one of {', '.join(SOURCES)}")
    settings = Settings(
        host=pick(args.host, "TUNER_HOST", str, DEFAULT_TUNER_HOST),  # type: ignore[arg-type]
        port=pick(args.port, "TUNER_PORT", int, DEFAULT_TUNER_PORT),  # type: ignore[arg-type]
        collector_host=pick(args.collector_host, "COLLECTOR_HOST", str, DEFAULT_COLLECTOR_HOST),  # type: ignore[arg-type]
        collector_port=pick(args.collector_port, "COLLECTOR_PORT", int, DEFAULT_COLLECTOR_PORT),  # type: ignore[arg-type]
        collector_timeout_s=pick(args.collector_timeout, "COLLECTOR_TIMEOUT", float, DEFAULT_COLLECTOR_TIMEOUT_S),  # type: ignore[arg-type]
        period_s=pick(args.period, "TUNER_PERIOD", float, DEFAULT_PERIOD_S),  # type: ignore[arg-type]
        forget_after_s=pick(args.forget_after, "TUNER_FORGET_AFTER", float, DEFAULT_FORGET_AFTER_S),  # type: ignore[arg-type]
        config_path=pick(args.config, "TUNER_CONFIG", str, None),  # type: ignore[arg-type]
        state_path=state or None,
        source=source,  # type: ignore[arg-type]
        prometheus_address=pick(args.prometheus, "PROMETHEUS_ADDRESS", str, None),  # type: ignore[arg-type]
        # an empty namespace is meaningful (any namespace), so a set-but-empty variable counts
        prometheus_namespace=args.namespace if args.namespace is not None else env.get("TUNER_PROM_NAMESPACE"),
        prometheus_model=pick(args.model, "TUNER_PROM_MODEL", str, None),  # type: ignore[arg-type]
        prometheus_window=pick(args.window, "TUNER_PROM_WINDOW", str, None),  # type: ignore[arg-type]
        prometheus_max_batch=pick(args.max_batch, "TUNER_PROM_MAX_BATCH", int, None),  # type: ignore[arg-type]
        prometheus_server_label=pick(args.server_label, "TUNER_PROM_SERVER_LABEL", str, None),  # type: ignore[arg-type]
        prometheus_time_scale=pick(args.time_scale, "TUNER_PROM_TIME_SCALE", float, None),  # type: ignore[arg-type]
        prometheus_queries=pick(args.queries, "TUNER_PROM_QUERIES", str, None),  # type: ignore[arg-type]
        log_level=pick(args.log_level, "TUNER_LOG_LEVEL", str, "info"),  # type: ignore[arg-type]
    )
    check(settings)
    return settings


def check(settings: Settings) -> None:
    if not 0 < settings.port < 65536:
        raise ConfigError(f"TUNER_PORT={settings.port} is not a port number")
    if not 0 < settings.collector_port < 65536:
        raise ConfigError(f"COLLECTOR_PORT={settings.collector_port} is not a port number")
    if not settings.period_s >= 0:
        raise ConfigError(f"TUNER_PERIOD={settings.period_s} must be 0 (no loop) or a positive number of seconds")
    if not settings.forget_after_s >= 0:
        raise ConfigError(
            f"TUNER_FORGET_AFTER={settings.forget_after_s} must be 0 (keep every server) or a number of seconds"
        )
    if not settings.collector_timeout_s > 0:
        raise ConfigError(f"COLLECTOR_TIMEOUT={settings.collector_timeout_s} must be positive")
    if settings.source == "prometheus" and not settings.prometheus_address:
        raise ConfigError("--source prometheus needs --prometheus URL or PROMETHEUS_ADDRESS")
