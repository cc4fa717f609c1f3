"""optimize: compaction (optionally z-ordered) and vacuum of the lake's tables, for cron or the DAG.

    ./spark-submit.sh optimize --date 2026-11-01 [--table silver.events ...] [--all-partitions] [--no-vacuum]

Compacts the run date's partition of each table (``delta.target_file_size``), then vacuums it with
``delta.vacuum_retention_hours``; rows and history are kept.  See docs/tables.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("optimize", argv)


if __name__ == "__main__":
    sys.exit(main())
