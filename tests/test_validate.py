"""Column statistics against pandas, PSI values, and the drift gate through the stats table."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from lakeloop import tables, validate
from lakeloop.errors import DataQualityError
from lakeloop.validate import ColumnProfile, psi

SCHEMA = "user_id long, price double, quantity int, type string, ts timestamp, _file string, dt string"
UTC = dt.UTC


def sample(n: int, seed: int, *, price_shift: float = 0.0, types=("view", "click", "purchase"),
           type_p=(0.7, 0.2, 0.1), day: str = "2026-11-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
    return pd.DataFrame({
        "user_id": rng.integers(1, 500, n).astype("int64"),
        "price": rng.gamma(2.0, 10.0, n) + price_shift,
        "quantity": rng.integers(1, 4, n).astype("int32"),
        "type": rng.choice(list(types), n, p=list(type_p)),
        "ts": [base + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 86400, n)],
        "_file": "f.jsonl", "dt": day})


def frame(spark, pdf):
    return spark.createDataFrame(pdf, SCHEMA)


def by_column(profiles):
    return {p.column: p for p in profiles}


def test_psi_known_values():
    assert psi([50, 50], [50, 50]) == 0.0
    assert psi([10, 30, 60], [20, 60, 120]) == pytest.approx(0.0, abs=1e-15)  # same fractions
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12)
    assert psi([100, 0], [50, 50]) == pytest.approx(
        (0.5 - 1) * math.log(0.5 / 1) + (0.5 - 1e-4) * math.log(0.5 / 1e-4), rel=1e-12)  # floored empty bin
    assert psi([0, 0], [1, 2]) is None
    with pytest.raises(ValueError, match="2 expected bins but 3"):
        psi([1, 2], [1, 2, 3])


def test_profile_matches_pandas(spark):
    pdf = pd.DataFrame({
        "user_id": [1, 2, 2, 3, 5, 8, 13, None, 21, 34],
        "price": [1.5, 2.5, float("nan"), 4.0, None, 10.0, 0.5, 7.25, 3.0, 2.0],
        "quantity": [1, 1, 2, 2, 2, 3, 1, 1, 1, 2],
        "type": ["view", "view", "click", None, "view", "purchase", "click", "view", "view", "click"],
        "ts": pd.to_datetime(["2026-11-01 00:00:00"] * 5 + ["2026-11-01 12:00:00"] * 5, utc=True),
        "_file": "f", "dt": "2026-11-01"})
    rows = [(None if pd.isna(u) else int(u), None if p is None else p, int(q), t, ts.to_pydatetime(), "f", "d")
            for u, p, q, t, ts in zip(pdf["user_id"], pdf["price"].astype(object), pdf["quantity"], pdf["type"],
                                      pdf["ts"], strict=True)]
    rows[4] = (*rows[4][:1], None, *rows[4][2:])  # row 4 is a null price, row 2 a NaN one
    df = spark.createDataFrame(rows, SCHEMA)  # from rows: pandas would turn NaN into null
    got = by_column(validate.profile(df, bins=4, top_k=2))
    assert list(got) == ["user_id", "price", "quantity", "type", "ts"]  # _file and dt left out

    uid = got["user_id"]
    ref = pdf["user_id"].dropna()
    assert (uid.kind, uid.count, uid.nulls, uid.nans, uid.distinct) == ("numeric", 10, 1, 0, ref.nunique())
    assert (uid.min, uid.max) == (ref.min(), ref.max())
    assert uid.mean == pytest.approx(ref.mean()) and uid.std == pytest.approx(ref.std(ddof=1))
    for p, value in uid.quantiles:
        assert value == np.quantile(ref, p, method="inverted_cdf"), p

    price = got["price"]
    ref = pdf["price"].dropna()  # drops NaN and None alike
    assert (price.nulls, price.nans, price.missing, price.present) == (1, 1, 2, 8)
    assert price.mean == pytest.approx(ref.mean()) and price.std == pytest.approx(ref.std(ddof=1))
    assert (price.min, price.max) == (0.5, 10.0)
    assert sum(price.bin_counts) == 8 and len(price.bin_counts) == len(price.bin_edges) + 1
    edges = price.bin_edges
    want = np.bincount(np.searchsorted(edges, ref.to_numpy(), side="left"), minlength=len(edges) + 1)
    assert price.bin_counts == list(want)

    qty = got["quantity"]
    assert qty.bin_edges == [1.0, 2.0]  # quartile edges 1, 1, 2 deduplicated
    assert qty.bin_counts == [5, 4, 1]

    typ = got["type"]
    counts = pdf["type"].value_counts()
    assert (typ.kind, typ.nulls, typ.distinct) == ("categorical", 1, 3)
    assert typ.top_values == [("view", counts["view"]), ("click", counts["click"])]  # top_k=2
    assert typ.distribution() == [5, 3, 1, 1]  # view, click, other (purchase), missing

    ts = got["ts"]
    assert ts.kind == "temporal" and ts.min == pdf["ts"].min().timestamp() and ts.max == pdf["ts"].max().timestamp()


def test_profile_rejects_unknown_columns(spark):
    df = frame(spark, sample(5, 1))
    with pytest.raises(ValueError, match=r"no such columns \['nope'\]"):
        validate.profile(df, ["price", "nope"])


def test_psi_same_distribution_is_small_and_shift_is_large(spark):
    base = by_column(validate.profile(frame(spark, sample(20000, 1))))
    same = by_column(validate.profile(frame(spark, sample(20000, 2)), baseline=base))
    assert same["price"].psi < 0.01 and same["type"].psi < 0.01 and same["user_id"].psi < 0.02
    assert same["ts"].psi is None  # temporal columns are not compared

    shifted = by_column(validate.profile(
        frame(spark, sample(20000, 3, price_shift=15.0, type_p=(0.3, 0.2, 0.5))), baseline=base))
    assert shifted["price"].psi > 0.5 and shifted["type"].psi > 0.25
    assert shifted["quantity"].psi < 0.01

    findings = validate.compare("silver.events", list(shifted.values()), 0.25, {"silver.events.type": 5.0})
    assert [(f.column, f.threshold) for f in findings] == [("price", 0.25)]


def test_psi_counts_new_nulls_as_drift(spark):
    base = by_column(validate.profile(frame(spark, sample(5000, 1))))
    pdf = sample(5000, 2)
    pdf.loc[: 2499, "price"] = None
    got = by_column(validate.profile(frame(spark, pdf), baseline=base))
    assert got["price"].psi > 1.0


def write_partition(conf, spark, pdf, day):
    pdf = pdf.assign(dt=day)
    tables.write(frame(spark, pdf), conf.table_uri("silver.events"), mode="overwrite", partition_by=["dt"],
                 replace_where=f"dt = '{day}'")


def test_gate_stores_stats_and_raises_readable_report(spark, conf):
    conf = conf.with_overrides({"validate.tables": ["silver.events"]})
    write_partition(conf, spark, sample(3000, 1, day="2026-11-01"), "2026-11-01")
    write_partition(conf, spark, sample(3000, 2, day="2026-11-02"), "2026-11-02")
    write_partition(conf, spark, sample(3000, 3, price_shift=20.0, day="2026-11-03"), "2026-11-03")

    first = validate.run_validate(spark, conf, dt.date(2026, 11, 1), "run1")
    assert first[0].baseline_dt is None and first[0].passed
    second = validate.run_validate(spark, conf, dt.date(2026, 11, 2), "run2")
    assert (second[0].baseline_dt, second[0].baseline_run_id) == ("2026-11-01", "run1")
    with pytest.raises(DataQualityError) as caught:
        validate.run_validate(spark, conf, dt.date(2026, 11, 3), "run3")
    message = str(caught.value)
    assert "data quality gate failed for silver.events dt=2026-11-03 (run run3) against dt=2026-11-02 run run2" \
        in message
    line = next(x for x in message.splitlines() if x.strip().startswith("price"))
    value, limit = (float(x) for x in line.split()[2:4])
    assert value > 0.25 and limit == 0.25
    assert "type" not in message.split("threshold", 1)[1]

    stats = tables.read(spark, conf.table_uri(validate.STATS_TABLE))
    rows = {(r["dt"], r["column_name"]): r for r in stats.collect()}
    assert {d for d, _ in rows} == {"2026-11-01", "2026-11-02", "2026-11-03"}
    assert rows[("2026-11-03", "price")]["passed"] is False
    assert rows[("2026-11-03", "price")]["psi"] == pytest.approx(value, abs=1e-4)
    assert rows[("2026-11-02", "price")]["passed"] is True and rows[("2026-11-01", "price")]["psi"] is None
    assert rows[("2026-11-02", "price")]["row_count"] == 3000

    # a per-column override lets the same data through; the re-run replaces that date's rows
    relaxed = conf.with_overrides({"validate.column_thresholds": {"silver.events.price": 100.0}})
    again = validate.run_validate(spark, relaxed, dt.date(2026, 11, 3), "run4")
    assert again[0].passed and again[0].baseline_run_id == "run2"
    stats = tables.read(spark, conf.table_uri(validate.STATS_TABLE)).where("dt = '2026-11-03'")
    assert {r["run_id"] for r in stats.collect()} == {"run4"} and stats.count() == 5


def test_gate_reports_missing_table_and_empty_partition(spark, conf):
    write_partition(conf, spark, sample(10, 1), "2026-11-01")
    with pytest.raises(DataQualityError) as caught:
        validate.run_validate(spark, conf, dt.date(2026, 11, 5), "r", ["silver.events", "silver.items"])
    message = str(caught.value)
    assert "no rows in silver.events for dt=2026-11-05" in message
    assert "table silver.items does not exist" in message


def test_validate_job_exit_codes(spark, conf, tmp_path):
    from jobs.validate import main

    write_partition(conf, spark, sample(2000, 1, day="2026-11-01"), "2026-11-01")
    write_partition(conf, spark, sample(2000, 3, price_shift=25.0, day="2026-11-02"), "2026-11-02")
    args = ["--set", f"warehouse={conf['warehouse']}", "--set", f"landing={conf['landing']}"]
    assert main(["--date", "2026-11-01", "--table", "silver.events", *args]) == 0
    assert main(["--date", "2026-11-02", "--table", "silver.events", *args]) == 3
    assert main(["--date", "2026-11-02", "--table", "silver.events", *args,
                 "--set", "validate.enabled=false"]) == 0


def test_profile_round_trips_through_stats_rows(spark):
    profiles = validate.profile(frame(spark, sample(500, 4)), bins=5, top_k=3)
    result = validate.TableValidation("silver.events", "2026-11-01", "r1", profiles)
    rows = validate.stats_frame(spark, result, {}, dt.datetime(2026, 11, 1, tzinfo=UTC)).collect()
    back = validate.profiles_from_rows(rows)
    assert [back[p.column] for p in profiles] == profiles
    assert isinstance(back["price"], ColumnProfile)


def test_identifier_like_strings_are_profiled_but_not_compared(spark):
    def sessions(day: int):  # 400 sessions of ~5 events, new ids every day, as session_id behaves
        pdf = sample(2000, day)
        return pdf.assign(type=[f"s{day}-{i // 5}" for i in range(len(pdf))])

    base = by_column(validate.profile(frame(spark, sessions(1))))
    assert base["type"].distinct > 100
    flagged = by_column(validate.profile(frame(spark, sessions(2)), baseline=base))
    assert flagged["type"].psi > 0.1  # disjoint ids look like drift ...
    skipped = by_column(validate.profile(frame(spark, sessions(2)), baseline=base, max_categories=100))
    assert skipped["type"].psi is None and skipped["type"].top_values  # ... so they are not compared
    assert skipped["price"].psi is not None


def test_a_range_run_gives_what_date_by_date_runs_give(spark, conf, tmp_path):
    """One range run profiles every date in the same passes, each against its own reference (here the date
    before it, profiled in the same run): its PSIs, bins and references equal those of one run per date.
    (The pooled-window reference of a range run is checked on real data in tests/test_validate_real.py.)"""
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    shifts = [0.0, 1.0, 25.0]
    settings = {"validate.reference": "previous", "validate.psi_threshold": 100.0}
    ranged = conf.with_overrides(settings)
    daily = ranged.with_overrides({"warehouse": str(tmp_path / "daily")})
    for c in (ranged, daily):
        for i, (day, shift) in enumerate(zip(days, shifts, strict=True)):
            write_partition(c, spark, sample(400, i, price_shift=shift, day=day), day)
    dates = [dt.date.fromisoformat(d) for d in days]
    together = validate.run_validate(spark, ranged, dates, "r", ["silver.events"])
    one_by_one = [r for d in dates for r in validate.run_validate(spark, daily, d, "r", ["silver.events"])]

    def view(result):
        return (result.dt, result.baseline_dt, result.baseline_run_id, sorted(result.unchecked),
                [(p.column, p.count, p.bin_edges, p.bin_counts, p.top_values,
                  None if p.psi is None else round(p.psi, 9)) for p in result.profiles])
    assert [view(r) for r in together] == [view(r) for r in one_by_one]
    assert together[2].profiles[1].psi > 1.0  # the shifted price, compared as in a daily run
