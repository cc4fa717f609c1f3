"""Schema-on-read curation: ``bronze.<source>`` -> ``silver.<source>`` + ``silver.<source>_quarantine``.

Every bronze line of the run date ends in exactly one of the two tables.  Parsing and cleansing are
Spark SQL expressions (no Python per row):

1. parse: JSON lines through ``try_parse_json`` (a variant keeps each value's JSON kind, so a string
   column given a number is told apart from ``"12"`` given to a number column); CSV lines split by
   an RFC 4180 regular expression against the header line of their own file;
2. cleanse each column from its text: numbers accept ``12``, ``"12"`` and ``"12.0"``; a
   non-integral value for an integer column, an overflow or an unparsable text is ``wrong_type``;
   absent/null/empty values take the column default, stay null when nullable, and are
   ``missing_required`` otherwise;
3. check ``range``/``enum``/``regex`` (``out_of_range``) and the unknown-field policy;
4. keep one row per primary key: the latest by event time, then by ingest order; the others are
   ``duplicate``.

A rejected line keeps its raw text, lineage, a reason code and a detail naming the column.  When
several defects meet in one line, the reason is the first in :data:`REASONS` order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakeloop.errors import DataQualityError
from lakeloop.filesize import row_bytes, sized
from lakeloop.ingest import BOM, bronze_schema
from lakeloop.job import JobResult, add_range_arguments, per_date_summary, run_dates
from lakeloop.lake import Lake
from lakeloop.reports import Documents
from lakeloop.schemas import Column, SourceSchema, source_names, source_schema

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["REASONS", "CurateReport", "parse", "cleanse", "classify", "deduplicate", "with_extra", "curate_frame",
           "silver_frame", "quarantine_frame", "curate_source", "curate_range", "curate", "report_uri", "run",
           "add_arguments"]

log = logging.getLogger("lakeloop.curate")

REASONS = ("invalid_encoding", "malformed", "unknown_field", "missing_required", "wrong_type", "out_of_range",
           "duplicate")
# reasons that count against curate.max_quarantine_rate (a duplicate is not bad data)
RATE_REASONS = REASONS[:-1]
LINEAGE = ("_file", "_line", "_ingested_at")
QUARANTINE_COLUMNS = ("value", "_header", "reason", "detail", "_file", "_line", "_ingested_at", "_batch_id", "dt")

_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# epoch numbers at or above this magnitude are milliseconds, below it seconds (year 5138)
_EPOCH_MILLIS_FROM = 100_000_000_000
_JSON_NUMBER_KINDS = ("BIGINT", "DOUBLE", "FLOAT")


def _raw(name: str) -> str:
    return f"__raw_{name}"


def _kind(name: str) -> str:
    return f"__kind_{name}"


def _err(name: str) -> str:
    return f"__err_{name}"


def _msg(name: str) -> str:
    return f"__msg_{name}"


# -- 1. parse -------------------------------------------------------------------------------------------


def parse(bronze: DataFrame, schema: SourceSchema) -> DataFrame:
    """Add, per schema column, its text (``__raw_<c>``, null when absent) and JSON kind (``__kind_<c>``),
    plus ``__malformed`` (why the line cannot be parsed, or null) and ``__unknown`` (field names not
    in the schema).

    No expression here is a higher-order function (those run without code generation and would take
    the whole projection with them); ``_extra`` is added at the end by :func:`with_extra`.
    """
    # a stream classifies its lines before they are numbered: there the BOM is stripped wherever it starts a line
    first_line = F.col("_line") == 1 if "_line" in bronze.columns else F.lit(True)
    bronze = bronze.withColumn("__text", _unmarked(F.col("value"), first_line))
    if schema.format == "csv":
        return _parse_csv(bronze, schema).drop("__text")
    return _parse_jsonl(bronze, schema).drop("__text")


def _unmarked(text: SparkColumn, first_line: SparkColumn) -> SparkColumn:
    """``text`` without the UTF-8 byte order mark bronze keeps verbatim on line 1 of a file."""
    return F.when(first_line & text.startswith(BOM), F.substring(text, 2, 1 << 30)).otherwise(text)


def _invalid_encoding(df: DataFrame) -> SparkColumn:
    """Whether a bronze line was not valid UTF-8 (``_raw`` holds its bytes; older bronze tables
    have no ``_raw``: their ``value`` is checked)."""
    return F.col("_raw").isNotNull() if "_raw" in df.columns else ~F.is_valid_utf8("value")


def _known(schema: SourceSchema) -> SparkColumn:
    return F.array(*[F.lit(n) for n in schema.names])


def _parse_jsonl(bronze: DataFrame, schema: SourceSchema) -> DataFrame:
    df = bronze.withColumn("__v", F.try_parse_json("__text"))
    df = df.withColumn("__fields", F.try_variant_get("__v", "$", "map<string,variant>"))
    trimmed = F.trim(F.col("__text"))
    malformed = (
        F.when(F.col("__text").isNull() | (trimmed == ""), F.lit("empty line"))
        .when(F.col("__v").isNull(), F.lit("not valid JSON (or a key repeated)"))
        .when(F.col("__fields").isNull(), F.lit("not a JSON object"))
        .when(~trimmed.endswith("}"), F.lit("text after the JSON object"))
    )
    df = df.withColumn("__malformed", malformed)
    unknown = F.when(F.col("__malformed").isNull(), F.array_except(F.map_keys("__fields"), _known(schema)))
    items = [F.try_variant_get("__v", f"$.{c.name}", "variant").alias(f"__item_{c.name}") for c in schema.columns]
    df = df.select("*", unknown.alias("__unknown"), *items).drop("__v", "__fields")
    texts: list[SparkColumn] = []
    for c in schema.columns:
        item = F.col(f"__item_{c.name}")
        present = item.isNotNull() & ~F.is_variant_null(item)
        texts.append(F.when(present, item.cast("string")).alias(_raw(c.name)))
        texts.append(F.when(present, F.schema_of_variant(item)).alias(_kind(c.name)))
    return df.select("*", *texts).drop(*[f"__item_{c.name}" for c in schema.columns])


def _java_char(ch: str) -> str:
    """``ch`` escaped for a Java regular expression (inside or outside a character class)."""
    return ch if ch.isalnum() else "\\" + ch


def _csv_tokens(line: SparkColumn, schema: SourceSchema) -> tuple[SparkColumn, SparkColumn]:
    """(tokens, well_formed) of one CSV line; tokens keep their quotes (see :func:`_unquote`)."""
    d, q = _java_char(schema.csv.delimiter), _java_char(schema.csv.quote)
    field_re = f"(?:{q}(?:[^{q}]|{q}{q})*+{q}|[^{d}{q}]*+)"
    # every field is preceded by the delimiter, so each match consumes at least one character
    framed = F.concat(F.lit(schema.csv.delimiter), line)
    well_formed = framed.rlike(f"^(?:{d}{field_re})+$")
    return F.regexp_extract_all(framed, F.lit(f"{d}({field_re})"), 1), well_formed


def _unquote(token: SparkColumn, quote: str) -> SparkColumn:
    """A CSV token's value: quotes removed and doubled quotes undone; an unquoted empty token is null."""
    inner = token.substr(F.lit(2), F.length(token) - 2)
    return (F.when(token == "", F.lit(None).cast("string"))
            .when(token.startswith(quote), F.replace(inner, F.lit(quote * 2), F.lit(quote)))
            .otherwise(token))


