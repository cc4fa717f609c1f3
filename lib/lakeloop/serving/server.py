"""The lookup service's HTTP server: uvicorn (httptools parser, uvloop) with worker processes.

:func:`serve` runs ``serve.workers`` uvicorn worker processes, each with its own event loop, store connection
and (on Linux) listening socket: every worker binds the port with ``SO_REUSEPORT`` and the kernel spreads new
connections over the workers; the parent holds the port, bound but not listening, and announces it once every
worker listens.  With one worker it runs in this process on one socket.  The sockets listen with a backlog
of ``serve.backlog``.  SIGTERM (or Ctrl-C) drains: the sockets stop accepting, idle connections are closed,
requests in flight get ``serve.drain_timeout_s`` to finish.  :func:`serve_in_thread` runs one server in
a thread of this process (tests, benchmarks).

What the protocol and the middleware add to uvicorn:

* ``serve.keepalive_timeout_s`` applies to a new connection before its first request too (uvicorn only
  times out keep-alive connections between requests); ``serve.request_timeout_s`` bounds the time a client
  takes to send one request (``408``).
* ``414`` for a request target over ``serve.max_url_bytes``, ``431`` for headers over
  ``serve.max_header_bytes`` (checked while parsing, before anything is buffered beyond the limit), ``413``
  for a body over ``serve.max_body_bytes`` (``Content-Length`` or counted as it arrives); malformed HTTP is
  ``400``; all with a JSON body.
* Prometheus metrics of every request (:mod:`lakeloop.serving.metrics`); a client that disconnects is
  counted, never logged with a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lakeloop.serving.api import AppOptions, FastLookups, ReadinessCheck, create_app, json_response
from lakeloop.serving.metrics import MULTIPROC_ENV, ServiceMetrics
from lakeloop.serving.routes import parse_routes

if TYPE_CHECKING:
    import uvicorn

    from lakeloop.conf import Conf
    from lakeloop.serving.base import ServingStore

__all__ = ["ServeSettings", "build_app", "serve", "serve_in_thread", "RunningServer", "app_from_environment"]

log = logging.getLogger(__name__)

#: environment variable carrying the store settings and serve settings to the worker processes (no secret)
CONFIG_ENV = "LAKELOOP_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeSettings:
    """The ``serve.*`` keys (docs/serving.md)."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    backlog: int = 2048
    keepalive_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    max_body_bytes: int = 1 << 20
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    max_batch_keys: int = 1000
    store_timeout_s: float = 2.0
    access_log: bool = False
    #: the app's lookup routes as ``serve.routes`` declares them (:mod:`lakeloop.serving.routes`)
    routes: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    #: the online models (``serve.online.models``) as ``{model: OnlineSpec.to_dict()}`` (:mod:`lakeloop.online`)
    online: Mapping[str, Any] = field(default_factory=dict)
    online_refresh_s: float = 10.0
    online_cache_entries: int = 0
    online_compile: bool = True
    online_read_ahead_rows: int = 8
    readiness: Mapping[str, ReadinessCheck] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("workers", "backlog", "max_body_bytes", "max_url_bytes", "max_header_bytes", "max_batch_keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve.{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        for name in ("cache_entries", "read_ahead_rows"):
            value = getattr(self, f"online_{name}")
            if value < 0:
                raise ValueError(f"serve.online.{name}: expected an integer >= 0, got {value!r}")
        for name in ("keepalive_timeout_s", "request_timeout_s", "drain_timeout_s", "store_timeout_s",
                     "online_refresh_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"serve.{name}: expected a number > 0, got {getattr(self, name)!r}")
        parse_routes(self.routes)

    @classmethod
    def from_conf(cls, conf: Conf, **overrides: Any) -> ServeSettings:
        """The ``serve.*`` keys of ``conf``; a bad ``serve.routes`` entry is a ConfError naming its file."""
        from lakeloop.online import online_specs

        names = [f for f in cls.__dataclass_fields__ if f != "readiness" and not f.startswith("online")]
        parse_routes(conf["serve.routes"], conf.origin("serve.routes"))
        values = {name: conf[f"serve.{name}"] for name in names}
        values.update(online=online_specs(conf), online_refresh_s=conf["serve.online.refresh_s"],
                      online_cache_entries=conf["serve.online.cache_entries"],
                      online_compile=conf["serve.online.compile"],
                      online_read_ahead_rows=conf["serve.online.read_ahead_rows"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "readiness"}


# -- HTTP protocol with limits and timeouts ---------------------------------------------------------------
class _LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus an idle timeout before the first request, a time limit on
    reading one request, and limits on the request target and header sizes."""

    def __init__(self, *args: Any, settings: ServeSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio signature
        super().connection_made(transport)
        self._limit_status: int | None = None
        self._header_bytes = 0
        self._read_timer = None
        # a connection that never sends a request is closed like an idle keep-alive one
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes, self._limit_status = 0, None
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.settings.request_timeout_s, self._request_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.settings.max_url_bytes:
            self._limit_status = 414
            raise ValueError("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.settings.max_header_bytes:
            self._limit_status = 431
            raise ValueError("headers too large")
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        super().on_message_complete()

    def _cancel_read_timer(self) -> None:
        timer = getattr(self, "_read_timer", None)
        if timer is not None:
            timer.cancel()
            self._read_timer = None

    def _request_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self._send_error(408, f"request not received within {self.settings.request_timeout_s:g} s "
                                  "(serve.request_timeout_s)")

    def send_400_response(self, msg: str) -> None:
        status = self._limit_status or 400
        messages = {414: f"request target over {self.settings.max_url_bytes} bytes (serve.max_url_bytes)",
                    431: f"request headers over {self.settings.max_header_bytes} bytes (serve.max_header_bytes)"}
        self._send_error(status, messages.get(status, "malformed HTTP request"))

    def _send_error(self, status: int, message: str) -> None:
        body = orjson.dumps({"error": message})
        reason = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
                  431: b"Request Header Fields Too Large"}[status]
        head = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def protocol_class(settings: ServeSettings) -> Any:
    """The HTTP protocol factory of a server with ``settings`` (picklable: worker processes are spawned)."""
    return functools.partial(_LimitedProtocol, settings=replace(settings, readiness={}))


# -- ASGI middleware: body limit and metrics --------------------------------------------------------------
class _Guard:
    """Outermost ASGI layer: ``413`` beyond ``max_body_bytes``, metrics, no traceback for a gone client."""

    def __init__(self, app: Any, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 0, "done": False}

        async def send_tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["done"] = True
            await send(message)

        try:
            too_large = self._declared_too_large(scope)
            if too_large is not None:
                await too_large(scope, receive, send_tracked)
            else:
                await self.app(scope, self._counting(receive), send_tracked)
        except Exception as exc:  # noqa: BLE001 - answered here, logged once, never re-raised to uvicorn
            await self._failed(scope, exc, state, send_tracked)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "other"
            if state["status"]:
                self.metrics.observe(name, scope["method"], state["status"], time.perf_counter() - start)

    def _declared_too_large(self, scope: dict) -> Any:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return json_response(400, {"error": "malformed Content-Length"})
                if int(value) > self.max_body:
                    return json_response(413, {"error": f"request body over {self.max_body} bytes "
                                                        "(serve.max_body_bytes)"})
        return None

    def _counting(self, receive: Any) -> Any:
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, f"request body over {self.max_body} bytes (serve.max_body_bytes)")
            return message

        return counted

    async def _failed(self, scope: dict, exc: Exception, state: dict, send: Any) -> None:
        route = getattr(scope.get("route"), "path", None) or "other"
        if isinstance(exc, OSError) or type(exc).__name__ == "ClientDisconnect":
            self.metrics.failed(route, "disconnect")
            log.debug("client went away during %s: %s", scope.get("path"), exc)
            return
        if isinstance(exc, HTTPException) and not state["status"]:  # raised outside FastAPI: the 413 of _counting
            await json_response(exc.status_code, {"error": exc.detail})(scope, None, send)
            return
        self.metrics.failed(route, "exception")
        log.error("request %s %s failed: %s: %s", scope["method"], scope.get("path"), type(exc).__name__, exc,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        if not state["status"]:
            try:
                await json_response(500, {"error": f"internal error: {type(exc).__name__}"})(scope, None, send)
            except OSError:
                pass


# -- the application and the server -------------------------------------------------------------------------
def _with_store_timeout(store: ServingStore, seconds: float) -> ServingStore:
    """The same store with Redis reads and connects bounded by ``seconds`` (a dead store answers 503 fast)."""
    from lakeloop.serving import StoreSettings, store_from_config

    if store.settings.store != "redis":
        return store
    options = {**store.settings.options, "socket_timeout": seconds, "connect_timeout": seconds}
    return store_from_config(StoreSettings(**{**store.settings.to_dict(), "options": options}))


def online_models(store: ServingStore, settings: ServeSettings) -> dict[str, Any]:
    """The online models of ``settings``, each reading its feature sets' namespaces of ``store``'s backend and
    started (champion loaded, alias watched)."""
    from lakeloop.online import OnlineModel, OnlineSpec
    from lakeloop.serving import store_from_config

    models = {}
    for name, raw in settings.online.items():
        spec = OnlineSpec.from_dict(raw)
        stores = {j.namespace: store_from_config(replace(store.settings, namespace=j.namespace)) for j in spec.joins}
        models[name] = OnlineModel(spec, stores, settings.online_refresh_s, settings.online_cache_entries,
                                   settings.online_compile, settings.online_read_ahead_rows).start()
    return models


def build_app(store: ServingStore, settings: ServeSettings | None = None) -> Any:
    """The ASGI application of the service: the routes of :mod:`lakeloop.serving.api` behind the guard."""
    settings = settings or ServeSettings()
    store = _with_store_timeout(store, settings.store_timeout_s)
    metrics = ServiceMetrics(store)
    routes = parse_routes(settings.routes)
    online = online_models(store, settings)
    readiness = {**settings.readiness, **{f"model {name}": m.readiness for name, m in online.items()}}
    options = AppOptions(max_batch_keys=settings.max_batch_keys, readiness=readiness, metrics=metrics.render,
                         routes=routes, description=settings.description, online=online)
    app = create_app(store, options)
    guarded = _Guard(FastLookups(app, store, routes, options), metrics, settings.max_body_bytes)
    guarded.fastapi = app  # type: ignore[attr-defined] - for callers that add routes or inspect the schema
    guarded.online = online  # type: ignore[attr-defined] - their alias watchers stop with the server
    return guarded


def app_from_environment() -> Any:
    """The application of a worker process, from :data:`CONFIG_ENV` (set by :func:`serve`)."""
    from lakeloop.serving import store_from_config

    config = json.loads(os.environ[CONFIG_ENV])
    return build_app(store_from_config(config["store"]), ServeSettings(**config["serve"]))


def _uvicorn_config(app: Any, settings: ServeSettings, **extra: Any) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(app, host=settings.host, port=settings.port, workers=settings.workers,
                          http=protocol_class(settings), ws="none", lifespan="off", log_config=None,
                          access_log=settings.access_log, backlog=settings.backlog,
                          timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
                          timeout_graceful_shutdown=settings.drain_timeout_s,  # type: ignore[arg-type]
                          server_header=False, **extra)


def _bind(host: str, port: int, backlog: int | None, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, listening when ``backlog`` is given; ``reuse_port``: with
    ``SO_REUSEPORT``, so that several sockets (one per worker) share the port and the kernel spreads new
    connections over those that listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if backlog is not None:
        sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class _WorkerSockets(list):
    """The sockets uvicorn hands to each worker process: pickled for a spawned worker, this empty list
    unpickles there as a list of one socket of the worker's own, bound with ``SO_REUSEPORT`` to the
    served address (uvicorn makes it listen once the app is loaded).

    One listening socket per worker lets the kernel spread new connections evenly over the workers; with one
    shared socket the worker whose event loop wakes first accepts every waiting connection.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.address = (host, port)

    def __reduce__(self) -> tuple[Any, ...]:
        return _worker_sockets, self.address


def _worker_sockets(host: str, port: int) -> list[socket.socket]:
    return [_bind(host, port, None, reuse_port=True)]


def _listeners(port: int) -> int:
    """How many sockets listen on TCP ``port`` of this host (``/proc/net/tcp`` and ``tcp6``; Linux)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines if (cols := line.split())[1].endswith(f":{port:04X}") and cols[3] == "0A")
    return count


def _announce_when_listening(announce: Any, host: str, port: int, workers: int, timeout: float = 120.0) -> None:
    """Call ``announce(host, port)`` from a daemon thread once ``workers`` sockets listen on ``port`` (or after
    ``timeout`` seconds, when a worker is slow to load its app)."""
    def wait() -> None:
        deadline = time.monotonic() + timeout
        while _listeners(port) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        announce(host, port)

    threading.Thread(target=wait, name="lakeloop-serve-announce", daemon=True).start()


def _reuse_port(settings: ServeSettings) -> bool:
    return settings.workers > 1 and hasattr(socket, "SO_REUSEPORT") and os.path.exists("/proc/net/tcp")


def serve(store: ServingStore, settings: ServeSettings, announce: Any = None) -> tuple[str, int]:
    """Serve until SIGTERM or SIGINT, then drain; returns the address served.

    ``announce(host, port)`` is called once the socket listens, with a socket per worker once every worker
    listens (its app loaded); ``port`` is the real one when ``settings.port`` is 0.  Worker processes are
    started with the store's settings in :data:`CONFIG_ENV`; with several workers, Prometheus samples go to
    a temporary folder that is removed at the end.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    reuse_port = _reuse_port(settings)
    # with a socket per worker, this one only holds the port (bound, never listening: no connection lands on it)
    sock = _bind(settings.host, settings.port, None if reuse_port else settings.backlog, reuse_port=reuse_port)
    host, port = sock.getsockname()[:2]
    os.environ[CONFIG_ENV] = json.dumps({"store": store.config(), "serve": settings.to_dict()})
    metrics_dir = None
    if settings.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="lakeloop-serve-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    config = _uvicorn_config("lakeloop.serving.server:app_from_environment", settings, factory=True)
    if announce is not None and reuse_port:
        _announce_when_listening(announce, host, port, settings.workers)
    elif announce is not None:
        announce(host, port)
    try:
        if settings.workers > 1:
            Multiprocess(config, sockets=_WorkerSockets(host, port) if reuse_port else [sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
    return host, port


@dataclass
class RunningServer:
    """A server running in a thread of this process (:func:`serve_in_thread`)."""

    host: str
    port: int
    server: Any
    thread: threading.Thread
    app: Any

    @property
    def server_address(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self, timeout: float = 10.0) -> None:
        for model in getattr(self.app, "online", {}).values():
            model.stop()
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(store: ServingStore, settings: ServeSettings | None = None) -> RunningServer:
    """Run the service (one worker) in a daemon thread on a free port; stop it with ``.stop()``."""
    import uvicorn

    settings = settings or ServeSettings(port=0)
    sock = _bind(settings.host, settings.port, settings.backlog)
    app = build_app(store, settings)
    server = uvicorn.Server(_uvicorn_config(app, settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lakeloop-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the lookup service did not start")
        time.sleep(0.01)
    host, port = sock.getsockname()[:2]
    return RunningServer(host, port, server, thread, app)

