"""A small client of the HTTP lookup API (:mod:`lakeloop.serve_api`): one keep-alive connection.

>>> client = LookupClient("127.0.0.1", 8080)          # doctest: +SKIP
>>> client.prediction("k1")                           # doctest: +SKIP
(200, {'key': 'k1', 'value': 0.5, 'realtime': {...}})
>>> client.lookup("<route>", 42)                      # doctest: +SKIP
(200, {...})
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote

__all__ = ["LookupClient"]


class LookupClient:
    """``GET`` the lookup routes over one persistent HTTP/1.1 connection; returns ``(status, body)``."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, Any]:
        """``GET path``; the connection is reopened once when the server closed it."""
        for attempt in (0, 1):
            conn = self._conn or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._conn = conn
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                return response.status, json.loads(response.read() or b"null")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def lookup(self, route: str, key: Any) -> tuple[int, Any]:
        """``GET /v1/<route>/<key>``: a route of ``serve.routes``."""
        return self.get(f"/v1/{route}/{quote(str(key), safe='')}")

    def prediction(self, key: Any) -> tuple[int, Any]:
        return self.lookup("predictions", key)

    def health(self) -> tuple[int, Any]:
        return self.get("/healthz")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LookupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
