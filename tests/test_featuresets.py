"""The declarative feature engine on a domain-free table: every feature kind, the generic leakage
test, point-in-time training sets (per_time and range), and the features job's gates."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
import yaml
from lakeloop.featuresets import Scope, compute, load_specs, training_frame
from pyspark.testing import assertDataFrameEqual

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 10, tzinfo=UTC)
RUN_DATE = dt.date(2026, 3, 10)
SOURCE_SCHEMA = "k long, g string, x double, ts timestamp, dt string"
DIM_SCHEMA = "k long, attr string, valid_from timestamp, dt string"


def h(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def src_rows(spark, rows):
    """rows: (k, g, x, hours from T0)."""
    return spark.createDataFrame([(k, g, float(x), h(t), h(t).date().isoformat()) for k, g, x, t in rows],
                                 SOURCE_SCHEMA)


def dim_rows(spark, rows):
    return spark.createDataFrame([(k, a, h(t), h(t).date().isoformat()) for k, a, t in rows], DIM_SCHEMA)


def every_kind_set(impl: str = "sql") -> dict:
    """One feature set with a feature of every kind (and every aggregation); ``impl`` of the numba-capable kinds."""
    aggs = ["sum", "mean", "min", "max", "stddev", "count_distinct", "first", "last"]
    return {
        "source": "silver.obs", "entity": "k", "time": "ts", "window": "3d", "as_of": "start_of_day",
        "dimensions": {"meta": {"table": "silver.meta", "key": "k", "time": "valid_from"}},
        "features": [
            {"name": "n", "kind": "aggregate", "agg": "count"},
            {"name": "n_a", "kind": "aggregate", "agg": "count", "where": "g = 'a'"},
            {"name": "n_1d", "kind": "aggregate", "agg": "count", "window": "1d"},
            *[{"name": f"x_{a}", "kind": "aggregate", "agg": a, "expr": "x"} for a in aggs],
            {"name": "since", "kind": "aggregate", "agg": "seconds_since_last"},
            {"name": "x_by_g", "kind": "aggregate", "agg": "sum", "expr": "x", "group_by": "g"},
            {"name": "recent", "kind": "list", "fields": ["x", "g", "ts"], "max_length": 2},
            {"name": "decayed", "kind": "decay", "half_life": "1d"},
            {"name": "decayed_by_g", "kind": "decay", "half_life": "12h", "group_by": "g", "impl": impl},
            {"name": "mean_x", "kind": "derived", "expr": "x_sum / nullif(n, 0)"},
            {"name": "attr", "kind": "dimension", "dimension": "meta", "column": "attr", "default": "none"},
            {"name": "x_top", "kind": "transform", "function": "tests.test_featuresets:top_x",
             "params": {"offset": 1.0}},
            {"name": "visits", "kind": "sessions", "gap": "1d", "impl": impl},
        ],
    }


def top_x(rows, offset: float):
    """The transform of :func:`every_kind_set`: the largest x per (k, _t), plus ``offset``."""
    from pyspark.sql import functions as F

    return rows.groupBy("k", "_t").agg((F.max("x") + F.lit(offset)).alias("x_top"))


def write_specs(tmp_path, sets: dict, trainings: dict | None = None):
    for folder, specs in (("features", sets), ("training_sets", trainings or {})):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for name, spec in specs.items():
            (tmp_path / folder / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return tmp_path


BASE_ROWS = [(1, "a", 1, -70), (1, "b", 2, -30), (1, "a", 4, -5), (1, "b", 8, -1), (2, "a", 3, -2),
             (2, "a", 5, -80), (3, "b", 7, -100)]  # key 3: only outside the 3-day window
DIM_BASE = [(1, "gold", -200), (1, "silver", -10), (2, "bronze", -50)]


def reader(spark, rows, dims):
    frames = {"silver.obs": src_rows(spark, rows), "silver.meta": dim_rows(spark, dims)}
    return frames.__getitem__


def test_every_kind_as_of_t(spark, tmp_path):
    fs = load_specs(directory=write_specs(tmp_path, {"obs": every_kind_set()})).sets["obs"]
    got = {r["k"]: r for r in compute(fs, reader(spark, BASE_ROWS, DIM_BASE), Scope(T0)).collect()}
    assert set(got) == {1, 2}  # key 3 has no row in [t - 3d, t)
    one = got[1]
    assert (one["n"], one["n_a"], one["n_1d"]) == (4, 2, 2)  # the row 70 h before t is in the 3-day window
    assert (one["x_sum"], one["x_min"], one["x_max"], one["x_count_distinct"]) == (15.0, 1.0, 8.0, 4)
    assert (one["x_first"], one["x_last"]) == (1.0, 8.0)
    assert one["x_mean"] == pytest.approx(15 / 4) and one["mean_x"] == pytest.approx(15 / 4)
    assert one["x_stddev"] == pytest.approx(3.0956959, rel=1e-6)
    assert one["since"] == pytest.approx(3600.0)
    assert one["x_by_g"] == {"a": 5.0, "b": 10.0}
    assert [(e["x"], e["g"]) for e in one["recent"]] == [(8.0, "b"), (4.0, "a")]
    assert one["decayed"] == pytest.approx(2 ** (-70 / 24) + 2 ** (-30 / 24) + 2 ** (-5 / 24) + 2 ** (-1 / 24))
    assert one["decayed_by_g"]["a"] == pytest.approx(2 ** (-70 / 12) + 2 ** (-5 / 12))
    assert one["attr"] == "silver" and got[2]["attr"] == "bronze"
    assert one["x_top"] == 9.0
    assert (one["visits"], got[2]["visits"]) == (3, 1)  # key 1: gaps of 40 h, 25 h, 4 h; key 2: one row
    assert got[2]["x_stddev"] is None and got[2]["n_a"] == 1


@pytest.mark.parametrize("impl", ["sql", "numba"])
def test_no_feature_sees_a_row_at_or_after_its_time(spark, tmp_path, impl):
    """The generic leakage test: rows at and after ``t`` change no feature of any kind."""
    fs = load_specs(directory=write_specs(tmp_path, {"obs": every_kind_set(impl)})).sets["obs"]
    base = compute(fs, reader(spark, BASE_ROWS, DIM_BASE), Scope(T0))
    later_rows = [(k, g, 100 + x, t) for k, g, x, t in [(1, "a", 1, 0), (1, "c", 2, 0), (2, "b", 3, 0.5),
                                                       (1, "b", 4, 30), (4, "a", 5, 0)]]
    later_dims = [(1, "at_t", 0), (2, "after", 1), (4, "new", 0)]
    leaked = compute(fs, reader(spark, BASE_ROWS + later_rows, DIM_BASE + later_dims), Scope(T0))
    assertDataFrameEqual(leaked, base)
    # the test can fail: one row a microsecond before t changes the features
    before = compute(fs, reader(spark, BASE_ROWS + [(1, "a", 50, -1e-9)], DIM_BASE), Scope(T0))
    assert before.where("k = 1").first()["x_max"] == 50.0


def trips_training(as_of_join: str, impl: str = "sql") -> dict:
    return {
        "label": {"kind": "row", "source": "silver.obs", "entity": ["k", "g"], "time": "ts",
                  "expr": "cast(x > 4 as int)", "type": "int"},
        "features": [{"set": "obs", "columns": {"prior_n": "n", "prior_sum": "x_sum", "prior_by_g": "x_by_g",
                                                "prior_recent": "recent", "prior_decay": "decayed",
                                                "prior_attr": "attr", "prior_mean": "mean_x",
                                                "prior_top": "x_top", "prior_since": "since"}}],
        "as_of_join": as_of_join,
    }


DAY_ROWS = [(1, "a", 3, 2), (1, "b", 9, 5), (1, "a", 4, 5), (2, "b", 1, 20), (5, "a", 2, 1)]  # on RUN_DATE


@pytest.mark.parametrize("strategy", ["range", "per_time"])
def test_training_set_rows_see_only_their_past(spark, tmp_path, strategy):
    fs_spec = every_kind_set()
    fs_spec["features"] = [f for f in fs_spec["features"] if f["name"] != "decayed_by_g"]
    specs = load_specs(directory=write_specs(tmp_path, {"obs": fs_spec}, {"trips": trips_training(strategy)}))
    spec = specs.training["trips"]
    rows = BASE_ROWS + DAY_ROWS
    dims = DIM_BASE + [(1, "platinum", 5), (2, "later", 30)]
    got = training_frame(spec, specs.sets, reader(spark, rows, dims), RUN_DATE)
    by = {(r["k"], r["label_ts"].astimezone(UTC)): r for r in got.collect()}
    assert len(by) == 4  # one label row per source row on the run date (two at hour 5 of key 1 collapse here)
    first = by[(1, h(2))]
    assert (first["label"], first["prior_n"], first["prior_sum"]) == (0, 4, 15.0)  # the four rows before
    at5 = [r for r in got.collect() if r["k"] == 1 and r["label_ts"].astimezone(UTC) == h(5)]
    assert {r["label"] for r in at5} == {0, 1} and all(r["prior_n"] == 4 for r in at5)  # not each other
    assert all(r["prior_attr"] == "silver" for r in at5)  # the dimension row at hour 5 is not before t
    assert all(r["prior_since"] == pytest.approx(3 * 3600.0) for r in at5)
    assert by[(5, h(1))]["prior_n"] == 0 and by[(5, h(1))]["prior_attr"] == "none"
    assert by[(2, h(20))]["prior_attr"] == "bronze" and by[(2, h(20))]["prior_n"] == 1  # 80 h ago is out

    # leakage: rows at each entity's last label time and later change no feature of the earlier rows
    more = [(1, "z", 99, 5), (1, "z", 99, 30), (2, "z", 99, 20), (2, "z", 99, 40), (5, "z", 99, 1)]
    leaked = training_frame(spec, specs.sets, reader(spark, rows + more, dims + [(1, "leak", 5)]), RUN_DATE)
    assert leaked.where("g = 'z'").count() == 3  # the new rows on the run date are label rows themselves
    assertDataFrameEqual(leaked.where("g != 'z'"), got)


def test_range_and_per_time_agree(spark, tmp_path):
    fs_spec = every_kind_set()
    fs_spec["features"] = [f for f in fs_spec["features"] if f["name"] != "decayed_by_g"]
    specs = load_specs(directory=write_specs(tmp_path, {"obs": fs_spec}, {"a": trips_training("range"),
                                                                           "b": trips_training("per_time")}))
    read = reader(spark, BASE_ROWS + DAY_ROWS, DIM_BASE + [(1, "platinum", 5)])
    assertDataFrameEqual(training_frame(specs.training["a"], specs.sets, read, RUN_DATE),
                         training_frame(specs.training["b"], specs.sets, read, RUN_DATE))


# -- spec errors: exit code 2, a message naming file, key and the allowed values ---------------------------

def _mutate(spec: dict, path: str, value) -> dict:
    out = copy.deepcopy(spec)
    node = out
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()
SET_ERRORS = [
    ("features.0.kind", "aggregat", r"features\[0\]\.kind: expected one of aggregate, list, decay, derived, "
                                    r"dimension, transform, bag_of_words, sessions, got 'aggregat'"),
    ("features.0.agg", "median", r"features\[0\]\.agg: expected one of count, sum, mean, min, max, stddev, "
                                 r"count_distinct, first, last, seconds_since_last"),
    ("features.3.expr", _DELETE, r"features\[3\]\.expr: agg sum needs an expr"),
    ("features.0.wher", "x > 1", r"features\[0\]: unknown key 'wher' \(allowed: .*where"),
    ("windw", "3d", r"top level: unknown key 'windw' \(allowed: .*window"),
    ("window", "3 days", r"window: expected a duration such as 30d"),
    ("entity", _DELETE, r"entity: a value is required"),
    ("source", "obs", r"source: expected a table name layer.name"),
    ("as_of", "noon", r"as_of: expected one of end_of_day, start_of_day"),
    ("features.13.max_length", 0, r"features\[13\]\.max_length: expected an integer >= 1"),
    ("features.15.impl", "cuda", r"features\[15\]\.impl: expected one of sql, numba"),
    ("features.17.dimension", "meat", r"features\[17\]\.dimension: unknown dimension 'meat' \(declared: meta\)"),
    ("features.18.function", "tests.test_featuresets:nope", r"features\[18\]\.function: tests.test_featuresets "
                                                            r"has no function nope"),
    ("features.1.name", "n", r"features: feature 'n' is declared twice"),
    ("dimensions.meta.fallback", "latest", r"dimensions\.meta\.fallback: expected one of none, earliest"),
    ("spine", ["source", "people"], r"spine: expected source or a dimension"),
    ("window", "${conf:no.such.key}", r"window: \$\{conf:no.such.key\}: no such conf key"),
]


@pytest.mark.parametrize("path,value,message", SET_ERRORS, ids=[e[0] for e in SET_ERRORS])
def test_feature_set_spec_errors(tmp_path, path, value, message):
    from lakeloop.conf import ConfError

    write_specs(tmp_path, {"obs": _mutate(every_kind_set(), path, value)})
    with pytest.raises(ConfError, match=r"obs\.yaml: " + message):
        load_specs(directory=tmp_path)


TRAINING_ERRORS = [
    ("features.0.set", "ob", r"features\[0\]\.set: expected one of obs, got 'ob'"),
    ("features.0.columns", {"p": "nn"}, r"features\[0\]\.columns\.p: obs has no feature 'nn' \(features: n, "),
    ("label.kind", "rows", r"label\.kind: expected one of row, outcome"),
    ("label.expr", _DELETE, r"label\.expr: a value is required"),
    ("as_of_join", "asof", r"as_of_join: expected one of per_time, range"),
    ("columns", ["k", "nope"], r"columns: unknown column 'nope'"),
    ("negatives", {"per_positive": 1, "seed": 1, "sample": "k", "pool": {"table": "silver.meta", "key": "k"}},
     r"negatives: negative sampling needs an outcome label"),
]


@pytest.mark.parametrize("path,value,message", TRAINING_ERRORS, ids=[e[0] for e in TRAINING_ERRORS])
def test_training_set_spec_errors(tmp_path, path, value, message):
    from lakeloop.conf import ConfError

    training = trips_training("range")
    training["columns"] = ["k", "label", "label_ts", "prior_n"]
    write_specs(tmp_path, {"obs": every_kind_set()}, {"trips": _mutate(training, path, value)})
    with pytest.raises(ConfError, match=r"trips\.yaml: " + message):
        load_specs(directory=tmp_path)


def test_numba_needs_per_time_and_entity_columns_must_exist(tmp_path):
    from lakeloop.conf import ConfError

    write_specs(tmp_path, {"obs": every_kind_set("numba")}, {"trips": trips_training("range")})
    with pytest.raises(ConfError, match=r"trips\.yaml: as_of_join: obs\.decayed_by_g uses impl numba"):
        load_specs(directory=tmp_path)
    outcome = {"label": {"kind": "outcome", "source": "silver.obs", "entity": "g", "time": "ts", "window": "1d"},
               "features": [{"set": "obs"}]}
    write_specs(tmp_path, {"obs": every_kind_set()}, {"trips": outcome})
    with pytest.raises(ConfError, match=r"trips\.yaml: features\[0\]\.set: obs is keyed by \['k'\] but the rows "
                                        r"have no k"):
        load_specs(directory=tmp_path)


# -- the features job on a domain-free table, conf only ----------------------------------------------------

def job_args(conf, spec_dir, date="2026-03-10"):
    return ["--date", date, "--set", f"warehouse={conf['warehouse']}", "--set", f"landing={conf['landing']}",
            "--set", f"features.spec_dir={spec_dir}"]


def test_features_job_builds_any_declared_set(spark, conf, tmp_path):
    from lakeloop import tables

    from jobs.features import main

    tables.write(src_rows(spark, BASE_ROWS + DAY_ROWS), conf.table_uri("silver.obs"), mode="overwrite",
                 partition_by=["dt"])
    tables.write(dim_rows(spark, DIM_BASE), conf.table_uri("silver.meta"), mode="overwrite", partition_by=["dt"])
    spec = every_kind_set()
    spec["features"] = [f for f in spec["features"] if f["kind"] != "transform"]
    empty = {**copy.deepcopy(spec), "filter": "x < 0"}
    spec_dir = write_specs(tmp_path / "specs", {"obs_stats": spec, "obs_empty": {**empty, "allow_empty": True}},
                           {"trips": {**trips_training("range"), "features": [
                               {"set": "obs_stats", "columns": {"prior_n": "n"}}]}})
    assert main(job_args(conf, spec_dir)) == 0
    stats = tables.read(spark, conf.table_uri("gold.obs_stats"))
    assert {r["k"]: r["n"] for r in stats.collect()} == {1: 4, 2: 1}
    assert {r["dt"] for r in stats.collect()} == {"2026-03-10"} and "as_of" in stats.columns
    assert tables.read(spark, conf.table_uri("gold.obs_empty")).count() == 0  # allowed to be empty
    assert tables.read(spark, conf.table_uri("gold.trips")).count() == 5
    version = tables.version(conf.table_uri("gold.obs_stats"))
    assert main(job_args(conf, spec_dir)) == 0  # unchanged inputs: skipped before reading
    assert tables.version(conf.table_uri("gold.obs_stats")) == version
    assert main([*job_args(conf, spec_dir), "--force"]) == 0  # idempotent: the date's partition is replaced
    assert tables.read(spark, conf.table_uri("gold.obs_stats")).count() == 2
    assert tables.version(conf.table_uri("gold.obs_stats")) > version

    # the same set, not allowed to be empty: exit 3, and the table keeps its rows
    (spec_dir / "features" / "obs_stats.yaml").write_text(yaml.safe_dump({**spec, "filter": "x < 0"}))
    assert main(job_args(conf, spec_dir)) == 3
    assert tables.read(spark, conf.table_uri("gold.obs_stats")).count() == 2


def test_features_job_bad_spec_exits_2(spark, conf, tmp_path):
    from jobs.features import main

    spec_dir = write_specs(tmp_path, {"obs": _mutate(every_kind_set(), "features.0.kind", "mean")})
    assert main(job_args(conf, spec_dir)) == 2


def test_features_range_reads_once_equals_each_date_and_reruns_only_what_changed(spark, conf, tmp_path):
    """``--from/--to``: every date's partition equals that date's features computed on their own; a re-run
    skips every date; a row added to one input partition rebuilds exactly the dates whose window holds it."""
    from lakeloop import tables
    from lakeloop.featuresets import build_range, feature_frame

    from jobs.features import main

    days = [RUN_DATE - dt.timedelta(days=2), RUN_DATE - dt.timedelta(days=1), RUN_DATE]
    rows = BASE_ROWS + DAY_ROWS
    tables.write(src_rows(spark, rows), conf.table_uri("silver.obs"), mode="overwrite", partition_by=["dt"])
    dims = [*DIM_BASE, (7, "iron", -30)]  # key 7: no event, a key of the spine dimension from 03-09 on
    tables.write(dim_rows(spark, dims), conf.table_uri("silver.meta"), mode="overwrite", partition_by=["dt"])
    spec = every_kind_set()
    spec["features"] = [f for f in spec["features"] if f["kind"] != "transform"]
    spine = {**copy.deepcopy(spec), "spine": ["source", "meta"]}  # keys of the dimension as of t too
    numba = every_kind_set("numba")  # the kernel's decayed sum, computed in SQL by the range's one pass
    numba["features"] = [f for f in numba["features"] if f["kind"] != "transform"]
    spec_dir = write_specs(tmp_path / "specs", {"obs_stats": spec, "obs_spine": spine, "obs_numba": numba})
    args = [a for a in job_args(conf, spec_dir) if a not in ("--date", "2026-03-10")]
    assert main([*args, "--from", days[0].isoformat(), "--to", days[-1].isoformat()]) == 0
    for name in ("obs_stats", "obs_spine", "obs_numba"):
        gold = tables.read(spark, conf.table_uri(f"gold.{name}"))
        fs = load_specs(directory=spec_dir).sets[name]
        for day in days:
            expected = feature_frame(fs, reader(spark, rows, dims), day)
            assertDataFrameEqual(gold.where(f"dt = '{day.isoformat()}'").drop("dt"), expected, checkRowOrder=False)
    spined, plain = (tables.read(spark, conf.table_uri(f"gold.{n}")) for n in ("obs_spine", "obs_stats"))
    assert spined.count() > plain.count()  # the dimension's keys without events in a window

    ranged = conf.with_overrides({"features.spec_dir": str(spec_dir)})
    again = build_range(spark, ranged, days)
    assert all(r.skipped for per_day in again.values() for r in per_day.values())
    tables.write(src_rows(spark, [(9, "a", 1, -20)]), conf.table_uri("silver.obs"), mode="append")  # dt=03-09
    changed = build_range(spark, ranged, days)
    assert {d: r["gold.obs_spine"].skipped for d, r in changed.items()} == {d: r["gold.obs_stats"].skipped
                                                                          for d, r in changed.items()}
    assert {d: r["gold.obs_stats"].skipped for d, r in changed.items()} == {
        "2026-03-08": True, "2026-03-09": False, "2026-03-10": False}
    assert tables.read(spark, conf.table_uri("gold.obs_stats")).where("k = 9").select("dt").collect() \
        == [("2026-03-10",)]


def test_a_training_set_range_is_one_pass_equal_to_each_date(spark, conf, tmp_path):
    """Several dates of a training set: each date's label rows, every feature as of its row's label time in one
    point-in-time pass; each date's partition equals that date's training frame built on its own."""
    from lakeloop import tables
    from lakeloop.featuresets import build_range

    days = [RUN_DATE - dt.timedelta(days=2), RUN_DATE - dt.timedelta(days=1), RUN_DATE]
    rows = BASE_ROWS + DAY_ROWS
    tables.write(src_rows(spark, rows), conf.table_uri("silver.obs"), mode="overwrite", partition_by=["dt"])
    tables.write(dim_rows(spark, DIM_BASE), conf.table_uri("silver.meta"), mode="overwrite", partition_by=["dt"])
    spec_dir = write_specs(tmp_path / "specs", {"obs": {**every_kind_set(), "materialize": False}},
                           {"trips": trips_training("per_time")})
    built = build_range(spark, conf.with_overrides({"features.spec_dir": str(spec_dir)}), days)
    assert {r["gold.trips"].version for r in built.values()} == {0}  # one commit for the range
    specs = load_specs(directory=spec_dir)
    gold = tables.read(spark, conf.table_uri("gold.trips"))
    for day in days:
        expected = training_frame(specs.training["trips"], specs.sets, reader(spark, rows, DIM_BASE), day)
        assertDataFrameEqual(gold.where(f"dt = '{day.isoformat()}'").drop("dt"), expected.drop("dt"),
                             checkRowOrder=False)
    assert gold.select("dt").distinct().count() == 3
