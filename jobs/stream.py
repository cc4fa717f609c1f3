"""stream: speed layer, Structured Streaming of arriving events into bronze (exactly once) and real-time views.

    ./spark-submit.sh stream [--source events] [--trigger availableNow|processingTime] [--interval '10 seconds']

processingTime runs until SIGTERM, which stops after the current micro-batch; see docs/streaming.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli
from lakeloop.streaming import add_arguments, run


def main(argv=None) -> int:
    parser = cli.job_parser("stream", "arriving events -> bronze (exactly once) + real-time views")
    add_arguments(parser)
    return cli.run_job("stream", argv, parser, run)


if __name__ == "__main__":
    sys.exit(main())
