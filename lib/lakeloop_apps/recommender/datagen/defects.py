"""The kinds of bad records and how one defect is put into one row.

Each function receives a good row as ``(column, token)`` pairs and returns the line with exactly
one defect of its kind.  A defect never creates a second one: replaced values keep the column's
type where the kind requires it, and key columns stay unique (e.g. an out-of-range key is the
negated original key, never a shared constant).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from lakeloop.schemas import Column, SourceSchema, violation

from lakeloop_apps.recommender.datagen.render import NULL_JSON, OMIT, join_tokens

__all__ = ["KINDS", "VALID_KINDS", "QUARANTINE_KINDS", "applicable_kinds", "apply_defect"]

KINDS = ("good", "malformed", "wrong_type", "missing_required", "out_of_range", "duplicate", "unknown_field",
         "mixed_type_number")
VALID_KINDS = ("good", "unknown_field", "mixed_type_number")
QUARANTINE_KINDS = ("malformed", "wrong_type", "missing_required", "out_of_range", "duplicate")

Tokens = list[tuple[str, "str | None"]]

_EXTRA_FIELDS = (("utm_source", '"newsletter"'), ("app_version", '"4.12.0"'), ("ab_bucket", "3"),
                 ("referrer", '"https://shop.example/deals"'), ("device", '{"os":"android","model":"p7"}'))
_NOT_A_NUMBER = ("abc", "twelve", "12x", "N/A-7")
_NOT_A_TIME = ("yesterday", "soon", "last tuesday", "2026-13-45T25:61:00Z")


def _numeric(c: Column) -> bool:
    return c.type in ("int", "long", "double")


def _constrained(c: Column) -> bool:
    return c.range is not None or c.enum is not None or c.regex is not None


def _present(tokens: Tokens, fmt: str) -> set[str]:
    return {k for k, t in tokens if t is not OMIT and t != NULL_JSON and not (fmt == "csv" and t == "")}


def _unquote(token: str, fmt: str) -> str:
    return json.loads(token) if fmt != "csv" and token.startswith('"') else token


def _quote(text: str, column: Column, fmt: str) -> str:
    return f'"{text}"' if fmt != "csv" and column.type in ("string", "timestamp") else text


def _replace(tokens: Tokens, name: str, token: str | None) -> Tokens:
    return [(k, token if k == name else t) for k, t in tokens]


def _pick(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str,
          accept: Callable[[Column], bool]) -> Column:
    present = _present(tokens, fmt)
    candidates = [c for c in schema.columns if c.name in present and accept(c)]
    return rnd.choice(candidates)


def _malformed(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    if fmt == "csv":  # wrong number of fields
        return join_tokens(tokens[:-1] if rnd.random() < 0.5 else tokens + [("extra", "extra")], fmt)
    line = join_tokens(tokens, fmt)
    return line[: rnd.randint(max(1, len(line) // 4), len(line) - 1)]  # truncated: never valid JSON


def _wrong_type(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    col = _pick(rnd, schema, tokens, fmt, lambda c: c.type != "string")
    if col.name in schema.primary_key:  # stays unique: "x123"
        text = "x" + _unquote(dict(tokens)[col.name], fmt)
    elif col.type == "timestamp":
        text = rnd.choice(_NOT_A_TIME)
    elif col.type == "int" and rnd.random() < 0.5:
        text = f"{int(_unquote(dict(tokens)[col.name], fmt))}.5"
    else:
        text = rnd.choice(_NOT_A_NUMBER)
    token = text if fmt == "csv" or (col.type == "int" and text.endswith(".5")) else f'"{text}"'
    return join_tokens(_replace(tokens, col.name, token), fmt)


def _missing_required(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    col = _pick(rnd, schema, tokens, fmt, lambda c: c.required)
    token = "" if fmt == "csv" else (OMIT if rnd.random() < 0.5 else NULL_JSON)
    return join_tokens(_replace(tokens, col.name, token), fmt)


def _out_of_range_text(rnd: random.Random, col: Column, value: str, is_key: bool) -> str:
    if col.range is not None:
        lo, hi = col.range
        number = float(value)
        if is_key or hi is None or (lo is not None and rnd.random() < 0.5):
            bad = -abs(number) if is_key else lo - rnd.randint(1, 5)
        else:
            bad = hi + rnd.randint(1, 50) if col.type != "double" else hi * 2.5
        return f"{bad:.2f}" if col.type == "double" else str(int(bad))
    for bad in (value.upper(), value.lower(), "#" + value):
        if bad != value and violation(col, bad) is not None:
            return bad
    raise AssertionError(f"no out-of-range value for {col.name}={value!r}")


def _out_of_range(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    col = _pick(rnd, schema, tokens, fmt, _constrained)
    value = _unquote(dict(tokens)[col.name], fmt)
    if col.enum is not None:
        bad = value.upper() if value.upper() not in col.enum else f"{value}_x"
    else:
        bad = _out_of_range_text(rnd, col, value, col.name in schema.primary_key)
    return join_tokens(_replace(tokens, col.name, _quote(bad, col, fmt)), fmt)


def _unknown_field(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    extra = rnd.choice(_EXTRA_FIELDS)
    at = rnd.randint(1, len(tokens))
    return join_tokens(tokens[:at] + [extra] + tokens[at:], fmt)


def _mixed_type_number(rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    integral = fmt == "csv"
    col = _pick(rnd, schema, tokens, fmt, lambda c: c.type in ("int", "long") or (_numeric(c) and not integral))
    value = dict(tokens)[col.name]
    if col.type == "double":
        token = f'"{value}"'
    elif fmt == "csv":
        token = f"{value}.0"
    else:
        token = f'"{value}"' if rnd.random() < 0.5 else f'"{value}.0"'
    return join_tokens(_replace(tokens, col.name, token), fmt)


_APPLY: dict[str, Callable[[random.Random, SourceSchema, Tokens, str], str]] = {
    "malformed": _malformed,
    "wrong_type": _wrong_type,
    "missing_required": _missing_required,
    "out_of_range": _out_of_range,
    "unknown_field": _unknown_field,
    "mixed_type_number": _mixed_type_number,
}


def applicable_kinds(schema: SourceSchema, fmt: str) -> tuple[str, ...]:
    """The defect kinds a source can carry (``unknown_field`` only where the schema keeps unknown fields)."""
    kinds = ["malformed", "wrong_type", "missing_required", "out_of_range", "duplicate"]
    if fmt != "csv" and schema.unknown_fields == "keep":
        kinds.append("unknown_field")
    if any(c.type in ("int", "long") or (_numeric(c) and fmt != "csv") for c in schema.columns):
        kinds.append("mixed_type_number")
    return tuple(kinds)


def apply_defect(kind: str, rnd: random.Random, schema: SourceSchema, tokens: Tokens, fmt: str) -> str:
    """The line (without ``\\n``) of a good row given as ``tokens`` with one defect of ``kind``."""
    return _APPLY[kind](rnd, schema, tokens, fmt)
