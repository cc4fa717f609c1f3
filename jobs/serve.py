"""serve: the HTTP lookup API over the serving store (no Spark).

    ./spark-submit.sh serve --port 8080 [--host 0.0.0.0]
    python jobs/serve.py --port 8080

Answers ``GET /v1/recommendations/<user_id>``, ``GET /v1/predictions/<key>`` and ``GET /healthz`` from
the store configured by ``serving.*``, until interrupted.  See docs/inference.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("serve", argv)


if __name__ == "__main__":
    sys.exit(main())
