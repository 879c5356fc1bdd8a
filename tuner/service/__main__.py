"""``python -m tuner.service``: run the tuner service on uvicorn (see ``--help``)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from tuner.errors import TunerError
from tuner.service.app import TunerService, create_app
from tuner.service.settings import settings_from


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
    app = create_app(settings, service)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
