"""Schema files: the project's sources load, every kind of mistake names its file and column."""

from __future__ import annotations

import textwrap

import pytest
from lakeloop.errors import EXIT_USAGE, exit_code_for
from lakeloop.schemas import SchemaError, load_schema, source_names, source_schema, violation

GOOD = """
source: orders
primary_key: [order_id]
event_time: placed_at
unknown_fields: reject
csv: {header: true, delimiter: ";"}
columns:
  - {name: order_id,  type: long,          nullable: false, range: [1, null]}
  - {name: amount,    type: "decimal(10,2)", nullable: false, range: [0, 10000]}
  - {name: paid,      type: boolean,       nullable: true}
  - {name: placed_at, type: timestamp,     nullable: false, range: ["2020-01-01T00:00:00Z", null]}
  - {name: ship_on,   type: date,          nullable: true}
  - {name: channel,   type: string,        nullable: false, default: web, enum: [web, app, store]}
"""


def write(tmp_path, text: str, name: str = "orders.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_project_sources_load(conf):
    assert source_names(conf) == ["events", "items", "users"]
    events = source_schema(conf, "events")
    assert events.format == "jsonl" and events.primary_key == ("event_id",) and events.event_time == "ts"
    assert events.unknown_fields == "keep"
    assert events.column("quantity").default == 1 and not events.column("quantity").required
    assert events.column("user_id").required
    assert events.struct_type().simpleString() == (
        "struct<event_id:string,user_id:bigint,item_id:bigint,type:string,ts:timestamp,session_id:string,"
        "price:double,quantity:int,rating:int,review_text:string>")
    items = source_schema(conf, "items")
    assert items.format == "csv" and items.csv.header and items.unknown_fields == "reject"


def test_every_type_and_option(tmp_path):
    s = load_schema(write(tmp_path, GOOD), fmt="csv", source="orders")
    assert [c.sql_type for c in s.columns] == ["bigint", "decimal(10,2)", "boolean", "timestamp", "date", "string"]
    assert s.csv.delimiter == ";" and s.column("amount").decimal_precision == (10, 2)
    assert s.column("channel").default == "web"


@pytest.mark.parametrize("text, fragments", [
    ("columns: []", ["columns: expected a non-empty list"]),
    ("columns:\n  - {name: a, type: integer}", ["column 'a'", "type 'integer'"]),
    ("columns:\n  - {name: a, type: 'decimal(40,2)'}", ["column 'a'", "precision <= 38"]),
    ("columns:\n  - {name: a, type: string, range: [1, 2]}", ["column 'a'", "range: only for"]),
    ("columns:\n  - {name: a, type: long, range: [5, 1]}", ["column 'a'", "low 5 is above high 1"]),
    ("columns:\n  - {name: a, type: long, regex: '^1'}", ["column 'a'", "regex: only for string"]),
    ("columns:\n  - {name: a, type: string, regex: '(['}", ["column 'a'", "does not compile"]),
    ("columns:\n  - {name: a, type: string, enum: [x, y], default: z}", ["column 'a'", "default 'z'", "not one of"]),
    ("columns:\n  - {name: a, type: int, default: 1.5}", ["column 'a'", "1.5 is not a valid int"]),
    ("columns:\n  - {name: a, type: int, nullable: maybe}", ["column 'a'", "nullable"]),
    ("columns:\n  - {name: a, type: int, size: 3}", ["column 'a'", "unknown key(s) size"]),
    ("columns:\n  - {name: a, type: int}\n  - {name: a, type: long}", ["column 'a'", "defined twice"]),
    ("columns:\n  - {name: _file, type: string}", ["column #1", "name '_file'"]),
    ("columns:\n  - {name: dt, type: string}", ["column 'dt'", "reserved"]),
    ("columns:\n  - {type: string}", ["column #1", "name None"]),
    ("primary_key: [b]\ncolumns:\n  - {name: a, type: int, nullable: false}", ["primary_key: column 'b'"]),
    ("primary_key: [a]\ncolumns:\n  - {name: a, type: int}", ["primary_key: column 'a' must be declared"]),
    ("event_time: a\ncolumns:\n  - {name: a, type: string}", ["event_time: column 'a' has type string"]),
    ("unknown_fields: drop\ncolumns:\n  - {name: a, type: int}", ["unknown_fields: expected keep or reject"]),
    ("csv: {delimiter: ';;'}\ncolumns:\n  - {name: a, type: int}", ["csv.delimiter: expected a single character"]),
    ("colums:\n  - {name: a, type: int}", ["unknown key(s) colums"]),
    ("columns: [unclosed", ["not valid YAML"]),
    ("source: other\ncolumns:\n  - {name: a, type: int}", ["source 'other' does not match"]),
])
def test_bad_schema_file_names_file_and_column(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(SchemaError) as info:
        load_schema(path, source="orders")
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    assert exit_code_for(info.value) == EXIT_USAGE


def test_unknown_source_and_bad_source_entries(conf, tmp_path):
    with pytest.raises(SchemaError, match=r"unknown source 'clicks'.*known: events, items, users"):
        source_schema(conf, "clicks")
    bad_format = conf.with_overrides({"sources.orders": {"format": "parquet", "schema": "x.yaml"}})
    with pytest.raises(SchemaError, match=r"sources.orders.format: expected one of jsonl, csv"):
        source_schema(bad_format, "orders")
    missing_file = conf.with_overrides({"sources.orders": {"format": "csv", "schema": "nope.yaml"}})
    with pytest.raises(SchemaError, match=r"schema file 'nope.yaml' not found"):
        source_schema(missing_file, "orders")


def test_new_source_from_conf_and_a_schema_file_only(conf, tmp_path):
    path = write(tmp_path, GOOD)
    by_path = conf.with_overrides({"sources.orders": {"format": "csv", "schema": str(path)}})
    assert source_schema(by_path, "orders").names[0] == "order_id"
    by_dir = conf.with_overrides({"schema_dir": str(tmp_path), "sources.orders": {"format": "csv",
                                                                                   "schema": "orders.yaml"}})
    assert "orders" in source_names(by_dir)
    assert source_schema(by_dir, "orders").path == str(path.resolve())


def test_violation_mirrors_the_constraints(tmp_path):
    s = load_schema(write(tmp_path, GOOD), fmt="csv", source="orders")
    assert violation(s.column("order_id"), 0) == "outside range [1, None]"
    assert violation(s.column("order_id"), 1) is None
    assert violation(s.column("channel"), "fax").startswith("not one of")
    assert violation(s.column("placed_at"), "2019-12-31T23:59:59Z").startswith("outside range")


def test_a_null_entry_removes_a_source_an_earlier_file_declared(conf):
    from lakeloop.schemas import source_names

    assert source_names(conf) == ["events", "items", "users"]
    only_events = conf.with_overrides({"sources.users": None, "sources.items": None})
    assert source_names(only_events) == ["events"]
    with pytest.raises(SchemaError, match=r"unknown source 'users'.*known: events"):
        source_schema(only_events, "users")


def test_the_pipeline_gives_its_sources_to_the_source_aware_steps():
    from lakeloop.pipeline import DAILY_STEPS, for_sources

    steps = {s.name: s.extra for s in for_sources(DAILY_STEPS, ["flights", "weather"])}
    assert steps["ingest"] == steps["curate"] == ("--source", "flights", "--source", "weather")
    assert steps["validate"] == ("--table", "silver.flights", "--table", "silver.weather")
    assert steps["features"] == steps["train"] == steps["infer"] == ()
    assert for_sources(DAILY_STEPS, None) == DAILY_STEPS