def _header_names(schema: SourceSchema) -> SparkColumn:
    """The header's column names (quotes stripped: names are identifiers), or the schema's names."""
    if not schema.csv.header:
        return _known(schema)
    tokens, _ = _csv_tokens(_unmarked(F.col("_header"), F.lit(True)), schema)
    q = _java_char(schema.csv.quote)
    return F.split(F.regexp_replace(F.array_join(tokens, "\u0000"), q, ""), "\u0000")


def _parse_csv(bronze: DataFrame, schema: SourceSchema) -> DataFrame:
    if schema.csv.header and "_header" not in bronze.columns:
        bronze = bronze.withColumn("_header", F.lit(None).cast("string"))
    tokens, well_formed = _csv_tokens(F.col("__text"), schema)
    header_ok = _csv_tokens(_unmarked(F.col("_header"), F.lit(True)), schema)[1] if schema.csv.header else F.lit(True)
    df = bronze.withColumn("__fields", tokens).withColumn("__hdr", _header_names(schema))
    n_fields, n_header = F.size("__fields"), F.size("__hdr")
    malformed = (
        F.when(F.col("__text").isNull() | (F.col("__text") == ""), F.lit("empty line"))
        .when(F.col("__hdr").isNull() | ~header_ok, F.lit("file has no readable header line"))
        .when(F.size(F.array_distinct("__hdr")) != n_header, F.lit("header repeats a column name"))
        .when(~well_formed, F.lit("unbalanced or misplaced quote"))
        .when(n_fields != n_header, F.concat(F.lit("line has "), n_fields.cast("string"),
                                             F.lit(" fields, the header "), n_header.cast("string")))
    )
    df = df.withColumn("__malformed", malformed)
    parsed = F.col("__malformed").isNull()
    cols = [F.when(parsed, F.array_except("__hdr", _known(schema))).alias("__unknown")]
    for c in schema.columns:
        pos = F.array_position("__hdr", c.name)
        text = F.when(parsed & (pos > 0), _unquote(F.element_at("__fields", pos.cast("int")), schema.csv.quote))
        cols.append(text.alias(_raw(c.name)))
        cols.append(F.when(text.isNotNull(), F.lit("STRING")).alias(_kind(c.name)))
    return df.select("*", *cols).drop("__fields", "__hdr")


