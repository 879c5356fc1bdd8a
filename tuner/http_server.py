"""The threading HTTP server behind the emulator and the demo collector."""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class QuietHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that reports a failed request in one line instead of a traceback.

    A client that hangs up mid-request (a scraper's timeout, a load generator stopping)
    is normal here and not reported at all.
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        log.warning("request from %s failed: %s", client_address[0], error)
