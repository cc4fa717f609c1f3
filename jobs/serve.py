"""serve: the HTTP lookup API over the serving store (no Spark).

    ./spark-submit.sh serve --port 8080 [--host 0.0.0.0]     # execs this Python file: no spark-submit, no JVM
    python jobs/serve.py --port 8080

Answers ``GET /v1/recommendations/<user_id>``, ``GET /v1/predictions/<key>`` and ``GET /healthz`` from
the store configured by ``serving.*``, until interrupted.  See docs/inference.md.
"""

from __future__ import annotations

import signal
import sys

from lakeloop import cli
from lakeloop.serve_api import make_server
from lakeloop.serving import open_store


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def _body(ctx, spark, args) -> int:
    server = make_server(open_store(ctx.conf), args.host, args.port)
    host, port = server.server_address[:2]
    ctx.log.info("serving lookups on http://%s:%d (store %s)", host, port, ctx.conf.get("serving.store"))
    print(f"serve: listening on http://{host}:{port}", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # a launcher's or supervisor's SIGTERM: close the socket and exit 0
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv=None) -> int:
    parser = cli.job_parser("serve", "HTTP lookup API over the serving store")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one")
    return cli.run_job("serve", argv, parser, _body, needs_spark=False)


if __name__ == "__main__":
    sys.exit(main())
