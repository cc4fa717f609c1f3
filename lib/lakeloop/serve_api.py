"""HTTP lookup API over the serving store (stdlib ``http.server``, JSON responses).

Routes (``GET`` only):

``/v1/recommendations/<user_id>``
    The user's top-N items loaded by bulk inference, merged with the user's real-time view:
    ``{"user_id": 42, "items": [{"item_id": 7, "score": 0.93}, ...], "realtime": {...}}``
    (``realtime`` only when the real-time view has the user; ``items`` is ``[]`` for a user known
    only to the real-time view).  ``user_id`` must be a decimal integer.
``/v1/predictions/<key>``
    Any key of the current version merged with its real-time value:
    ``{"key": "...", "value": ..., "realtime": ...}`` (the fields of a mapping value are returned
    as they are, a scalar or list value under ``value``).
``/healthz``
    ``{"status": "ok", "version": "<current version or null>"}``; 503 when the store cannot be read.

Unknown keys answer 404, malformed ids or paths 400, other routes 404, all with
``{"error": "..."}``.  Every read resolves the current version and the value in one consistent step
(:meth:`lakeloop.serving.ServingStore.lookup`), so a response never mixes two versions.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from lakeloop.job import JobResult

if TYPE_CHECKING:
    from lakeloop.serving import ServingStore
    from lakeloop.session import RunContext

__all__ = ["LookupAPI", "make_server", "serve_in_thread"]

log = logging.getLogger(__name__)

_USER_ID = re.compile(r"^-?[0-9]{1,19}$")
# serving keys are written as text; ':' and glob characters never occur in them
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")
_INT64 = 2 ** 63

Response = tuple[int, dict[str, Any]]


def _error(status: HTTPStatus, message: str) -> Response:
    return int(status), {"error": message}


class LookupAPI:
    """Routing and lookups, independent of the HTTP server: ``api.get(path) -> (status, body)``."""

    def __init__(self, store: ServingStore) -> None:
        self.store = store

    def get(self, target: str) -> Response:
        """The response to ``GET target`` (path and optional query string)."""
        path = urlsplit(target).path
        parts = path.strip("/").split("/") if path.strip("/") else []
        if parts == ["healthz"]:
            return self.health()
        if len(parts) >= 2 and parts[0] == "v1" and parts[1] in ("recommendations", "predictions"):
            if len(parts) != 3 or not parts[2]:
                return _error(HTTPStatus.BAD_REQUEST, f"bad path {path!r}: expected /v1/{parts[1]}/<id>")
            raw = unquote(parts[2])
            return self.recommendations(raw) if parts[1] == "recommendations" else self.prediction(raw)
        return _error(HTTPStatus.NOT_FOUND, f"no route {path!r}; routes: /v1/recommendations/<user_id>, "
                                            "/v1/predictions/<key>, /healthz")

    def health(self) -> Response:
        try:
            version = self.store.current_version()
        except Exception as exc:  # noqa: BLE001 - any store failure means unhealthy
            log.warning("health check failed: %s", exc)
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, f"serving store unavailable: {exc}")
        return int(HTTPStatus.OK), {"status": "ok", "version": version}

    def recommendations(self, raw: str) -> Response:
        if not _USER_ID.match(raw) or not -_INT64 <= int(raw) < _INT64:
            return _error(HTTPStatus.BAD_REQUEST, f"user id {raw!r}: expected a 64-bit integer")
        user_id = int(raw)
        found = self.store.lookup(user_id)
        if found is None:
            return _error(HTTPStatus.NOT_FOUND, f"user {user_id}: no recommendations")
        body: dict[str, Any] = {"user_id": user_id, "items": found.get("value") or []}
        if "realtime" in found:
            body["realtime"] = found["realtime"]
        return int(HTTPStatus.OK), body

    def prediction(self, key: str) -> Response:
        if not _KEY.match(key):
            return _error(HTTPStatus.BAD_REQUEST, f"key {key!r}: expected letters, digits, '_', '.' or '-'")
        found = self.store.lookup(key)
        if found is None:
            return _error(HTTPStatus.NOT_FOUND, f"key {key!r}: not found")
        return int(HTTPStatus.OK), {"key": key, **found}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one handler thread (and store connection) per client
    # headers and body go out as two writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers (~40 ms per response on Linux)
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        try:
            status, body = self.server.api.get(self.path)
        except Exception as exc:  # noqa: BLE001 - a store failure becomes a 503, the server lives on
            log.exception("lookup %s failed", self.path)
            status, body = _error(HTTPStatus.SERVICE_UNAVAILABLE, f"lookup failed: {exc}")
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def finish(self) -> None:
        super().finish()
        self.server.api.store.close()  # this thread's connection; the thread ends with the client

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server signature
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: LookupAPI) -> None:
        self.api = api
        super().__init__(address, _Handler)


def make_server(store: ServingStore, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading HTTP server answering the lookup routes; ``port=0`` picks a free port
    (``server.server_address[1]``).  Call ``serve_forever()`` on it."""
    return _Server((host, port), LookupAPI(store))


def serve_in_thread(store: ServingStore, host: str = "127.0.0.1",
                    port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start :func:`make_server` in a daemon thread; stop it with ``server.shutdown()``."""
    server = make_server(store, host, port)
    thread = threading.Thread(target=server.serve_forever, name="lakeloop-serve", daemon=True)
    thread.start()
    return server, thread


DESCRIPTION = "HTTP lookup API over the serving store"
NEEDS_SPARK = False


def add_arguments(parser) -> None:
    """``--host`` and ``--port`` of the listening socket."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one")


def run(ctx: RunContext, spark: None, args) -> JobResult[None]:
    """The ``serve`` job: answer lookups from the store of ``serving.*`` until interrupted."""
    from lakeloop.serving import open_store

    server = make_server(open_store(ctx.conf), args.host, args.port)
    host, port = server.server_address[:2]
    ctx.log.info("serving lookups on http://%s:%d (store %s)", host, port, ctx.conf["serving.store"])
    print(f"serve: listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return JobResult(None, {"host": host, "port": port})
