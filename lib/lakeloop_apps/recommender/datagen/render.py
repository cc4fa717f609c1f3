"""Rendering generated rows as JSON lines or CSV lines.

Good rows are rendered column-wise with Arrow compute kernels (no Python loop per row: one
concatenation kernel builds every line of a chunk); rows that carry a defect are rendered one at a
time as a list of ``(column, token)`` pairs that the defect functions edit.  Both paths produce the
same bytes for the same row.

Values are kept in a few physical forms: strings as Arrow string arrays (from vocabularies that
need no JSON or CSV escaping, optionally behind a constant ``prefix``), ``int``/``long`` as int64,
``timestamp`` as int64 epoch seconds and ``double`` as int64 hundredths (two decimals, so that
rendering is exact and cheap).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lakeloop.schemas import SourceSchema

__all__ = ["Col", "Frame", "render_lines", "rows_tokens", "join_tokens", "hex_ids", "vocabulary",
           "check_plain", "OMIT", "NULL_JSON"]

OMIT = None  # token of a key left out of a JSON object
NULL_JSON = "null"


@dataclass
class Col:
    """One column of generated rows.

    ``valid`` marks non-null rows (``None``: all valid).  A null is rendered as ``null`` when
    ``explicit_null`` is set and by leaving the key out otherwise (JSON); CSV renders an empty field.
    String values are rendered as ``prefix`` + value.
    """

    values: np.ndarray | pa.Array
    valid: np.ndarray | None = None
    explicit_null: bool = False
    prefix: str = ""


Frame = dict[str, Col]


def check_plain(words: Sequence[str], csv: bool = True) -> None:
    """Vocabulary strings must need no JSON escaping (and no CSV quoting when ``csv``)."""
    for w in words:
        if json.dumps(w, ensure_ascii=False) != f'"{w}"' or (csv and any(ch in w for ch in ',"\n\r')):
            raise ValueError(f"vocabulary word {w!r} needs escaping")


def vocabulary(words: Sequence[str], index: np.ndarray) -> pa.Array:
    """``words[index]`` as an Arrow string array."""
    return pc.take(pa.array(list(words), pa.string()), pa.array(index))


def hex_ids(ids: np.ndarray) -> pa.Array:
    """16 lowercase hex digits of each uint64, as an Arrow string array."""
    n = len(ids)
    data = ids.astype(">u8").tobytes().hex().encode("ascii")
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


@lru_cache(maxsize=1)
def _clock() -> pa.Array:
    sod = np.arange(86400)
    return pa.array([f"{h:02d}:{m:02d}:{s:02d}" for h, m, s in zip(sod // 3600, sod // 60 % 60, sod % 60, strict=True)])


def _mask(valid: np.ndarray | None) -> np.ndarray | None:
    return None if valid is None else ~valid


def _pieces(type_: str, col: Col) -> list:
    """Arrays (null where the value is null) and literals whose concatenation is the column's text."""
    values, mask = col.values, _mask(col.valid)
    if type_ == "string":
        arr = values if mask is None else pc.if_else(pa.array(col.valid), values, None)
        return [col.prefix, arr] if col.prefix else [arr]
    if type_ == "timestamp":  # YYYY-MM-DD "T" HH:MM:SS "Z" from two lookup tables
        days, sod = np.divmod(values.astype(np.int64), 86400)
        lo = int(days.min()) if len(days) else 0
        epoch = dt.date(1970, 1, 1)
        dates = pa.array([(epoch + dt.timedelta(days=d)).isoformat() + "T"
                          for d in range(lo, (int(days.max()) if len(days) else 0) + 1)])
        return [pc.take(dates, pa.array(days - lo, mask=mask)), pc.take(_clock(), pa.array(sod)), "Z"]
    if type_ == "double":
        whole, frac = np.divmod(values.astype(np.int64), 100)
        return [pc.cast(pa.array(whole, mask=mask), pa.string()), ".", pc.take(_cents(), pa.array(frac))]
    return [pc.cast(pa.array(values, mask=mask), pa.string())]


@lru_cache(maxsize=1)
def _cents() -> pa.Array:
    return pa.array([f"{c:02d}" for c in range(100)])


def _join(pieces: list) -> pa.Array:
    """Concatenate; a null in any array piece makes that row's result null."""
    return pc.binary_join_element_wise(*pieces, "", null_handling="emit_null")


def render_lines(schema: SourceSchema, frame: Frame, fmt: str) -> pa.Array:
    """Every row of ``frame`` as one line (with its ``\\n``), in the order of the schema's columns.

    The first column must have no nulls (it opens the JSON object).
    """
    out: list = []
    literal = "" if fmt == "csv" else "{"
    for i, column in enumerate(schema.columns):
        col = frame[column.name]
        pieces = _pieces(column.type, col)
        if fmt == "csv":
            text = pieces[0] if len(pieces) == 1 else _join(pieces)
            out += [literal + ("," if i else ""), text]
            literal = ""
            continue
        sep = "," if i else ""
        quote = '"' if column.type in ("string", "timestamp") else ""
        if col.valid is None:
            out += [f'{literal}{sep}"{column.name}":{quote}', *pieces]
            literal = quote
        elif col.explicit_null:
            out += [f'{literal}{sep}"{column.name}":',
                    pc.if_else(pa.array(col.valid), _join([quote, *pieces, quote]), NULL_JSON)]
            literal = ""
        else:
            assert i > 0, "the first JSON column must be present in every row"
            out += [literal, _join([f'{sep}"{column.name}":{quote}', *pieces, quote])]
            literal = ""
    out.append(literal + ("\n" if fmt == "csv" else "}\n"))
    return pc.binary_join_element_wise(*out, "", null_handling="replace", null_replacement="")


def _scalar_text(type_: str, value) -> str:
    if type_ == "double":
        return f"{value // 100}.{value % 100:02d}"
    if type_ == "timestamp":
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _column_tokens(column, col: Col, rows: np.ndarray, fmt: str) -> list:
    if isinstance(col.values, pa.Array):
        values = col.values.take(pa.array(rows)).to_pylist()
    else:
        values = col.values[rows].tolist()
    valid = [True] * len(rows) if col.valid is None else col.valid[rows].tolist()
    quote = '"' if fmt != "csv" and column.type in ("string", "timestamp") else ""
    absent = "" if fmt == "csv" else (NULL_JSON if col.explicit_null else OMIT)
    return [f"{quote}{col.prefix}{_scalar_text(column.type, v)}{quote}" if ok else absent
            for v, ok in zip(values, valid, strict=True)]


def rows_tokens(schema: SourceSchema, frame: Frame, rows: np.ndarray, fmt: str) -> list[list[tuple[str, str | None]]]:
    """Each row in ``rows`` as ``(column, token)`` pairs: a JSON token, ``OMIT`` or a CSV field."""
    by_column = [(c.name, _column_tokens(c, frame[c.name], rows, fmt)) for c in schema.columns]
    return [[(name, tokens[j]) for name, tokens in by_column] for j in range(len(rows))]


def join_tokens(tokens: Sequence[tuple[str, str | None]], fmt: str) -> str:
    """A line (without ``\\n``) from ``(column, token)`` pairs."""
    if fmt == "csv":
        return ",".join("" if t is None else t for _, t in tokens)
    return "{" + ",".join(f'"{k}":{t}' for k, t in tokens if t is not OMIT) + "}"
