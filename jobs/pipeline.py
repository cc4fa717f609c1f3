"""pipeline: the daily DAG (ingest -> curate -> validate -> features -> train + gate -> infer), cron/Airflow entry.

    ./spark-submit.sh pipeline --date 2026-11-01 [--force] [--step curate ...]
    ./spark-submit.sh pipeline --from 2026-11-01 --to 2026-11-07      # backfill, in date order

Steps completed for a date are skipped (``--force`` re-runs them).  Exit codes: 0 done, 1 error,
2 usage or another run holds the lock, 3 data-quality gate, 4 model gate refused (infer not run).
See docs/pipeline.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("pipeline", argv)


if __name__ == "__main__":
    sys.exit(main())
