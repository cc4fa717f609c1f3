"""ingest: landing files -> bronze.<source> for one run date (new files only, raw lines with lineage).

    ./spark-submit.sh ingest --date 2026-11-01 [--source events ...]

Re-running for a date writes nothing new; see docs/sources.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli
from lakeloop.ingest import add_arguments, run


def main(argv=None) -> int:
    parser = cli.job_parser("ingest", "landing files -> bronze.<source> (new files only) for --date")
    add_arguments(parser)
    return cli.run_job("ingest", argv, parser, run)


if __name__ == "__main__":
    sys.exit(main())