def with_extra(df: DataFrame, schema: SourceSchema) -> DataFrame:
    """Add ``_extra``: a JSON object of the line's unknown fields (JSON values keep their types),
    null when there are none.  The line is parsed again only when it has unknown fields."""
    known = _known(schema)
    text = _unmarked(F.col("value"), F.col("_line") == 1)
    if schema.format == "csv":
        tokens, _ = _csv_tokens(text, schema)
        values = F.transform(tokens, lambda t: _unquote(t, schema.csv.quote))
        fields = F.map_from_arrays(_header_names(schema), values)
    else:
        fields = F.try_variant_get(F.try_parse_json(text), "$", "map<string,variant>")
    unknown_only = F.map_filter(fields, lambda k, _: ~F.array_contains(known, k))
    has_unknown = F.coalesce(F.size("__unknown") > 0, F.lit(False))
    return df.withColumn("_extra", F.when(has_unknown, F.to_json(unknown_only)))


# -- 2./3. cleanse and check one column ----------------------------------------------------------------


def _kind_ok(c: Column, kind: SparkColumn) -> SparkColumn:
    """Which JSON kinds a column accepts: numbers as numbers or strings; strings only as strings."""
    t = c.base_type
    if t == "string":
        return kind == "STRING"
    if t == "boolean":
        return kind.isin("BOOLEAN", "STRING")
    number = kind.isin(*_JSON_NUMBER_KINDS) | kind.startswith("DECIMAL")
    return number | (kind == "STRING")


def _typed(c: Column, text: SparkColumn) -> SparkColumn:
    """``text`` converted to the column type; null when it is not a valid value of the type."""
    t = c.base_type
    s = F.trim(text)
    is_number = s.rlike(_NUMBER)
    if t == "string":
        return text
    if t in ("int", "long"):
        # digits alone, nearly every value, cast as they are; only the other number forms (12.0, 1.2e1) take
        # the exact decimal, whose arithmetic costs several times more
        as_dec = s.try_cast("decimal(38,18)")
        integral = F.when(as_dec == F.floor(as_dec), as_dec.try_cast(c.sql_type))
        return F.when(is_number, F.coalesce(s.try_cast(c.sql_type), integral))
    if t == "double":
        d = s.try_cast("double")
        return F.when(is_number & ~F.isnan(d) & (F.abs(d) != F.lit(float("inf"))), d)
    if t == "decimal":
        d = s.try_cast(c.sql_type)
        return F.when(is_number & (d == s.try_cast("decimal(38,18)")), d)
    if t == "boolean":
        low = F.lower(s)
        return F.when(low.isin("true", "false"), low == "true")
    if t == "timestamp":
        n = s.try_cast("decimal(38,6)")
        epoch = F.when(F.abs(n) >= _EPOCH_MILLIS_FROM, n / 1000).otherwise(n)
        return F.when(is_number, F.timestamp_seconds(epoch)).otherwise(s.try_cast("timestamp"))
    if t == "date":
        return s.try_cast("date")
    raise AssertionError(t)


