"""infer: score the candidates of a run date, write gold.predictions and load the serving store.

    ./spark-submit.sh infer --date 2026-11-01 [--model-version 7]

Uses ``models:/<mlflow.model_name>@champion`` unless ``--model-version`` names a version.  Replaces the
date's partition of ``infer.table`` and switches the serving store to a new version holding each
user's top ``infer.top_n`` items.  See docs/inference.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("infer", argv)


if __name__ == "__main__":
    sys.exit(main())
