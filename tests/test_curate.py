"""Curation: one test per cleansing rule on small frames, then the job over real Delta tables."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from lakeloop import tables
from lakeloop.curate import REASONS, curate, curate_frame, curate_source, report_uri
from lakeloop.errors import EXIT_DATA_QUALITY, DataQualityError
from lakeloop.ingest import ingest
from lakeloop.schemas import load_schema
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from test_ingest import DATE, land

AT = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC)
EID = "e0123456789abcdef"


def schema_file(tmp_path, text: str, fmt: str = "jsonl", name: str = "t"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_schema(path, fmt=fmt, source=name)


def bronze_frame(spark, lines, header: str | None = None, batches=None):
    """Bronze rows for ``lines``: one file, line numbers from 1 (2 under a CSV header)."""
    first = 1 if header is None else 2
    rows = [(v, header, "file:/landing/f.jsonl", first + i, (batches or {}).get(i, AT), "b", DATE)
            for i, v in enumerate(lines)]
    df = spark.createDataFrame(rows, "value string, _header string, _file string, _line long, "
                                     "_ingested_at timestamp, _batch_id string, dt string")
    return df if header is not None else df.drop("_header")


def curated(spark, schema, lines, **kw):
    return curate_frame(bronze_frame(spark, lines, **kw), schema).orderBy("_line")


def outcome(spark, schema, lines, **kw):
    """(reason, detail) per line, in line order."""
    return [(r["reason"], r["detail"]) for r in curated(spark, schema, lines, **kw).collect()]


@pytest.fixture(scope="module")
def numbers(tmp_path_factory):
    return schema_file(tmp_path_factory.mktemp("s"), """
        unknown_fields: keep
        columns:
          - {name: i, type: int,    nullable: true}
          - {name: l, type: long,   nullable: true}
          - {name: d, type: double, nullable: true}
          - {name: m, type: 'decimal(6,2)', nullable: true}
          - {name: b, type: boolean, nullable: true}
          - {name: t, type: timestamp, nullable: true}
          - {name: day, type: date, nullable: true}
          - {name: s, type: string, nullable: true}
    """)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    from lakeloop.conf import load_conf
    from lakeloop.schemas import source_schema

    return source_schema(load_conf("local"), "events")


def eid(n: int) -> str:
    return f"e{n:016x}"


def ev(**fields) -> str:
    base = {"event_id": EID, "user_id": 7, "item_id": 9, "type": "view", "ts": "2026-11-01T10:00:00Z"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


# -- cleansing rules ------------------------------------------------------------------------------------


def test_mixed_type_numbers_are_cleansed(spark, numbers):
    lines = ['{"i": 12, "l": "12", "d": "12.0", "m": 12}', '{"i": "12.0", "l": 1.2e1, "d": 12, "m": "12.00"}',
             '{"i": " 12 ", "l": 12.000, "d": "1.2E1", "m": "12"}']
    got = curated(spark, numbers, lines).select("i", "l", "d", "m", "reason")
    expected = spark.createDataFrame([(12, 12, 12.0, Decimal("12.00"), None)] * 3,
                                     "i int, l long, d double, m decimal(6,2), reason string")
    assertDataFrameEqual(got, expected)


WRONG_TYPES = [
    ("i", 12.5, "i=12.5: not a valid int (decimal(3,1))"),
    ("i", "12.5", "i=12.5: not a valid int (string)"),
    ("i", 3000000000, "i=3000000000: not a valid int (bigint)"),
    ("l", "abc", "l=abc: not a valid long (string)"),
    ("l", True, "l=true: not a valid long (boolean)"),
    ("d", "NaN", "d=NaN: not a valid double (string)"),
    ("d", "1.5d", "d=1.5d: not a valid double (string)"),
    ("d", {"x": 1}, 'd={"x":1}: not a valid double (object<x: bigint>)'),
    ("m", "1.234", "m=1.234: not a valid decimal(6,2) (string)"),
    ("m", "123456.1", "m=123456.1: not a valid decimal(6,2) (string)"),
    ("b", "yes", "b=yes: not a valid boolean (string)"),
    ("t", "yesterday", "t=yesterday: not a valid timestamp (string)"),
    ("t", "2026-13-45T25:61:00Z", "t=2026-13-45T25:61:00Z: not a valid timestamp (string)"),
    ("day", "2026-02-30", "day=2026-02-30: not a valid date (string)"),
    ("s", 5, "s=5: not a valid string (bigint)"),
]


def test_wrong_type(spark, numbers):
    lines = [json.dumps({field: value}) for field, value, _ in WRONG_TYPES]
    assert outcome(spark, numbers, lines) == [("wrong_type", detail) for _, _, detail in WRONG_TYPES]


def test_booleans_timestamps_and_dates(spark, numbers):
    lines = ['{"b": true, "t": "2026-11-01T10:00:00Z", "day": "2026-11-01"}',
             '{"b": "FALSE", "t": "2026-11-01T12:00:00+02:00", "day": "2026-11-01"}',
             '{"b": "true", "t": 1793527200, "day": "2026-11-01"}',
             '{"b": "false", "t": "1793527200000", "day": "2026-11-01"}']
    got = curated(spark, numbers, lines).select("b", "t", "day", "reason")
    ten = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)
    day = dt.date(2026, 11, 1)
    expected = spark.createDataFrame([(b, ten, day, None) for b in (True, False, True, False)],
                                     "b boolean, t timestamp, day date, reason string")
    assertDataFrameEqual(got, expected)


def test_nulls_defaults_and_missing_required(spark, events):
    lines = [ev(event_id=eid(1), quantity=...), ev(event_id=eid(2), quantity=None), ev(event_id=eid(3), quantity=""),
             ev(event_id=eid(4), quantity=3, price=None, session_id=None),
             ev(user_id=...), ev(user_id=None), ev(user_id="  "), ev(event_id=...)]
    rows = curated(spark, events, lines).select("quantity", "price", "reason", "detail").collect()
    assert [r["quantity"] for r in rows[:4]] == [1, 1, 1, 3]
    assert rows[3]["price"] is None and all(r["reason"] is None for r in rows[:4])
    assert [(r["reason"], r["detail"]) for r in rows[4:]] == [
        ("missing_required", "user_id: required value is missing")] * 3 + [
        ("missing_required", "event_id: required value is missing")]


CONSTRAINTS = [
    ({"user_id": 0}, "user_id=0: outside range [1, None]"),
    ({"quantity": 101}, "quantity=101: outside range [1, 100]"),
    ({"price": -0.01}, "price=-0.01: outside range [0.0, 100000.0]"),
    ({"type": "VIEW"}, "type=VIEW: not one of view, click, add_to_cart, purchase, like, review"),
    ({"event_id": "E0123456789ABCDEF"}, "event_id=E0123456789ABCDEF: does not match ^e[0-9a-f]{16}$"),
]


def test_constraints_are_out_of_range(spark, events):
    lines = [ev(**fields) for fields, _ in CONSTRAINTS]  # invalid lines take no part in dedup
    assert outcome(spark, events, lines) == [("out_of_range", detail) for _, detail in CONSTRAINTS]


MALFORMED = [
    ('{"event_id": "e0123456789abcdef", "user_', "not valid JSON (or a key repeated)"),
    ('{"event_id": "e0123456789abcdef", "event_id": "e1123456789abcdef"}', "not valid JSON (or a key repeated)"),
    ("[1, 2]", "not a JSON object"),
    ("42", "not a JSON object"),
    ('{"event_id": "e0123456789abcdef"} trailing', "text after the JSON object"),
    ("", "empty line"),
    ("   ", "empty line"),
]


def test_malformed_json(spark, events):
    assert outcome(spark, events, [line for line, _ in MALFORMED]) == [("malformed", d) for _, d in MALFORMED]


def test_unknown_fields_keep_and_reject(spark, events, tmp_path):
    line = ev(utm_source="news", device={"os": "android"}, ab_bucket=3)
    kept = curated(spark, events, [line, ev(event_id="e1123456789abcdef")]).select("reason", "_extra").collect()
    assert kept[0]["reason"] is None
    assert json.loads(kept[0]["_extra"]) == {"utm_source": "news", "device": {"os": "android"}, "ab_bucket": 3}
    assert kept[1]["_extra"] is None
    strict = schema_file(tmp_path, """
        unknown_fields: reject
        columns:
          - {name: a, type: int}
    """)
    assert outcome(spark, strict, ['{"a": 1, "z": 2, "y": 3}', '{"a": 1}']) == [
        ("unknown_field", "unknown field(s): y, z"), (None, None)]


def test_duplicates_latest_wins_by_event_time_then_ingest_order(spark, events):
    later = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
    lines = [ev(ts="2026-11-01T10:00:00Z", quantity=1),   # line 1: older event
             ev(ts="2026-11-01T11:00:00Z", quantity=2),   # line 2: latest event: kept
             ev(ts="2026-11-01T09:00:00Z", quantity=3),   # line 3
             ev(event_id="e1123456789abcdef", quantity=4),  # line 4: same ts as line 5, earlier batch
             ev(event_id="e1123456789abcdef", quantity=5),  # line 5: later batch: kept
             ev(event_id="e2123456789abcdef", quantity=6),  # line 6: exact copies, later line kept
             ev(event_id="e2123456789abcdef", quantity=6),
             ev(event_id="e3123456789abcdef", user_id=0)]   # invalid rows take no part in dedup
    rows = curated(spark, events, lines, batches={4: later}).select("_line", "quantity", "reason", "detail").collect()
    assert [(r["_line"], r["reason"]) for r in rows] == [
        (1, "duplicate"), (2, None), (3, "duplicate"), (4, "duplicate"), (5, None), (6, "duplicate"), (7, None),
        (8, "out_of_range")]
    assert rows[0]["detail"] == f"duplicate of event_id={EID}, kept file:/landing/f.jsonl:2"


def test_first_defect_in_reason_order_wins(spark, events):
    line = ev(user_id=..., item_id="x", quantity=1000, extra_key=1)
    assert outcome(spark, events, [line]) == [("missing_required", "user_id: required value is missing")]
    assert REASONS.index("missing_required") < REASONS.index("wrong_type") < REASONS.index("out_of_range")


def test_csv_parsing(spark, tmp_path):
    schema = schema_file(tmp_path, """
        unknown_fields: reject
        csv: {header: true, delimiter: ";"}
        columns:
          - {name: id,   type: long,   nullable: false}
          - {name: name, type: string, nullable: true}
          - {name: qty,  type: int,    nullable: false, default: 0}
    """, fmt="csv")
    header = "id;name;qty"
    lines = ['1;plain;2', '2;"semi;colon ""quoted""";3', '3;;', '"4";"";5.0', '5;a', '6;a;1;extra', '7;"open;1',
             '8;x;abc']
    rows = curated(spark, schema, lines, header=header).select("id", "name", "qty", "reason", "detail").collect()
    assert [(r["id"], r["name"], r["qty"]) for r in rows[:4]] == [
        (1, "plain", 2), (2, 'semi;colon "quoted"', 3), (3, None, 0), (4, "", 5)]
    assert [(r["reason"], r["detail"]) for r in rows[4:]] == [
        ("malformed", "line has 2 fields, the header 3"), ("malformed", "line has 4 fields, the header 3"),
        ("malformed", "unbalanced or misplaced quote"), ("wrong_type", "qty=abc: not a valid int (string)")]
    # the header decides the column order; an unexpected header column rejects the line
    assert outcome(spark, schema, ["x;2;1"], header="name;qty;id") == [(None, None)]
    assert outcome(spark, schema, ["1;a;2;z"], header="id;name;qty;colour") == [
        ("unknown_field", "unknown field(s): colour")]
    assert outcome(spark, schema, ["a;2"], header="name;qty") == [
        ("missing_required", "id: required value is missing")]


