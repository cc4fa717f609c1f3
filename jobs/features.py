"""features: gold feature tables for a run date.

    ./spark-submit.sh features --date 2026-11-01

Replaces the ``dt = --date`` partition of ``gold.user_favours``, ``gold.item_stats`` and
``gold.training_set`` from ``silver.events`` and ``silver.items``.  See docs/features.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("features", argv)


if __name__ == "__main__":
    sys.exit(main())