def _literal(c: Column, value: Any) -> SparkColumn:
    return F.lit(value).cast(c.sql_type)


def _constraint(c: Column, v: SparkColumn) -> tuple[SparkColumn, SparkColumn] | None:
    """(violated, why) for the column's range/enum/regex over its typed value ``v``, or ``None``."""
    checks: list[tuple[SparkColumn, str]] = []
    if c.range is not None:
        lo, hi = c.range
        bad = F.lit(False)
        if lo is not None:
            bad = bad | (v < _literal(c, lo))
        if hi is not None:
            bad = bad | (v > _literal(c, hi))
        checks.append((bad, f"outside range [{lo}, {hi}]"))
    if c.enum is not None:
        checks.append((~v.isin(*c.enum), "not one of " + ", ".join(map(str, c.enum))))
    if c.regex is not None:
        checks.append((~v.rlike(c.regex), f"does not match {c.regex}"))
    if not checks:
        return None
    violated = F.lit(False)
    why = F.lit(None).cast("string")
    for bad, text in reversed(checks):
        violated = violated | bad
        why = F.when(bad, F.lit(text)).otherwise(why)
    return violated, why


def _typed_name(name: str) -> str:
    return f"__typed_{name}"


def _absent_name(name: str) -> str:
    return f"__absent_{name}"


def cleanse(parsed: DataFrame, schema: SourceSchema) -> DataFrame:
    """Add, per column, its typed value (under the column's name) and, when the value is bad, the
    reason (``__err_<c>``) and a detail naming the column (``__msg_<c>``).

    Each step is its own projection over named columns, so that no expression is repeated inside
    another (which would blow up the generated code of wide schemas).
    """
    steps: list[SparkColumn] = []
    for c in schema.columns:
        text, kind = F.col(_raw(c.name)), F.col(_kind(c.name))
        absent = text.isNull() if c.base_type == "string" else (text.isNull() | (F.trim(text) == ""))
        typed = F.when(_kind_ok(c, kind), _typed(c, text))
        steps += [absent.alias(_absent_name(c.name)), typed.alias(_typed_name(c.name))]
    df = parsed.select("*", *steps)

    values = []
    for c in schema.columns:
        fallback = _literal(c, c.default) if c.default is not None else F.lit(None).cast(c.sql_type)
        values.append(F.when(F.col(_absent_name(c.name)), fallback).otherwise(F.col(_typed_name(c.name))).alias(c.name))
    df = df.select("*", *values)

    errors: list[SparkColumn] = []
    for c in schema.columns:
        absent, typed, value = F.col(_absent_name(c.name)), F.col(_typed_name(c.name)), F.col(c.name)
        err = (F.when(absent & F.lit(c.required), F.lit("missing_required"))
               .when(~absent & typed.isNull(), F.lit("wrong_type")))
        check = _constraint(c, value)
        if check is not None:
            err = err.when(value.isNotNull() & check[0], F.lit("out_of_range"))
        errors.append(err.alias(_err(c.name)))
    df = df.select("*", *errors)

    messages: list[SparkColumn] = []
    for c in schema.columns:
        err, text = F.col(_err(c.name)), F.col(_raw(c.name))
        shown = F.coalesce(text, F.lit(repr(c.default)))
        check = _constraint(c, F.col(c.name))
        msg = (F.when(err == "missing_required", F.lit(f"{c.name}: required value is missing"))
               .when(err == "wrong_type", F.concat(F.lit(f"{c.name}="), text, F.lit(f": not a valid {c.type} ("),
                                                   F.lower(F.col(_kind(c.name))), F.lit(")"))))
        if check is not None:
            msg = msg.when(err == "out_of_range", F.concat(F.lit(f"{c.name}="), shown, F.lit(": "), check[1]))
        messages.append(msg.alias(_msg(c.name)))
    helpers = [n for c in schema.columns for n in (_absent_name(c.name), _typed_name(c.name))]
    return df.select("*", *messages).drop(*helpers)