# -- the job over Delta tables ---------------------------------------------------------------------------


def _land_events(conf):
    land(conf, "events", "part-00000.jsonl", [
        ev(quantity="2"), ev(event_id="e1123456789abcdef", user_id="x"), "{broken",
        ev(event_id="e2123456789abcdef", extra=1), ev(quantity="2")])
    land(conf, "events", "part-00001.jsonl.gz", [ev(event_id="e3123456789abcdef", type="nope")])


def test_curate_job_writes_silver_quarantine_and_report(spark, conf):
    conf = conf.with_overrides({"curate.max_quarantine_rate": 0.9})
    _land_events(conf)
    land(conf, "items", "part-00000.csv", ["item_id,category,price,brand,updated_at",
                                           "1,home/lamps,9.5,acme,2026-11-01T00:00:00Z",
                                           "2,home/lamps,-1,acme,2026-11-01T00:00:00Z"])
    ingest(spark, conf, DATE, ["events", "items"])
    reports = {r.source: r for r in curate(spark, conf, DATE, ["events", "items"], run_id="r1")}
    rep = reports["events"]
    assert (rep.bronze_rows, rep.silver_rows, rep.quarantine_rows) == (6, 2, 4) and rep.reconciled
    assert rep.quarantine_by_reason == {"invalid_encoding": 0, "malformed": 1, "unknown_field": 0,
                                        "missing_required": 0, "wrong_type": 1, "out_of_range": 1, "duplicate": 1}
    assert rep.quarantine_rate == pytest.approx(3 / 6)
    on_disk = json.loads(Path(report_uri(conf, "events", DATE)).read_text())
    assert on_disk["reconciled"] and on_disk["silver_rows"] == 2 and on_disk["run_id"] == "r1"

    silver = tables.read(spark, conf.table_uri("silver.events"))
    assert silver.columns == ["event_id", "user_id", "item_id", "type", "ts", "session_id", "price", "quantity",
                              "rating", "review_text", "_extra", "_file", "_line", "_ingested_at", "dt"]
    assert dict(silver.schema.fields[silver.columns.index("user_id")].jsonValue())["type"] == "long"
    got = sorted((r["event_id"], r["quantity"], r["_line"], r["_extra"]) for r in silver.collect())
    assert got == [(EID, 2, 5, None), ("e2123456789abcdef", 1, 4, '{"extra":1}')]
    quarantine = tables.read(spark, conf.table_uri("silver.events_quarantine"))
    assert sorted((r["reason"], r["_line"], r["value"][:8]) for r in quarantine.collect()) == [
        ("duplicate", 1, '{"event_'), ("malformed", 3, "{broken"), ("out_of_range", 1, '{"event_'),
        ("wrong_type", 2, '{"event_')]
    assert reports["items"].quarantine_by_reason["out_of_range"] == 1 and reports["items"].silver_rows == 1


