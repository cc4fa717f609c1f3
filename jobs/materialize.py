"""materialize: feature sets' rows of a run date into the serving store, one key per entity.

    ./spark-submit.sh materialize --date 2026-11-01 [--feature-set NAME ...]

Default: the feature sets the online models (``serve.online.models``) read at ``POST /v1/score/<model>``.
Each set is loaded from the executors into a new version of its namespace and switched atomically.  See
docs/serving.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("materialize", argv)


if __name__ == "__main__":
    sys.exit(main())
