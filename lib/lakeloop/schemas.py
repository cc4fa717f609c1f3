"""Schema-on-read contracts: load and validate ``schemas/<source>.yaml``.

A source is declared in conf as ``sources.<name>: {format: jsonl|csv, schema: <file>}``; the schema
file holds its columns, types, nullability, defaults, constraints, primary key, event-time column,
unknown-field policy and CSV options.  Nothing else is needed to add a source: the ingest and
curate jobs are driven entirely by :class:`SourceSchema`.  The file format is described in
``docs/sources.md``.  Every problem in a file raises :class:`SchemaError` naming the file and,
where there is one, the column.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lakeloop.conf import ConfError
from lakeloop.paths import project_root

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

    from lakeloop.conf import Conf

__all__ = ["SchemaError", "Column", "CsvOptions", "SourceSchema", "FORMATS", "LINEAGE_COLUMNS",
           "load_schema", "source_schema", "source_names", "schema_path"]

FORMATS = ("jsonl", "csv")
UNKNOWN_FIELD_POLICIES = ("keep", "reject")
SIMPLE_TYPES = ("string", "int", "long", "double", "boolean", "timestamp", "date")
INTEGRAL_TYPES = ("int", "long")
ORDERED_TYPES = ("int", "long", "double", "decimal", "timestamp", "date")
EVENT_TIME_TYPES = ("timestamp", "date", "int", "long")
# columns the pipeline adds itself; a source column may not take these names
LINEAGE_COLUMNS = ("_extra", "_raw", "_file", "_line", "_ingested_at", "_batch_id", "_header", "dt")

_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_INT_BOUNDS = {"int": (-(2 ** 31), 2 ** 31 - 1), "long": (-(2 ** 63), 2 ** 63 - 1)}
_TOP_KEYS = {"source", "description", "primary_key", "event_time", "unknown_fields", "columns", "csv"}
_COLUMN_KEYS = {"name", "type", "nullable", "default", "range", "enum", "regex", "description"}
_CSV_KEYS = {"header", "delimiter", "quote"}
_SOURCE_KEYS = {"format", "schema"}


class SchemaError(ConfError):
    """A schema file or a ``sources`` entry is invalid; the message names the file and column."""


@dataclass(frozen=True)
class Column:
    """One typed column of a source.

    ``range`` bounds are inclusive, ``None`` meaning unbounded; for ``date``/``timestamp``
    columns they are ISO strings.  ``regex`` uses find semantics (anchor it with ``^...$``).
    """

    name: str
    type: str
    nullable: bool = True
    default: Any = None
    range: tuple[Any, Any] | None = None
    enum: tuple[Any, ...] | None = None
    regex: str | None = None

    @property
    def base_type(self) -> str:
        """``decimal`` for ``decimal(p,s)``, the type name otherwise."""
        return "decimal" if self.type.startswith("decimal") else self.type

    @property
    def required(self) -> bool:
        """Non-nullable and without a default: a missing value quarantines the row."""
        return not self.nullable and self.default is None

    @property
    def decimal_precision(self) -> tuple[int, int]:
        m = _DECIMAL.match(self.type)
        if m is None:
            raise ValueError(f"column {self.name} is not a decimal")
        return int(m.group(1)), int(m.group(2))

    def spark_type(self) -> DataType:
        """The Spark SQL type of the silver column."""
        from pyspark.sql import types as T

        simple = {"string": T.StringType(), "int": T.IntegerType(), "long": T.LongType(),
                  "double": T.DoubleType(), "boolean": T.BooleanType(),
                  "timestamp": T.TimestampType(), "date": T.DateType()}
        if self.base_type == "decimal":
            return T.DecimalType(*self.decimal_precision)
        return simple[self.type]

    @property
    def sql_type(self) -> str:
        """The type as Spark SQL spells it (``bigint``, ``decimal(10,2)``, ...)."""
        return self.spark_type().simpleString()


@dataclass(frozen=True)
class CsvOptions:
    """How the CSV lines of a source are split: RFC 4180 quoting, one physical line per record."""

    header: bool = True
    delimiter: str = ","
    quote: str = '"'


@dataclass(frozen=True)
class SourceSchema:
    """A source's contract: format, columns in order, key, event time and unknown-field policy."""

    source: str
    format: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    event_time: str | None = None
    unknown_fields: str = "reject"
    csv: CsvOptions = field(default_factory=CsvOptions)
    path: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.path}: no column {name!r}")

    def struct_type(self) -> StructType:
        """The typed columns as a Spark schema (all nullable, as delta-spark writes them)."""
        from pyspark.sql import types as T

        return T.StructType([T.StructField(c.name, c.spark_type(), True) for c in self.columns])


