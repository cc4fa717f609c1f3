"""Rendering generated rows as JSON lines or CSV lines.

Good rows are rendered column-wise with Arrow compute kernels (no Python loop per row); rows that
carry a defect are rendered one at a time as a list of ``(column, token)`` pairs that the defect
functions edit.  Both paths produce the same bytes for the same row.

Values are kept in a few physical forms: strings as Arrow string arrays (from vocabularies that
need no JSON or CSV escaping), ``int``/``long`` as int64, ``timestamp`` as int64 epoch seconds and
``double`` as int64 hundredths (two decimals, so that rendering is exact and cheap).
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

__all__ = ["Col", "Frame", "render_lines", "row_tokens", "join_tokens", "iso_seconds", "hex_ids",
           "check_plain", "OMIT", "NULL_JSON"]

OMIT = None  # token of a key left out of a JSON object
NULL_JSON = "null"


@dataclass
class Col:
    """One column of generated rows.

    ``valid`` marks non-null rows (``None``: all valid).  A null is rendered as ``null`` when
    ``explicit_null`` is set and by leaving the key out otherwise (JSON); CSV renders an empty field.
    """

    values: np.ndarray | pa.Array
    valid: np.ndarray | None = None
    explicit_null: bool = False


Frame = dict[str, Col]


def check_plain(words: Sequence[str], csv: bool = True) -> None:
    """Vocabulary strings must need no JSON escaping (and no CSV quoting when ``csv``)."""
    for w in words:
        if json.dumps(w, ensure_ascii=False) != f'"{w}"' or (csv and any(ch in w for ch in ',"\n\r')):
            raise ValueError(f"vocabulary word {w!r} needs escaping")


def hex_ids(prefix: str, ids: np.ndarray) -> pa.Array:
    """``prefix`` + 16 lowercase hex digits of each uint64, as an Arrow string array."""
    n = len(ids)
    data = ids.astype(">u8").tobytes().hex().encode("ascii")
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
    raw = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pc.binary_join_element_wise(prefix, raw, "")


@lru_cache(maxsize=1)
def _clock() -> pa.Array:
    sod = np.arange(86400)
    return pa.array([f"{h:02d}:{m:02d}:{s:02d}" for h, m, s in zip(sod // 3600, sod // 60 % 60, sod % 60)])


def iso_seconds(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds as ISO-8601 UTC strings ``YYYY-MM-DDTHH:MM:SSZ``."""
    days, sod = np.divmod(seconds.astype(np.int64), 86400)
    lo = int(days.min()) if len(days) else 0
    hi = int(days.max()) if len(days) else 0
    epoch = dt.date(1970, 1, 1)
    dates = pa.array([(epoch + dt.timedelta(days=d)).isoformat() + "T" for d in range(lo, hi + 1)])
    return pc.binary_join_element_wise(pc.take(dates, pa.array(days - lo)), pc.take(_clock(), pa.array(sod)),
                                       "Z", "")


def _hundredths(values: np.ndarray) -> pa.Array:
    whole, frac = np.divmod(values.astype(np.int64), 100)
    return pc.binary_join_element_wise(pc.cast(pa.array(whole), pa.string()),
                                       pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), 2, "0"), ".")


def _text(type_: str, values: np.ndarray | pa.Array) -> pa.Array:
    """Column values as plain text, the CSV field (and the JSON token, strings aside)."""
    if type_ == "string":
        return values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    if type_ == "timestamp":
        return iso_seconds(values)
    if type_ == "double":
        return _hundredths(values)
    return pc.cast(pa.array(values), pa.string())


def _json_token(type_: str, values: np.ndarray | pa.Array) -> pa.Array:
    text = _text(type_, values)
    if type_ in ("string", "timestamp"):
        return pc.binary_join_element_wise('"', text, '"', "")
    return text


def render_lines(schema: SourceSchema, frame: Frame, fmt: str) -> pa.Array:
    """Every row of ``frame`` as one line (with its ``\\n``), in the order of the schema's columns."""
    pieces: list[pa.Array | str] = []
    for i, column in enumerate(schema.columns):
        col = frame[column.name]
        if fmt == "csv":
            piece = _text(column.type, col.values)
            if col.valid is not None:
                piece = pc.if_else(pa.array(col.valid), piece, "")
            pieces += ([","] if i else []) + [piece]
            continue
        sep = "{" if i == 0 else ","
        piece = pc.binary_join_element_wise(f'{sep}"{column.name}":', _json_token(column.type, col.values), "")
        if col.valid is not None:
            absent = f'{sep}"{column.name}":null' if col.explicit_null else ("{" if i == 0 else "")
            piece = pc.if_else(pa.array(col.valid), piece, absent)
        pieces.append(piece)
    pieces.append("\n" if fmt == "csv" else "}\n")
    return pc.binary_join_element_wise(*pieces, "")


def _scalar_text(type_: str, value) -> str:
    if type_ == "double":
        return f"{value // 100}.{value % 100:02d}"
    if type_ == "timestamp":
        return dt.datetime.fromtimestamp(int(value), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def row_tokens(schema: SourceSchema, frame: Frame, i: int, fmt: str) -> list[tuple[str, str | None]]:
    """Row ``i`` as ``(column, token)`` pairs: a JSON token, ``OMIT`` or a CSV field."""
    out: list[tuple[str, str | None]] = []
    for column in schema.columns:
        col = frame[column.name]
        if col.valid is not None and not col.valid[i]:
            token = "" if fmt == "csv" else (NULL_JSON if col.explicit_null else OMIT)
        else:
            raw = col.values[i]
            value = raw.as_py() if isinstance(raw, pa.Scalar) else int(raw) if column.type != "string" else raw
            token = _scalar_text(column.type, value)
            if fmt != "csv" and column.type in ("string", "timestamp"):
                token = f'"{token}"'
        out.append((column.name, token))
    return out


def join_tokens(tokens: Sequence[tuple[str, str | None]], fmt: str) -> str:
    """A line (without ``\\n``) from ``(column, token)`` pairs."""
    if fmt == "csv":
        return ",".join("" if t is None else t for _, t in tokens)
    return "{" + ",".join(f'"{k}":{t}' for k, t in tokens if t is not OMIT) + "}"