# -- 3. one reason per line ---------------------------------------------------------------------------


def classify(cleansed: DataFrame, schema: SourceSchema) -> DataFrame:
    """Add ``reason`` and ``detail``: the first defect of the line in :data:`REASONS` order,
    or null for a line that is valid (before de-duplication)."""
    malformed = F.col("__malformed")
    if schema.unknown_fields == "reject":
        unknown = F.size(F.coalesce(F.col("__unknown"), F.array())) > 0
    else:
        unknown = F.lit(False)
    encoding = _invalid_encoding(cleansed)
    reason = (F.when(encoding, F.lit("invalid_encoding")).when(malformed.isNotNull(), F.lit("malformed"))
              .when(unknown, F.lit("unknown_field")))
    detail = (F.when(encoding, F.lit("line is not valid UTF-8 (its bytes are in bronze column _raw)"))
              .when(malformed.isNotNull(), malformed)
              .when(unknown, F.concat(F.lit("unknown field(s): "), F.array_join("__unknown", ", "))))
    for code in ("missing_required", "wrong_type", "out_of_range"):
        hits = [F.when(F.col(_err(c.name)) == code, F.col(_msg(c.name))) for c in schema.columns]
        first = F.coalesce(*hits)
        reason = reason.when(first.isNotNull(), F.lit(code))
        detail = detail.when(first.isNotNull(), first)
    return cleansed.withColumn("reason", reason).withColumn("detail", detail)


def deduplicate(classified: DataFrame, schema: SourceSchema) -> DataFrame:
    """Mark all but one valid line per primary key as ``duplicate``.

    The line kept is the latest by event time, then by ingest order (``_ingested_at``, ``_file``,
    ``_line``); the detail of a duplicate names the key and the line that was kept.
    """
    if not schema.primary_key:
        return classified
    order: list[SparkColumn] = []
    if schema.event_time:
        order.append(F.col(schema.event_time).desc_nulls_last())
    order += [F.col("_ingested_at").desc_nulls_last(), F.col("_file").desc_nulls_last(),
              F.col("_line").desc_nulls_last()]
    valid = F.col("reason").isNull()
    # one date's lines are de-duplicated among themselves, also when a range of dates is curated at once
    per_date = ["dt"] if "dt" in classified.columns else []
    w = Window.partitionBy(valid, *per_date, *schema.primary_key).orderBy(*order)
    rank = F.row_number().over(w)
    kept = F.concat(F.first("_file").over(w), F.lit(":"), F.first("_line").over(w).cast("string"))
    key = F.concat_ws(", ", *[F.concat(F.lit(f"{k}="), F.col(k).cast("string")) for k in schema.primary_key])
    ranked = classified.select("*", rank.alias("__rank"), kept.alias("__kept"))  # one window, one shuffle
    dup = valid & (F.col("__rank") > 1)
    return (ranked
            .withColumn("detail", F.when(dup, F.concat(F.lit("duplicate of "), key, F.lit(", kept "), "__kept"))
                        .otherwise(F.col("detail")))
            .withColumn("reason", F.when(dup, F.lit("duplicate")).otherwise(F.col("reason")))
            .drop("__rank", "__kept"))


def curate_frame(bronze: DataFrame, schema: SourceSchema) -> DataFrame:
    """Bronze lines -> every line with its typed columns, ``_extra`` and ``reason``/``detail``
    (null reason: the line belongs in silver)."""
    return with_extra(deduplicate(classify(cleanse(parse(bronze, schema), schema), schema), schema), schema)


def silver_frame(curated: DataFrame, schema: SourceSchema) -> DataFrame:
    """The silver rows of a curated frame: typed columns, ``_extra``, lineage, ``dt``."""
    return (curated.where(F.col("reason").isNull())
            .select(*schema.names, "_extra", *LINEAGE, "dt"))


