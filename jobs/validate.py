"""validate: column statistics of silver partitions and the drift (PSI) gate.

    ./spark-submit.sh validate --date 2026-11-01 [--table silver.events ...]

Profiles the ``dt = --date`` partition of each table (default: conf ``validate.tables``), stores the
statistics in ``<warehouse>/_state/column_stats`` and exits 3 with a readable report when a column's
PSI against the previous run exceeds its threshold.  See docs/features.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("validate", argv)


if __name__ == "__main__":
    sys.exit(main())