@pytest.mark.slow
def test_rerun_is_idempotent_and_gate_fails_with_exit_code_3(spark, conf):
    conf = conf.with_overrides({"curate.max_quarantine_rate": 0.9})
    _land_events(conf)
    ingest(spark, conf, DATE, ["events"])
    curate_source(spark, conf, "events", DATE)
    uris = [conf.table_uri("silver.events"), conf.table_uri("silver.events_quarantine")]
    before = [(tables.version(u), sorted(map(repr, tables.read(spark, u).collect()))) for u in uris]
    again = curate_source(spark, conf, "events", DATE)
    assert again.skipped
    after = [(tables.version(u), sorted(map(repr, tables.read(spark, u).collect()))) for u in uris]
    assert after == before
    forced = curate_source(spark, conf, "events", DATE, force=True)
    assert not forced.skipped and forced.silver_rows == 2
    assert tables.read(spark, uris[0]).count() == 2  # replaced, not appended

    strict = conf.with_overrides({"curate.max_quarantine_rate": 0.1})
    with pytest.raises(DataQualityError, match="quarantine rate 0.5000"):
        curate_source(spark, strict, "events", DATE, force=True)
    from jobs.curate import main

    args = ["--set", f"warehouse={conf.path('warehouse')}", "--set", f"landing={conf.path('landing')}",
            "--set", "curate.max_quarantine_rate=0.1", "--date", DATE, "--source", "events", "--force"]
    assert main(args) == EXIT_DATA_QUALITY


