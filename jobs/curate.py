"""curate: bronze.<source> -> silver.<source> + silver.<source>_quarantine for one run date.

    ./spark-submit.sh curate --date 2026-11-01 [--source events ...] [--force]

Exit code 3 when a source's quarantine rate passes curate.max_quarantine_rate; see docs/sources.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("curate", argv)


if __name__ == "__main__":
    sys.exit(main())
