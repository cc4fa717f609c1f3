"""The recommender's gold features on hand-built silver frames, computed by the declarative path
(``conf/features``, ``conf/training_sets`` through :mod:`lakeloop.featuresets`): favour lists, item
stats, point-in-time training set; the numba decay kernel against its pandas reference; the
idempotent features job."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from lakeloop import kernels
from lakeloop.conf import load_conf
from lakeloop.featuresets import Scope, compute, day_start, load_specs, training_frame
from lakeloop_apps.recommender.reference import GOLD_TABLES, FeatureParams

from tests.conftest import ROOT

UTC = dt.UTC
RUN_DATE = dt.date(2026, 11, 10)
LABEL_TS = day_start(RUN_DATE)
EVENTS_SCHEMA = ("event_id string, user_id long, item_id long, type string, ts timestamp, session_id string, "
                 "price double, quantity int, rating int, review_text string, _extra string, dt string")
ITEMS_SCHEMA = "item_id long, category string, price double, brand string, updated_at timestamp, dt string"
DEFAULTS = FeatureParams()
PARAMS = FeatureParams(max_list_length=3, negatives_per_positive=3, seed=5)


def declared(params: FeatureParams):
    """The recommender's specs with ``params`` as the ``features.*`` conf keys they read."""
    overrides = {"features.lookback_days": params.lookback.days, "features.max_list_length": params.max_list_length,
                 "features.half_life_days": params.half_life.total_seconds() / 86400,
                 "features.label_window_days": params.label_window.days,
                 "features.label_types": list(params.label_types),
                 "features.negatives_per_positive": params.negatives_per_positive, "features.seed": params.seed}
    return load_specs(load_conf("local", overrides, conf_dir=ROOT / "conf"))


def reader(events, items):
    return {"silver.events": events, "silver.items": items}.__getitem__


def user_favours(events, items, as_of, params=DEFAULTS):
    return compute(declared(params).sets["user_favours"], reader(events, items), Scope(as_of))


def item_stats(events, items, as_of, params=DEFAULTS):
    return compute(declared(params).sets["item_stats"], reader(events, items), Scope(as_of))