# -- locating files and conf entries ----------------------------------------------------------------


def source_names(conf: Conf) -> list[str]:
    """The sources declared in conf, sorted; an entry set to null (``sources.events: null``) removes a source
    an earlier conf file declared."""
    return sorted(name for name, entry in conf["sources"].items() if entry is not None)


def _source_entry(conf: Conf, source: str) -> Mapping[str, Any]:
    sources = {name: conf["sources"][name] for name in source_names(conf)}
    if source not in sources:
        known = ", ".join(sorted(sources)) or "none"
        raise SchemaError(f"unknown source {source!r}: not declared under 'sources' in conf (known: {known})")
    entry = sources[source]
    where = f"{conf.origin('sources')}: sources.{source}"
    if not isinstance(entry, Mapping):
        raise SchemaError(f"{where}: expected a mapping {{format, schema}}, got {entry!r}")
    extra = set(entry) - _SOURCE_KEYS
    if extra:
        raise SchemaError(f"{where}: unknown key(s) {', '.join(sorted(extra))} (allowed: format, schema)")
    if entry.get("format") not in FORMATS:
        raise SchemaError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {entry.get('format')!r}")
    if not entry.get("schema"):
        raise SchemaError(f"{where}.schema: a schema file is required")
    return entry


def schema_path(conf: Conf, file: str) -> Path:
    """Resolve a schema file name from conf.

    An absolute path is used as it is; a relative one is looked up in ``schema_dir`` (conf),
    ``$LAKELOOP_SCHEMA_DIR``, ``schemas/`` beside the conf directory, ``./schemas``, the working
    directory (files shipped with ``spark-submit --files``) and the project's ``schemas/``.
    """
    p = Path(file)
    if p.is_absolute():
        return p
    dirs: list[Path] = []
    if conf.get("schema_dir"):
        dirs.append(Path(conf["schema_dir"]))
    if os.environ.get("LAKELOOP_SCHEMA_DIR"):
        dirs.append(Path(os.environ["LAKELOOP_SCHEMA_DIR"]))
    if conf.conf_dir is not None:
        dirs.append(Path(conf.conf_dir).parent / "schemas")
    dirs += [Path("schemas"), Path("."), project_root() / "schemas"]
    for d in dirs:
        if (d / p).is_file():
            return (d / p).resolve()
    raise SchemaError(f"schema file {file!r} not found (looked in {', '.join(str(d) for d in dirs)})")


def source_schema(conf: Conf, source: str) -> SourceSchema:
    """The validated schema of ``source`` as declared in conf.

    Raises :class:`SchemaError` for an undeclared source, a bad ``sources`` entry or a bad file.
    """
    entry = _source_entry(conf, source)
    return load_schema(schema_path(conf, str(entry["schema"])), fmt=entry["format"], source=source)


# -- parsing and validating one file ----------------------------------------------------------------


