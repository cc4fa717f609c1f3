"""stream: speed layer, Structured Streaming of arriving events into bronze (exactly once) and real-time views.

    ./spark-submit.sh stream [--source events] [--trigger availableNow|processingTime] [--interval '10 seconds']

processingTime runs until SIGTERM, which stops after the current micro-batch; see docs/streaming.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("stream", argv)


if __name__ == "__main__":
    sys.exit(main())
