"""curate: bronze.<source> -> silver.<source> + silver.<source>_quarantine for one run date.

    ./spark-submit.sh curate --date 2026-11-01 [--source events ...] [--force]

Exit code 3 when a source's quarantine rate passes curate.max_quarantine_rate; see docs/sources.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli
from lakeloop.curate import add_arguments, run


def main(argv=None) -> int:
    parser = cli.job_parser("curate", "bronze -> silver + quarantine (schema-on-read) for --date")
    add_arguments(parser)
    return cli.run_job("curate", argv, parser, run)


if __name__ == "__main__":
    sys.exit(main())