def quarantine_frame(curated: DataFrame) -> DataFrame:
    """The rejected rows of a curated frame: raw line, header (CSV), reason, detail, lineage, ``dt``."""
    if "_header" not in curated.columns:
        curated = curated.withColumn("_header", F.lit(None).cast("string"))
    return curated.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)


# -- the job: one source, one date -----------------------------------------------------------------------


@dataclass
class CurateReport:
    """Counts of one curate run; ``bronze_rows == silver_rows + quarantine_rows`` always holds."""

    source: str
    dt: str
    run_id: str
    bronze_rows: int
    silver_rows: int
    quarantine_rows: int
    quarantine_by_reason: dict[str, int]
    quarantine_rate: float  # duplicates excluded
    max_quarantine_rate: float
    passed: bool
    bronze_version: int | None
    silver_version: int | None = None
    quarantine_version: int | None = None
    skipped: bool = False  # bronze unchanged since the last run: nothing rewritten
    input_key: str = ""  # the date's bronze files and the schema it was curated from (see _input_key)
    started_at: str = ""
    finished_at: str = ""
    tables: dict[str, str] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return (self.bronze_rows == self.silver_rows + self.quarantine_rows
                and self.quarantine_rows == sum(self.quarantine_by_reason.values()))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reconciled": self.reconciled}

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in self.quarantine_by_reason.items() if v)
        return (f"{self.source} dt={self.dt}: bronze {self.bronze_rows} = silver {self.silver_rows} + quarantine "
                f"{self.quarantine_rows} ({reasons or 'none'}); quarantine rate {self.quarantine_rate:.4f} "
                f"(max {self.max_quarantine_rate})")


def _reports(conf: Conf) -> Documents:
    return Documents.reports(Lake.from_conf(conf), "curate")


def report_uri(conf: Conf, source: str, date: str) -> str:
    """``<warehouse>/_reports/curate/<source>/dt=<date>.json``."""
    return _reports(conf).uri(f"{source}/dt={date}.json")


def _bronze(spark: SparkSession, lake: Lake, schema: SourceSchema, dates: Sequence[str],
            version: int | None) -> DataFrame:
    if version is None:
        return spark.createDataFrame([], bronze_schema(schema))
    table = f"bronze.{schema.source}"
    lines = lake.read(spark, table, version=version, where=_dates_in(dates))
    cores = spark.sparkContext.defaultParallelism
    # a day of bronze is often one file of one row group, which Spark reads in one task: parsing and cleansing,
    # most of curate's cost, would run on one core.  A hash of _line needs no sort, where a round-robin
    # repartition sorts every row first to stay deterministic
    files = lake.partition_files(table)
    if "_line" in lines.columns and sum(len(files.get(d, ())) for d in dates) < cores:
        return lines.repartition(cores, "_line")
    return lines


def _dates_in(dates: Sequence[str]) -> str:
    return f"dt = '{dates[0]}'" if len(dates) == 1 else "dt IN (" + ", ".join(f"'{d}'" for d in dates) + ")"


def _counts(curated: DataFrame) -> dict[str, dict[str | None, int]]:
    """Rows per date and reason (null: silver)."""
    out: dict[str, dict[str | None, int]] = {}
    for r in curated.groupBy("dt", "reason").count().collect():
        out.setdefault(r["dt"], {})[r["reason"]] = int(r["count"])
    return out


def _input_key(schema: SourceSchema, files: str) -> str:
    """What a date's curation depends on: its bronze files (``files``: a digest of their paths, from the log)
    and the source schema."""
    return hashlib.sha256(f"{files}\n{dataclasses.replace(schema, path='')!r}".encode()).hexdigest()[:20]


def _done_before(conf: Conf, source: str, date: str, key: str) -> CurateReport | None:
    """The report of an earlier run that passed and curated ``date`` from the same input, else None."""
    earlier = _reports(conf).read_json(f"{source}/dt={date}.json")
    if not isinstance(earlier, dict) or not earlier.get("passed") or earlier.get("input_key") != key:
        return None
    fields = {k: v for k, v in earlier.items() if k in CurateReport.__dataclass_fields__}
    return CurateReport(**{**fields, "skipped": True})


