"""Training end to end on a small gold training set with a known signal: MLflow run contents,
registry aliases, the evaluation gate (baseline, worse, better, broken models) and tuning."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

RUN_DATE = dt.date(2026, 11, 10)


def training_pandas(day: dt.date, users: int = 300, per_user: int = 8, seed: int = 3) -> pd.DataFrame:
    """``gold.training_set``-shaped rows whose label depends on the features (with noise)."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    user_item_events = rng.poisson(1.0, n).astype("int64")
    affinity = rng.exponential(1.0, n)
    price = rng.uniform(1, 100, n)
    ctr = rng.beta(2, 8, n)
    views = rng.poisson(50, n).astype("int64")
    logit = -2.0 + 1.2 * np.minimum(user_item_events, 3) + 0.8 * affinity - 0.02 * price \
        + 2.0 * ((affinity > 1.0) & (price < 40)) + 3.0 * ctr
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype("int32")
    clicks = np.round(views * ctr).astype("int64")
    purchases = rng.binomial(clicks, 0.1).astype("int64")
    ts = pd.Timestamp(day, tz="UTC")
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(users, dtype="int64"), per_user),
        "item_id": rng.integers(0, 500, n).astype("int64") * 1000 + np.arange(n) % 1000,
        "label": label, "label_ts": ts, "category": rng.choice(["toys", "books", "garden"], n),
        "item_price": price, "user_events": rng.poisson(20, n).astype("int64"),
        "user_purchases": rng.poisson(2, n).astype("int64"),
        "seconds_since_user_event": np.where(rng.uniform(size=n) < 0.1, np.nan, rng.exponential(3600, n)),
        "user_category_affinity": affinity, "user_category_events": rng.poisson(5, n).astype("int64"),
        "user_item_events": user_item_events, "user_item_purchases": rng.binomial(user_item_events, 0.2),
        "seconds_since_user_item": np.where(user_item_events > 0, rng.exponential(7200, n), np.nan),
        "item_views": views, "item_clicks": clicks, "item_purchases": purchases,
        "item_ratings": rng.poisson(3, n).astype("int64"), "item_mean_rating": rng.uniform(1, 5, n),
        "item_ctr": ctr, "item_conversion": purchases / np.maximum(views, 1), "dt": day.isoformat(),
    })
    frame["user_item_purchases"] = frame["user_item_purchases"].astype("int64")
    return frame


def training_frame(spark, day: dt.date, **kw):
    return spark.createDataFrame(training_pandas(day, **kw))
