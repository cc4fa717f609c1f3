"""datagen: deterministic synthetic users, items and events (with bad records) into the landing area.

    ./spark-submit.sh datagen --date 2026-11-01 --events 100000 [--days 3] [--seed 42] [--bad-fraction 0.02]

Each file is one Spark task; the landing root (conf key ``landing``) must be visible to every executor.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("datagen", argv)


if __name__ == "__main__":
    sys.exit(main())
