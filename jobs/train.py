"""train: train, register and gate a model on the gold training set of a run date.

    ./spark-submit.sh train --date 2026-11-01 [--backend xgboost] [--tune 8] [--shuffle-labels]

Logs the run to MLflow (conf ``mlflow.*``), registers the model as a new version with the
``@challenger`` alias and promotes it to ``@champion`` only when it passes the evaluation gate;
otherwise exits with code 4.  See docs/training.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main("train", argv)


if __name__ == "__main__":
    sys.exit(main())
