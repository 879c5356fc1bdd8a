"""The HTTP application: ``create_app(settings)`` builds it, its lifespan owns the tuning loop.

Endpoints (all JSON except /metrics):

- ``GET /getparams?server_name=NAME`` → ``{"server_name", "alpha", "beta", …}``; 400 without a name, 404 unknown
- ``GET /servers`` → every server's estimate, σ, last update, NIS and step counts
- ``GET /servers/{name}`` → one of them
- ``POST /tune`` with a /getenv-shaped object → steps those servers now
- ``GET /healthz`` → status, servers, the last cycle
- ``GET /metrics`` → Prometheus text format
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tuner.errors import TunerError
from tuner.observers.prometheus import load_query_templates
from tuner.service.collector import CollectorSource, decode, parse_environments
from tuner.service.fleet import Fleet, FleetSnapshot, StepOutcome
from tuner.service.metrics import CONTENT_TYPE, CycleReport, ServiceMetrics
from tuner.service.settings import Settings, load_filter_config
from tuner.service.sources import PrometheusSource, Readings, Source, SourceError
from tuner.service.store import Store

log = logging.getLogger("tuner.service")

MAX_LOGGED_PROBLEMS = 5
MAX_TUNE_BODY_BYTES = 64 * 1024 * 1024


def make_source(settings: Settings) -> Source | None:
    if settings.source == "none":
        return None
    if settings.source == "prometheus":
        overrides = {
            "address": settings.prometheus_address,
            "namespace": settings.prometheus_namespace,
            "model": settings.prometheus_model,
            "window": settings.prometheus_window,
            "max_batch": settings.prometheus_max_batch,
            "server_label": settings.prometheus_server_label,
            "time_scale": settings.prometheus_time_scale,
            "queries": load_query_templates(settings.prometheus_queries) if settings.prometheus_queries else None,
        }
        return PrometheusSource(**{k: v for k, v in overrides.items() if v is not None})
    return CollectorSource(settings.collector_url, settings.collector_timeout_s)


class TunerService:
    """The fleet, its source and counters; the tuning cycle and the push."""

    def __init__(self, settings: Settings, fleet: Fleet, source: Source | None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.source = source
        self.metrics = ServiceMetrics()
        self.started_s = time.time()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-writer")
        self._cycle_number = 0
        self._cache_lock = threading.Lock()
        self._servers_json: tuple[FleetSnapshot, bytes] | None = None

    def servers_json(self) -> bytes:
        """The /servers body of the current snapshot, encoded once per snapshot (10,000 servers: ~3 MB)."""
        snap = self.fleet.current
        with self._cache_lock:
            cached = self._servers_json
        if cached is not None and cached[0] is snap:
            return cached[1]
        order = sorted(range(len(snap)), key=snap.names.__getitem__)
        body = json.dumps(
            {"version": snap.version, "published": snap.published_s, "servers": [snap.server(i) for i in order]},
            allow_nan=False,
        ).encode()
        with self._cache_lock:
            self._servers_json = (snap, body)
        return body

    @staticmethod
    def open(settings: Settings, source: Source | None = None) -> TunerService:
        """Load the configuration and the saved state; TunerError with a message when one is unusable."""
        config = load_filter_config(settings)
        store = Store(settings.state_path) if settings.state_path else None
        fleet = Fleet(config, store, forget_after_s=settings.forget_after_s)
        restored = fleet.load()
        if restored:
            log.info("restored %d servers from %s (version %d)", restored, settings.state_path, fleet.current.version)
        if source is None:
            source = make_source(settings)
        return TunerService(settings, fleet, source)

    # --- writing ---------------------------------------------------------------------
    async def step(self, readings: Readings, *, detail: bool = False) -> StepOutcome:
        """Step the fleet on the writer thread (the event loop keeps answering)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: self.fleet.step(readings, detail=detail))

    async def cycle(self) -> CycleReport:
        """Fetch from the source and step every server it reported. Never raises."""
        assert self.source is not None
        self._cycle_number += 1
        number = self._cycle_number
        started = time.perf_counter()
        outcome: StepOutcome | None = None
        error: str | None = None
        fetch_s = math.nan
        try:
            readings = await asyncio.to_thread(self.source.fetch)
            fetch_s = time.perf_counter() - started
            outcome = await self.step(readings)
        except SourceError as exc:
            error = str(exc)
            self.metrics.error(exc.kind)
            log.warning("cycle %d skipped: %s", number, exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.metrics.error("cycle_failed")
            log.exception("cycle %d failed", number)
        duration = time.perf_counter() - started
        if outcome is not None:
            self.account(outcome, f"cycle {number}")
        report = CycleReport(
            number=number,
            finished_s=time.time(),
            duration_s=duration,
            fetch_s=fetch_s,
            step_s=outcome.step_s if outcome else 0.0,
            save_s=outcome.save_s if outcome else 0.0,
            ok=outcome is not None,
            stepped=outcome.stepped if outcome else 0,
            accepted=outcome.accepted if outcome else 0,
            rejected=outcome.rejected if outcome else 0,
            skipped=outcome.skipped if outcome else 0,
            problems=len(outcome.problems) + len(outcome.not_added) if outcome else 0,
            error=error or (outcome.persist_error if outcome else None),
        )
        self.metrics.cycle(report)
        log.debug("cycle %d: %s", number, report)
        return report

    def account(self, outcome: StepOutcome, what: str) -> None:
        if outcome.problems:
            self.metrics.error("bad_server", len(outcome.problems))
            shown = "; ".join(f"{n}: {p}" for n, p in list(outcome.problems.items())[:MAX_LOGGED_PROBLEMS])
            more = len(outcome.problems) - MAX_LOGGED_PROBLEMS
            log.warning(
                "%s: %d server(s) not stepped (%s%s)",
                what,
                len(outcome.problems),
                shown,
                f"; and {more} more" if more > 0 else "",
            )
        if outcome.not_added:
            log.info(
                "%s: %d new server(s) not added yet, their first window is unusable (%s)",
                what,
                len(outcome.not_added),
                "; ".join(f"{n}: {p}" for n, p in list(outcome.not_added.items())[:MAX_LOGGED_PROBLEMS]),
            )
        if outcome.skipped:
            self.metrics.error("skipped_window", outcome.skipped)
        if not outcome.persisted:
            self.metrics.error("persist_failed")
        if outcome.forgotten:
            self.metrics.forgot(len(outcome.forgotten))
        if outcome.added:
            log.info(
                "%s: %d new server(s): %s", what, len(outcome.added), ", ".join(outcome.added[:MAX_LOGGED_PROBLEMS])
            )

    async def loop(self) -> None:
        period = self.settings.period_s
        while True:
            started = time.monotonic()
            await self.cycle()
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        if self.source is not None:
            self.source.close()
        self.fleet.close()


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings, service: TunerService | None = None) -> FastAPI:
    """The FastAPI application. Nothing runs until its lifespan starts: then the service
    is opened (unless one is given) and the loop runs every ``settings.period_s`` seconds."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or await asyncio.to_thread(TunerService.open, settings)
        app.state.service = svc
        task = None
        if settings.period_s > 0 and svc.source is not None:
            task = asyncio.create_task(svc.loop(), name="tuning-loop")
            log.info("tuning every %g s from %s", settings.period_s, svc.source.description)
        else:
            log.info(
                "no tuning loop (period %g, source %s); POST /tune still works", settings.period_s, settings.source
            )
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(svc.close)

    app = FastAPI(title="model-tuner service", lifespan=lifespan)

    def svc_of(request: Request) -> TunerService:
        return request.app.state.service  # type: ignore[no-any-return]

    @app.get("/getparams")
    async def getparams(request: Request) -> Response:
        name = request.query_params.get("server_name")
        if not name:
            return _error(400, "server_name is required: GET /getparams?server_name=NAME")
        snap = svc_of(request).fleet.current  # one reference: alpha and beta of the same update
        i = snap.index.get(name)
        if i is None:
            return _error(404, f"unknown server {name!r}: no window from it yet")
        return JSONResponse(
            {
                "server_name": name,
                "alpha": float(snap.alpha_ms[i]),
                "beta": float(snap.beta_ms[i]),
                "alpha_std": float(snap.alpha_std_ms[i]),
                "beta_std": float(snap.beta_std_ms[i]),
                "version": snap.version,
            }
        )

    @app.get("/servers")
    def servers(request: Request) -> Response:
        return Response(svc_of(request).servers_json(), media_type="application/json")

    @app.get("/servers/{name}")
    async def server(name: str, request: Request) -> Response:
        snap = svc_of(request).fleet.current
        i = snap.index.get(name)
        if i is None:
            return _error(404, f"unknown server {name!r}")
        return JSONResponse(snap.server(i))

    @app.post("/tune")
    async def tune(request: Request) -> Response:
        svc = svc_of(request)
        body = await request.body()
        if len(body) > MAX_TUNE_BODY_BYTES:
            return _error(413, f"body larger than {MAX_TUNE_BODY_BYTES} bytes")
        try:
            readings = await asyncio.to_thread(lambda: parse_environments(decode(body)))
        except SourceError as exc:
            svc.metrics.error("tune_garbage")
            return _error(400, f"expected the /getenv shape, a JSON object of server name → measurements: {exc}")
        if not readings.names and not readings.problems:
            return _error(400, "no servers in the body")
        outcome = await svc.step(readings, detail=True)
        svc.account(outcome, "POST /tune")
        if outcome.stepped:
            svc.metrics.push()
        payload: dict[str, Any] = {
            "version": svc.fleet.current.version,
            "results": outcome.results,
            "errors": {**dict(outcome.problems), **{n: f"not added: {p}" for n, p in outcome.not_added.items()}},
        }
        return JSONResponse(payload, status_code=200 if outcome.stepped else 422)

    @app.get("/healthz")
    async def healthz(request: Request) -> Response:
        svc = svc_of(request)
        snap = svc.fleet.current
        last = svc.metrics.last_cycle
        status = "ok" if last is None or last.ok else "degraded"
        return JSONResponse(
            {
                "status": status,
                "servers": len(snap),
                "version": snap.version,
                "uptime_s": time.time() - svc.started_s,
                "source": svc.source.description if svc.source else None,
                "period_s": settings.period_s,
                "forget_after_s": settings.forget_after_s,
                "forgotten": svc.metrics.forgotten,
                "cycles": svc.metrics.cycles,
                "last_cycle": None if last is None else _json_safe(dataclasses.asdict(last)),
                "errors": svc.metrics.errors(),
                "state": settings.state_path,
            }
        )

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        svc = svc_of(request)
        return Response(svc.metrics.render(svc.fleet.current), media_type=CONTENT_TYPE)

    @app.get("/")
    async def index() -> Response:
        return JSONResponse(
            {
                "service": "model-tuner",
                "endpoints": [
                    "/getparams?server_name=NAME",
                    "/servers",
                    "/servers/{name}",
                    "POST /tune",
                    "/healthz",
                    "/metrics",
                ],
            }
        )

    return app


__all__ = ["TunerError", "TunerService", "create_app", "make_source"]