def curate_source(spark: SparkSession, conf: Conf, source: str, date: str, *, run_id: str = "",
                  force: bool = False) -> CurateReport:
    """Curate ``bronze.<source>`` for ``date`` into ``silver.<source>`` and its quarantine table.

    Both tables are overwritten for ``dt = date`` only.  A date whose bronze files and schema are those of
    an earlier run that passed is not read again (``skipped``: the earlier report, nothing committed) unless
    ``force``; the decision is made from the table log and the report, before any data is read.  The writes
    also carry the transaction ``(curate:<source>:<date>, bronze version + 1)``.  The JSON report is
    written to :func:`report_uri` whenever the date is curated.

    Raises
    ------
    DataQualityError
        When the quarantine rate (duplicates excluded) exceeds ``curate.max_quarantine_rate``; the
        quarantine and the report are written, silver is not.
    """
    return curate_range(spark, conf, source, [date], run_id=run_id, force=force)[0]


def curate_range(spark: SparkSession, conf: Conf, source: str, dates: Sequence[str], *, run_id: str = "",
                 force: bool = False) -> list[CurateReport]:
    """:func:`curate_source` for every date of ``dates`` in one pass: the dates still to do are read from
    bronze at once, curated together (de-duplicated per date) and written with one partition replace per
    table for those dates; each date gets its own report, and is skipped on its own when done before.
    One report per date, in order; :class:`DataQualityError` (with every report attached) when any date
    fails the quarantine gate, after the dates that pass are written.
    """
    schema = source_schema(conf, source)
    lake = Lake.from_conf(conf)
    version, files = lake.partition_state(f"bronze.{source}")
    keys = {d: _input_key(schema, files.get(d, "")) for d in dates}
    reports = {} if force else {d: r for d in dates if (r := _done_before(conf, source, d, keys[d])) is not None}
    for d, report in reports.items():
        log.info("curate %s %s: bronze unchanged since run %s, skipped", source, d, report.run_id)
    todo = [d for d in dates if d not in reports]
    if todo:
        reports.update(_curate_dates(spark, conf, schema, todo, version, keys, run_id, force))
    ordered = [reports[d] for d in dates]
    failed = [r for r in ordered if not r.passed]
    if failed:
        error = DataQualityError("; ".join(
            f"curate {r.summary()}: quarantine rate above curate.max_quarantine_rate; silver not written; see "
            f"{report_uri(conf, source, r.dt)}" for r in failed))
        error.reports = ordered
        raise error
    return ordered


def _curate_dates(spark: SparkSession, conf: Conf, schema: SourceSchema, todo: Sequence[str], version: int | None,
                  keys: dict[str, str], run_id: str, force: bool) -> dict[str, CurateReport]:
    """Curate the dates ``todo`` from bronze at ``version`` in one pass; their reports, written."""
    source, lake, started = schema.source, Lake.from_conf(conf), _now()
    limit = conf["curate.max_quarantine_rate"]
    tables = {"silver": lake.uri(f"silver.{source}"), "quarantine": lake.uri(f"silver.{source}_quarantine")}
    curated = curate_frame(_bronze(spark, lake, schema, todo, version), schema).persist()
    try:
        counts = _counts(curated)
        reports = {d: _report(source, d, run_id, counts.get(d, {}), limit, version, started, dict(tables), keys[d])
                   for d in todo}
        single = len(todo) == 1 and not force
        txn = (f"curate:{source}:{todo[0]}", (version if version is not None else -1) + 1) if single else None
        per_row = row_bytes(lake, f"bronze.{source}")
        quarantined = {d: reports[d].quarantine_rows for d in todo}
        q = lake.write(sized(quarantine_frame(curated), quarantined, row_bytes(lake, tables["quarantine"], per_row),
                             lake.target_file_size),
                       tables["quarantine"], mode="overwrite", partition_by=["dt"], replace_where=_dates_in(todo),
                       txn=txn)
        passed = [d for d in todo if reports[d].passed]
        s = None
        if passed:
            rows = curated if len(passed) == len(todo) else curated.where(F.col("dt").isin(passed))
            silver = sized(silver_frame(rows, schema), {d: reports[d].silver_rows for d in passed},
                           row_bytes(lake, tables["silver"], per_row), lake.target_file_size)
            s = lake.write(silver, tables["silver"], mode="overwrite", partition_by=["dt"],
                           replace_where=_dates_in(passed), txn=txn)
    finally:
        curated.unpersist()
    finished = _now()
    for d, report in reports.items():
        report.quarantine_version, report.finished_at = q.version, finished
        if report.passed and s is not None:
            report.silver_version, report.skipped = s.version, s.skipped and q.skipped
        _reports(conf).write_json(f"{source}/dt={d}.json", report.as_dict())
        log.info("curate %s", report.summary())
    return reports