def training_set(events, items, label_ts, params=DEFAULTS):
    specs = declared(params)
    assert label_ts == day_start(label_ts.date())  # the spec's label time is the start of the run date
    return training_frame(specs.training["training_set"], specs.sets, reader(events, items), label_ts.date())


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A collected timestamp (naive, local time) as an aware UTC datetime."""
    return None if value is None else value.astimezone(UTC)


def make_events(spark, rows):
    """rows: (user, item, type, 'YYYY-MM-DD HH:MM:SS'[, price[, rating]])."""
    out = []
    for i, (user, item, etype, when, *rest) in enumerate(rows):
        price = rest[0] if len(rest) > 0 else None
        rating = rest[1] if len(rest) > 1 else None
        ts = at(when)
        out.append((f"e{i:016x}", user, item, etype, ts, f"s{user}", price, 1, rating, None, None,
                    ts.date().isoformat()))
    return spark.createDataFrame(out, EVENTS_SCHEMA)


def make_items(spark):
    cats = {1: "toys/lego", 2: "toys/dolls", 3: "books/novel", 4: "books/novel", 5: "garden/tools",
            6: "garden/tools"}
    rows = [(i, c, float(10 * i), "acme", at("2026-10-01 00:00:00"), "2026-10-01") for i, c in cats.items()]
    return spark.createDataFrame(rows, ITEMS_SCHEMA)


# history before RUN_DATE, and the label day itself
HISTORY = [
    (10, 1, "like", "2026-11-01 10:00:00"), (10, 2, "like", "2026-11-02 10:00:00"),
    (10, 3, "like", "2026-11-03 10:00:00"), (10, 4, "like", "2026-11-04 10:00:00"),
    (10, 5, "like", "2026-11-05 10:00:00"),
    (10, 1, "review", "2026-11-06 09:00:00", None, 4), (10, 2, "review", "2026-11-07 09:00:00", None, 2),
    (10, 1, "purchase", "2026-11-08 12:00:00", 9.5),
    (11, 1, "view", "2026-11-02 08:00:00"), (11, 1, "view", "2026-11-03 08:00:00"),
    (11, 1, "click", "2026-11-03 08:01:00"), (11, 1, "review", "2026-11-04 09:00:00", None, 5),
    (12, 1, "view", "2026-11-05 08:00:00"), (12, 1, "view", "2026-11-06 08:00:00"),
    (12, 3, "view", "2026-11-06 08:00:00"), (12, 3, "purchase", "2026-11-06 08:05:00", 30.0),
    (12, 1, "purchase", "2026-11-09 23:59:59", 10.0),
    (11, 6, "view", "2026-09-01 08:00:00"),  # outside the 30-day lookback
]
LABEL_DAY = [
    (11, 3, "purchase", "2026-11-10 12:00:00", 30.0), (12, 5, "purchase", "2026-11-10 09:00:00", 50.0),
    (10, 6, "view", "2026-11-10 01:00:00"),
]


@pytest.fixture(scope="module")
def items(spark):
    return make_items(spark)


def by_key(df, *keys):
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in df.collect()}


def test_user_favours_lists_are_most_recent_first_and_bounded(spark, items):
    events = make_events(spark, HISTORY + LABEL_DAY)
    fav = by_key(user_favours(events, items, LABEL_TS, PARAMS), "user_id")
    u10 = fav[10]
    assert [x["item_id"] for x in u10["likes"]] == [5, 4, 3]  # 5 likes, capped at 3, newest first
    assert [x["ts"] for x in u10["likes"]] == sorted((x["ts"] for x in u10["likes"]), reverse=True)
    assert [(x["item_id"], x["rating"]) for x in u10["reviews"]] == [(2, 2), (1, 4)]
    assert [(x["item_id"], x["price"]) for x in u10["purchases"]] == [(1, 9.5)]
    assert u10["n_events"] == 8
    assert u10["category_counts"] == {"toys/lego": 3, "toys/dolls": 2, "books/novel": 2, "garden/tools": 1}
    assert utc(u10["last_event_ts"]) == at("2026-11-08 12:00:00")
    assert fav[11]["likes"] == [] and fav[11]["n_events"] == 4  # the September view is out of the lookback
    assert set(fav) == {10, 11, 12}  # label-day events are at/after as_of: no user 10 view of item 6
    assert "garden/tools" not in fav[12]["category_counts"]


def test_user_favours_affinity_decays_with_half_life(spark, items):
    events = make_events(spark, [(20, 1, "view", "2026-11-09 00:00:00"), (20, 2, "view", "2026-11-03 00:00:00"),
                                 (20, 3, "view", "2026-11-09 00:00:00")])
    params = FeatureParams(half_life=dt.timedelta(days=1))
    row = user_favours(events, items, LABEL_TS, params).collect()[0]
    aff = row["category_affinity"]
    assert aff["toys/lego"] == pytest.approx(0.5, rel=1e-12)  # one half-life old
    assert aff["toys/dolls"] == pytest.approx(2.0 ** -7, rel=1e-12)
    assert aff["books/novel"] == pytest.approx(0.5, rel=1e-12)


def test_item_stats_ctr_conversion_and_mean_rating(spark, items):
    events = make_events(spark, HISTORY + [
        (13, 1, "view", "2026-11-07 08:00:00"), (13, 2, "review", "2026-11-07 08:00:00", None, 3)])
    stats = by_key(item_stats(events, items, LABEL_TS, PARAMS), "item_id")
    one = stats[1]
    assert (one["views"], one["clicks"], one["purchases"], one["reviews"]) == (5, 1, 2, 2)
    assert one["ctr"] == pytest.approx(1 / 5) and one["conversion"] == pytest.approx(2 / 5)
    assert one["mean_rating"] == pytest.approx(4.5) and one["ratings"] == 2
    assert one["popularity"] == 5 and one["users"] == 4 and one["category"] == "toys/lego"
    two = stats[2]
    assert two["views"] == 0 and two["ctr"] is None and two["conversion"] is None
    assert two["mean_rating"] == pytest.approx(2.5)
    assert stats[6]["views"] == 0  # September view is outside the lookback; catalog item still listed
    assert stats[3]["conversion"] == pytest.approx(1.0)


def feature_columns(df):
    return [c for c in df.columns if c not in ("label",)]


def test_training_set_labels_and_negatives(spark, items):
    events = make_events(spark, HISTORY + LABEL_DAY)
    rows = training_set(events, items, LABEL_TS, PARAMS).collect()
    positives = {(r["user_id"], r["item_id"]) for r in rows if r["label"] == 1}
    negatives = {(r["user_id"], r["item_id"]) for r in rows if r["label"] == 0}
    assert positives == {(11, 3), (12, 5)}
    assert negatives and not negatives & positives
    assert {u for u, _ in negatives} <= {11, 12}
    assert len(rows) == len(positives | negatives)  # no duplicate pairs
    assert all(utc(r["label_ts"]) == LABEL_TS for r in rows)
    again = training_set(events, items, LABEL_TS, PARAMS).collect()
    assert sorted(map(tuple, again)) == sorted(map(tuple, rows))  # seeded: the same negatives


def test_training_set_is_point_in_time_correct(spark, items):
    base = make_events(spark, HISTORY + LABEL_DAY)
    # the label-day events again, plus more activity at and after the label time for the same users/items
    later = make_events(spark, HISTORY + LABEL_DAY + [
        (11, 3, "view", "2026-11-10 00:00:00"),  # exactly at label time: must never count
        (11, 3, "purchase", "2026-11-10 00:00:00", 30.0),
        (12, 5, "like", "2026-11-10 00:00:00"), (12, 1, "view", "2026-11-10 00:00:01"),
        (11, 1, "purchase", "2026-11-12 10:00:00", 10.0), (12, 5, "review", "2026-11-20 10:00:00", None, 1),
    ])
    first = by_key(training_set(base, items, LABEL_TS, PARAMS), "user_id", "item_id")
    second = by_key(training_set(later, items, LABEL_TS, PARAMS), "user_id", "item_id")
    cols = [c for c in next(iter(first.values())).asDict() if c != "label"]
    for key in set(first) & {k for k, r in first.items() if r["label"] == 1}:
        assert {c: first[key][c] for c in cols} == {c: second[key][c] for c in cols}, key
    r = first[(11, 3)]
    # item 3 before label time: user 12 viewed it once and bought it once; user 11 never touched it
    assert (r["item_views"], r["item_purchases"], r["item_conversion"]) == (1, 1, 1.0)
    assert (r["user_item_events"], r["seconds_since_user_item"]) == (0, None)
    assert r["user_events"] == 4 and r["user_purchases"] == 0  # the label purchase is not a feature
    r12 = first[(12, 5)]
    assert r12["user_purchases"] == 2 and r12["seconds_since_user_event"] == pytest.approx(1.0)
    assert r12["user_category_events"] == 0 and r12["user_category_affinity"] == 0.0


def test_training_set_event_at_label_time_never_counts(spark, items):
    only_at = make_events(spark, [(11, 3, "view", "2026-11-10 00:00:00"), (11, 3, "click", "2026-11-10 00:00:00"),
                                  (11, 3, "purchase", "2026-11-10 05:00:00", 30.0)])
    row = [r for r in training_set(only_at, items, LABEL_TS, PARAMS).collect() if r["label"] == 1]
    assert len(row) == 1
    r = row[0]
    assert (r["user_events"], r["item_views"], r["item_clicks"], r["user_item_events"]) == (0, 0, 0, 0)
    assert r["user_category_affinity"] == 0.0 and r["item_ctr"] is None


# -- numba kernel vs pandas reference ---------------------------------------------------------------------

def random_events(n: int, users: int, cats: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t_ref = pd.Timestamp("2026-11-10", tz="UTC")
    ages = pd.to_timedelta(rng.integers(1, 40 * 86400 * 10**6, n), unit="us")
    return pd.DataFrame({"key": rng.integers(1, users + 1, n).astype("int64"),
                         "group": [f"c{k}" for k in rng.integers(0, cats, n)],
                         "ts": t_ref - ages})


def assert_same_affinity(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.sort_values(["key", "group"]).reset_index(drop=True)
    want = want.sort_values(["key", "group"]).reset_index(drop=True)
    assert list(got["key"]) == list(want["key"])
    assert list(got["group"]) == list(want["group"])
    assert list(got["n"]) == list(want["n"])
    np.testing.assert_allclose(got["value"].to_numpy(), want["value"].to_numpy(), rtol=1e-9, atol=0)


def test_decay_sums_kernel_direct():
    codes = np.array([0, 1, 0, 1, 1], np.int64)
    day = 86400 * 10**6
    t_ref = 10 * day
    t = np.array([10 * day - day, 9 * day, 8 * day, 0, 10 * day - 1], np.int64)
    starts = np.array([True, False, False, True, False])  # users 1, 1, 1, 2, 2: each one's first row
    rows, out_codes, sums, counts = kernels.decay_sums(starts, codes, t, 2, t_ref, math.log(2) / day)
    assert list(rows) == [0, 1, 3] and list(out_codes) == [0, 1, 1] and list(counts) == [2, 1, 2]
    np.testing.assert_allclose(sums, [0.5 + 0.25, 0.5, 2.0 ** -10 + 2.0 ** (-1 / day)], rtol=1e-12)


def test_kernel_refuses_null_inputs():
    import pyarrow as pa

    batch = pa.RecordBatch.from_pydict({"key": pa.array([1, 1], pa.int64()), "group": ["a", None],
                                        "ts": pa.array([0, 1], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(ValueError, match=r"nulls in \['group'\]"):
        list(kernels.decay_batches(iter([batch]), 10, 3600.0))


@pytest.mark.parametrize("batch_rows", [10000, 37])
def test_numba_mapinarrow_matches_pandas_reference(spark, batch_rows):
    pdf = random_events(6000, users=150, cats=12, seed=batch_rows)
    t_ref = int(pd.Timestamp("2026-11-10", tz="UTC").value // 1000)
    half_life = 3.5 * 86400
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))  # users straddle batches
    try:
        df = spark.createDataFrame(pdf, "key long, group string, ts timestamp")
        prepared = kernels.prepare_decay_input(df, t_ref, num_partitions=3)
        got = kernels.decay_numba(prepared, t_ref, half_life).toPandas()
        via_spark_pandas = kernels.decay_pandas_partitions(prepared, t_ref, half_life).toPandas()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    want = kernels.decay_pandas(pdf, t_ref, half_life)
    assert len(got) == len(want) == len(pdf.groupby(["key", "group"]))
    assert_same_affinity(got, want)
    assert_same_affinity(via_spark_pandas, want)


def test_affinity_excludes_events_at_or_after_reference_time(spark):
    from pyspark.sql import functions as F

    t_ref = dt.datetime(2026, 11, 10, tzinfo=UTC)
    pdf = pd.DataFrame({"user_id": [1, 1, 1], "category": ["a", "a", "b"],
                        "ts": [t_ref - dt.timedelta(days=1), t_ref, t_ref + dt.timedelta(hours=1)]})
    df = spark.createDataFrame(pdf, "user_id long, category string, ts timestamp")
    rows = df.select(F.col("user_id").alias("key"), F.col("category").alias("group"), "ts")
    t_us = int(t_ref.timestamp() * 1_000_000)
    got = kernels.decay_numba(kernels.prepare_decay_input(rows, t_us), t_us, 86400.0).collect()
    assert [(r["key"], r["group"], r["n"]) for r in got] == [(1, "a", 1)]
    assert got[0]["value"] == pytest.approx(0.5, rel=1e-12)


# -- the job: gold tables, idempotent per run date --------------------------------------------------------

def write_silver(spark, conf):
    from lakeloop import tables

    tables.write(make_events(spark, HISTORY + LABEL_DAY), conf.table_uri("silver.events"), mode="overwrite",
                 partition_by=["dt"])
    tables.write(make_items(spark), conf.table_uri("silver.items"), mode="overwrite", partition_by=["dt"])


def snapshot(spark, conf):
    from lakeloop import tables

    out = {}
    for name in GOLD_TABLES:
        df = tables.read(spark, conf.table_uri(name))
        out[name] = sorted(map(str, df.drop("as_of").collect()))
    return out


@pytest.mark.slow
def test_features_job_writes_gold_and_is_idempotent(spark, conf):
    from lakeloop import tables

    from jobs.features import main

    write_silver(spark, conf)
    args = ["--set", f"warehouse={conf['warehouse']}", "--set", f"landing={conf['landing']}",
            "--set", "features.max_list_length=2"]
    assert main(["--date", "2026-11-09", *args]) == 0
    assert main(["--date", "2026-11-10", *args]) == 0
    first = snapshot(spark, conf)
    versions = {name: tables.version(conf.table_uri(name)) for name in GOLD_TABLES}
    assert main(["--date", "2026-11-10", *args]) == 0  # unchanged inputs and specs: skipped before reading
    assert all(tables.version(conf.table_uri(n)) == v for n, v in versions.items())
    assert main(["--date", "2026-11-10", *args, "--force"]) == 0  # re-run replaces the date's partition
    assert snapshot(spark, conf) == first
    assert all(tables.version(conf.table_uri(n)) > v for n, v in versions.items())

    fav = tables.read(spark, conf.table_uri("gold.user_favours"))
    assert {r["dt"] for r in fav.select("dt").distinct().collect()} == {"2026-11-09", "2026-11-10"}
    day10 = by_key(fav.where("dt = '2026-11-10'"), "user_id")
    assert [x["item_id"] for x in day10[10]["likes"]] == [5, 4]  # capped by features.max_list_length
    assert 10 in day10 and day10[10]["n_events"] == 9  # as of the end of the run date: label-day view counts
    train = tables.read(spark, conf.table_uri("gold.training_set")).where("dt = '2026-11-10'")
    assert {(r["user_id"], r["item_id"]) for r in train.where("label = 1").collect()} == {(11, 3), (12, 5)}
    train9 = tables.read(spark, conf.table_uri("gold.training_set")).where("dt = '2026-11-09'")
    assert {(r["user_id"], r["item_id"]) for r in train9.where("label = 1").collect()} == {(12, 1)}
    stats = by_key(tables.read(spark, conf.table_uri("gold.item_stats")).where("dt = '2026-11-10'"), "item_id")
    assert stats[1]["views"] == 4 and stats[1]["ctr"] == pytest.approx(0.25)