def load_schema(path: str | os.PathLike[str], fmt: str = "jsonl", source: str | None = None) -> SourceSchema:
    """Read and validate one schema file.

    Parameters
    ----------
    path : str or path-like
        The YAML file.
    fmt : str
        The landing format of the source, ``jsonl`` or ``csv``.
    source : str, optional
        The source name from conf; when given, the file's ``source`` key must agree.
    """
    path = Path(path)
    where = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise SchemaError(f"{where}: cannot read schema file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SchemaError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: top level must be a mapping with 'columns'")
    _no_unknown_keys(raw, _TOP_KEYS, where)
    if fmt not in FORMATS:
        raise SchemaError(f"{where}: format {fmt!r}: expected one of {', '.join(FORMATS)}")
    name = raw.get("source", source or path.stem)
    if source is not None and name != source:
        raise SchemaError(f"{where}: source {name!r} does not match the conf entry sources.{source}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SchemaError(f"{where}: source {name!r}: expected a name of letters, digits and _")
    columns = _columns(raw.get("columns"), where)
    unknown = raw.get("unknown_fields", "reject")
    if unknown not in UNKNOWN_FIELD_POLICIES:
        raise SchemaError(f"{where}: unknown_fields: expected keep or reject, got {unknown!r}")
    return SourceSchema(
        source=name,
        format=fmt,
        columns=columns,
        primary_key=_primary_key(raw.get("primary_key"), columns, where),
        event_time=_event_time(raw.get("event_time"), columns, where),
        unknown_fields=unknown,
        csv=_csv_options(raw.get("csv"), where),
        path=where,
    )


def _no_unknown_keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(map(str, raw)) - allowed
    if extra:
        raise SchemaError(f"{where}: unknown key(s) {', '.join(sorted(extra))} "
                          f"(allowed: {', '.join(sorted(allowed))})")


def _columns(raw: Any, where: str) -> tuple[Column, ...]:
    if not isinstance(raw, list) or not raw:
        raise SchemaError(f"{where}: columns: expected a non-empty list of column mappings")
    columns: list[Column] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        col = _column(item, f"{where}: column #{i + 1}")
        if col.name in seen:
            raise SchemaError(f"{where}: column {col.name!r}: defined twice")
        seen.add(col.name)
        columns.append(col)
    return tuple(columns)


def _column(raw: Any, where: str) -> Column:
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: expected a mapping with name and type, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SchemaError(f"{where}: name {name!r}: expected letters, digits and _, starting with a letter")
    where = where.split(": column #")[0] + f": column {name!r}"
    _no_unknown_keys(raw, _COLUMN_KEYS, where)
    if name in LINEAGE_COLUMNS:
        raise SchemaError(f"{where}: the name is reserved for lineage columns")
    type_ = _type(raw.get("type"), where)
    nullable = raw.get("nullable", True)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{where}: nullable: expected true or false, got {nullable!r}")
    col = Column(name=name, type=type_, nullable=nullable)
    col = Column(name=name, type=type_, nullable=nullable,
                 range=_range(raw.get("range"), col, where),
                 enum=_enum(raw.get("enum"), col, where),
                 regex=_regex(raw.get("regex"), col, where))
    if raw.get("default") is not None:
        default = _typed_value(raw["default"], col, f"{where}: default")
        problem = violation(col, default)
        if problem:
            raise SchemaError(f"{where}: default {raw['default']!r} {problem}")
        col = Column(name=name, type=type_, nullable=nullable, default=raw["default"],
                     range=col.range, enum=col.enum, regex=col.regex)
    return col


def _type(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise SchemaError(f"{where}: type: required, one of {', '.join(SIMPLE_TYPES)}, decimal(p,s)")
    t = raw.strip().lower()
    if t in SIMPLE_TYPES:
        return t
    m = _DECIMAL.match(t)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not 1 <= p <= 38 or s > p:
            raise SchemaError(f"{where}: type {raw!r}: decimal needs 1 <= precision <= 38 and scale <= precision")
        return f"decimal({p},{s})"
    raise SchemaError(f"{where}: type {raw!r}: expected one of {', '.join(SIMPLE_TYPES)} or decimal(p,s)")


def _typed_value(value: Any, col: Column, where: str) -> Any:
    """``value`` from the YAML file converted to ``col``'s Python type, or SchemaError."""
    t = col.base_type
    bad = SchemaError(f"{where}: {value!r} is not a valid {col.type}")
    if t == "string":
        if not isinstance(value, str):
            raise bad
        return value
    if t == "boolean":
        if not isinstance(value, bool):
            raise bad
        return value
    if t in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        lo, hi = _INT_BOUNDS[t]
        if not lo <= value <= hi:
            raise bad
        return value
    if t in ("double", "decimal"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return value
    if t in ("timestamp", "date"):
        return _temporal(value, t, bad)
    raise AssertionError(t)


def _temporal(value: Any, type_: str, bad: SchemaError) -> dt.date | dt.datetime:
    if type_ == "date" and isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str):
        raise bad
    try:
        if type_ == "date":
            return dt.date.fromisoformat(value)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _range(raw: Any, col: Column, where: str) -> tuple[Any, Any] | None:
    if raw is None:
        return None
    if col.base_type not in ORDERED_TYPES:
        raise SchemaError(f"{where}: range: only for {', '.join(ORDERED_TYPES)} columns, not {col.type}")
    if not isinstance(raw, list) or len(raw) != 2:
        raise SchemaError(f"{where}: range: expected [low, high] (null for unbounded), got {raw!r}")
    lo, hi = (None if v is None else _typed_value(v, col, f"{where}: range bound") for v in raw)
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"{where}: range: low {raw[0]!r} is above high {raw[1]!r}")
    if lo is None and hi is None:
        raise SchemaError(f"{where}: range: at least one bound is needed")
    return (raw[0], raw[1])


def _enum(raw: Any, col: Column, where: str) -> tuple[Any, ...] | None:
    if raw is None:
        return None
    if col.base_type in ("timestamp", "date", "boolean"):
        raise SchemaError(f"{where}: enum: not supported for {col.type} columns")
    if not isinstance(raw, list) or not raw:
        raise SchemaError(f"{where}: enum: expected a non-empty list of values")
    return tuple(_typed_value(v, col, f"{where}: enum value") for v in raw)


def _regex(raw: Any, col: Column, where: str) -> str | None:
    if raw is None:
        return None
    if col.type != "string":
        raise SchemaError(f"{where}: regex: only for string columns, not {col.type}")
    if not isinstance(raw, str):
        raise SchemaError(f"{where}: regex: expected a string, got {raw!r}")
    try:
        re.compile(raw)
    except re.error as exc:
        raise SchemaError(f"{where}: regex {raw!r} does not compile: {exc}") from None
    return raw


def violation(col: Column, value: Any) -> str | None:
    """Why a typed ``value`` breaks ``col``'s range, enum or regex, or ``None`` when it does not.

    The same rules are applied to every row by Spark expressions in :mod:`lakeloop.curate`.
    """
    if col.range is not None:
        lo, hi = (None if b is None else _typed_value(b, col, "range") for b in col.range)
        if col.base_type in ("timestamp", "date"):
            value = _typed_value(value, col, "value")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"outside range [{col.range[0]}, {col.range[1]}]"
    if col.enum is not None and value not in col.enum:
        return f"not one of {', '.join(map(str, col.enum))}"
    if col.regex is not None and re.search(col.regex, str(value)) is None:
        return f"does not match {col.regex}"
    return None


def _primary_key(raw: Any, columns: tuple[Column, ...], where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    keys = [raw] if isinstance(raw, str) else raw
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise SchemaError(f"{where}: primary_key: expected a column name or a list of names, got {raw!r}")
    by_name = {c.name: c for c in columns}
    for k in keys:
        if k not in by_name:
            raise SchemaError(f"{where}: primary_key: column {k!r} is not defined")
        if by_name[k].nullable:
            raise SchemaError(f"{where}: primary_key: column {k!r} must be declared nullable: false")
    return tuple(keys)


def _event_time(raw: Any, columns: tuple[Column, ...], where: str) -> str | None:
    if raw is None:
        return None
    by_name = {c.name: c for c in columns}
    if raw not in by_name:
        raise SchemaError(f"{where}: event_time: column {raw!r} is not defined")
    if by_name[raw].type not in EVENT_TIME_TYPES:
        raise SchemaError(f"{where}: event_time: column {raw!r} has type {by_name[raw].type}; "
                          f"expected one of {', '.join(EVENT_TIME_TYPES)}")
    return raw


def _csv_options(raw: Any, where: str) -> CsvOptions:
    if raw is None:
        return CsvOptions()
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: csv: expected a mapping of {', '.join(sorted(_CSV_KEYS))}")
    _no_unknown_keys(raw, _CSV_KEYS, f"{where}: csv")
    opts = CsvOptions(header=raw.get("header", True), delimiter=raw.get("delimiter", ","),
                      quote=raw.get("quote", '"'))
    if not isinstance(opts.header, bool):
        raise SchemaError(f"{where}: csv.header: expected true or false, got {opts.header!r}")
    for key in ("delimiter", "quote"):
        value = getattr(opts, key)
        if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
            raise SchemaError(f"{where}: csv.{key}: expected a single character, got {value!r}")
    if opts.delimiter == opts.quote:
        raise SchemaError(f"{where}: csv: delimiter and quote must differ")
    return opts