def _report(source: str, date: str, run_id: str, counts: dict[str | None, int], limit: float,
            bronze_version: int | None, started: str, tables: dict[str, str], key: str) -> CurateReport:
    by_reason = {r: counts.get(r, 0) for r in REASONS}
    total = sum(counts.values())
    rate = sum(by_reason[r] for r in RATE_REASONS) / total if total else 0.0
    return CurateReport(source=source, dt=date, run_id=run_id, bronze_rows=total, silver_rows=counts.get(None, 0),
                        quarantine_rows=sum(by_reason.values()), quarantine_by_reason=by_reason,
                        quarantine_rate=rate, max_quarantine_rate=limit, passed=rate <= limit,
                        bronze_version=bronze_version, started_at=started, tables=tables, input_key=key)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def curate(spark: SparkSession, conf: Conf, date: str | Sequence[str], sources: Sequence[str] | None = None, *,
           run_id: str = "", force: bool = False) -> list[CurateReport]:
    """Curate ``sources`` (default: every source in conf) for ``date`` (or every date of a sequence, in one
    pass per source: :func:`curate_range`); one report per source and date.

    Every source is curated even when one fails its quality gate; the first
    :class:`DataQualityError` is raised at the end.
    """
    names = list(sources) if sources else source_names(conf)
    dates = [date] if isinstance(date, str) else list(date)
    for name in names:
        source_schema(conf, name)
    reports: list[CurateReport] = []
    failures: list[DataQualityError] = []
    for name in names:
        try:
            reports += curate_range(spark, conf, name, dates, run_id=run_id, force=force)
        except DataQualityError as exc:
            failures.append(exc)
    if failures:
        error = DataQualityError("; ".join(str(f) for f in failures))
        error.reports = reports + [r for f in failures for r in getattr(f, "reports", [])]
        raise error
    return reports


DESCRIPTION = "bronze -> silver + quarantine (schema-on-read) for --date or every date of --from/--to"
_SUMMARY = ("bronze_rows", "silver_rows", "quarantine_rows", "quarantine_rate", "quarantine_by_reason", "reconciled")


def _sources(reports: Sequence[CurateReport]) -> dict[str, Any]:
    sources = {r.source: {k: v for k, v in r.as_dict().items() if k in _SUMMARY} for r in reports}
    return {"sources": sources} if sources else {}


def _result(dates: Sequence[str], reports: Sequence[CurateReport]) -> JobResult[list[CurateReport]]:
    return JobResult(list(reports), per_date_summary(dates, reports, _sources))


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[list[CurateReport]]:
    """The ``curate`` job; a failed quality gate raises with the result of every source attached."""
    dates = [d.isoformat() for d in run_dates(ctx.run_date, args)]
    try:
        reports = curate(spark, ctx.conf, dates, args.source, run_id=ctx.run_id, force=args.force)
    except DataQualityError as exc:
        reports = getattr(exc, "reports", [])
        exc.result = _result(dates, reports)
        exc.result.summary["failed"] = sorted({r.dt for r in reports if not r.passed})
        raise
    for report in reports:
        ctx.log.info("curate report %s", json.dumps(report.as_dict(), sort_keys=True))
    return _result(dates, reports)


def add_arguments(parser) -> None:
    """The options of the ``curate`` job beyond the common ones."""
    parser.add_argument("--source", action="append", default=None,
                        help="source to curate (repeatable; default: every source in conf)")
    parser.add_argument("--force", action="store_true",
                        help="recompute even when bronze and the schema have not changed since the last run")
    add_range_arguments(parser, "a range curated in one pass")