def test_empty_day(spark, conf):
    reports = curate(spark, conf, "2026-01-01", ["users"])
    assert [(r.bronze_rows, r.silver_rows, r.quarantine_rows, r.passed) for r in reports] == [(0, 0, 0, True)]
    assert tables.read(spark, conf.table_uri("silver.users")).count() == 0


def test_new_source_needs_only_conf_and_a_schema_file(spark, conf, tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "orders.yaml").write_text(textwrap.dedent("""
        source: orders
        primary_key: [order_id]
        event_time: placed_at
        unknown_fields: reject
        csv: {header: true, delimiter: "|"}
        columns:
          - {name: order_id,  type: long,            nullable: false}
          - {name: amount,    type: "decimal(8,2)",  nullable: false, range: [0, 1000]}
          - {name: placed_at, type: timestamp,       nullable: false}
    """))
    conf = conf.with_overrides({"schema_dir": str(tmp_path / "schemas"), "curate.max_quarantine_rate": 1.0,
                                "sources.orders": {"format": "csv", "schema": "orders.yaml"}})
    land(conf, "orders", "a.csv", ["order_id|amount|placed_at", "1|9.99|2026-11-01T01:00:00Z",
                                   "1|5.00|2026-11-01T02:00:00Z", "2|2000|2026-11-01T01:00:00Z"])
    ingest(spark, conf, DATE, ["orders"])
    rep = curate_source(spark, conf, "orders", DATE)
    assert rep.quarantine_by_reason["duplicate"] == 1 and rep.quarantine_by_reason["out_of_range"] == 1
    silver = tables.read(spark, conf.table_uri("silver.orders")).select("order_id", "amount")
    assertDataFrameEqual(silver, spark.createDataFrame([(1, Decimal("5.00"))], "order_id long, amount decimal(8,2)"))


@pytest.mark.slow
def test_datagen_ingest_curate_equals_the_manifest(spark, conf):
    from lakeloop_apps.recommender.datagen import generate_day

    conf = conf.with_overrides({"curate.max_quarantine_rate": 0.5})
    manifest = generate_day(conf.path("landing"), DATE, events=4000, users=300, items=200, seed=11,
                            bad_fraction=0.1, parts=3)
    ingest(spark, conf, DATE)
    for report in curate(spark, conf, DATE):
        expected = manifest["sources"][report.source]
        assert report.bronze_rows == expected["rows"], report.source
        assert report.silver_rows == expected["expected_silver"], report.source
        got = {k: v for k, v in report.quarantine_by_reason.items() if k in expected["expected_quarantine"]}
        assert got == expected["expected_quarantine"], report.source
        assert sum(report.quarantine_by_reason.values()) == sum(expected["expected_quarantine"].values())
        silver = tables.read(spark, conf.table_uri(f"silver.{report.source}"))
        assert silver.count() == expected["expected_silver"]
        if "unknown_field" in expected["counts"]:
            assert silver.where(F.col("_extra").isNotNull()).count() == expected["counts"]["unknown_field"]
