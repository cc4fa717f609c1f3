"""ingest: landing files -> bronze.<source> for one run date (new files only, raw lines with lineage).

    ./spark-submit.sh ingest --date 2026-11-01 [--source events ...]

Re-running for a date writes nothing new; see docs/sources.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("ingest", argv)


if __name__ == "__main__":
    sys.exit(main())
