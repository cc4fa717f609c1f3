"""The ``serve`` job: the HTTP lookup service over the serving store (no Spark).

The service is a FastAPI application (:mod:`lakeloop.serving.api`) on uvicorn with ``serve.workers``
worker processes (:mod:`lakeloop.serving.server`).  Routes:

``GET /v1/<route>/<key>``, ``POST /v1/<route>``
    The routes an app declares in ``serve.routes`` (:mod:`lakeloop.serving.routes`): a key's batch value
    under the route's ``value_field``, merged with the key's real-time view, and the same for a batch of
    keys (``{<batch_field>: [...]}``) read from one version.  The built-in recommender declares its
    route in conf/base.yaml.
``GET /v1/predictions/<key>``
    Any key of the current version merged with its real-time value.
``POST /v1/predictions``
    The same for a batch (``{"keys": [...]}``), all read from one version.
``/healthz``, ``/readyz``, ``/metrics``, ``/docs``, ``/openapi.json``
    Health (store answers, version served), readiness, Prometheus metrics, the OpenAPI document.

Unknown keys answer 404, malformed ids or paths 400, bad batch bodies 422, oversize requests
413/414/431, a store that cannot be read 503, all with ``{"error": "..."}``.  See docs/serving.md.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lakeloop.job import JobResult

if TYPE_CHECKING:
    from lakeloop.session import RunContext

__all__ = ["DESCRIPTION", "NEEDS_SPARK", "add_arguments", "run", "serve_in_thread"]

DESCRIPTION = "HTTP lookup service over the serving store (FastAPI on uvicorn, serve.workers processes)"
NEEDS_SPARK = False


def serve_in_thread(store, settings=None):  # noqa: ANN001, ANN201 - re-exported for tests and benchmarks
    """:func:`lakeloop.serving.server.serve_in_thread`: one worker in a thread of this process."""
    from lakeloop.serving.server import serve_in_thread as start

    return start(store, settings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and ``--workers`` override ``serve.host``, ``serve.port`` and ``serve.workers``."""
    parser.add_argument("--host", default=None, help="address to bind (default serve.host)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on; 0 picks a free one "
                                                               "(default serve.port)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default serve.workers)")


def run(ctx: RunContext, spark: None, args: argparse.Namespace) -> JobResult[None]:
    """Answer lookups from the store of ``serving.*`` until SIGTERM or SIGINT, then drain and return."""
    from lakeloop.serving import open_store
    from lakeloop.serving.server import ServeSettings, serve

    settings = ServeSettings.from_conf(ctx.conf, host=args.host, port=args.port, workers=args.workers)
    store = open_store(ctx.conf)

    def announce(host: str, port: int) -> None:
        ctx.log.info("serving lookups on http://%s:%d with %d worker(s) (store %s)", host, port,
                     settings.workers, ctx.conf["serving.store"])
        print(f"serve: listening on http://{host}:{port}", flush=True)

    host, port = serve(store, settings, announce)
    return JobResult(None, {"host": host, "port": port, "workers": settings.workers})
