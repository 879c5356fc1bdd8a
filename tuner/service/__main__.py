"""``python -m tuner.service``: run the tuner service on uvicorn (see ``--help``)."""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from tuner.errors import TunerError
from tuner.service.app import TunerService, create_app
from tuner.service.settings import settings_from

SWITCH_INTERVAL_S = 0.001


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from(argv)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        service = TunerService.open(settings)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The cycle runs on a worker thread: hand the GIL back to the event loop every 1 ms
    # (default 5 ms), so /getparams waits less behind the cycle's Python work.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Everything imported so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which hold the GIL for tens of ms with a big heap.
    gc.collect()
    gc.freeze()
    app = create_app(settings, service)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
