"""A local HTTP server in a thread, for the API stand-ins of these tests (subclasses give ``_handler()``)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class HttpStandIn:
    def _serve(self) -> None:
        """Bind 127.0.0.1 on a free port with ``self._handler()``; started by ``with``."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"
