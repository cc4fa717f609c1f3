"""Planning a day's files as independent parts, generating each part chunk by chunk, and the manifest.

A part is the unit of parallelism (one file, one Spark task); a chunk is the unit of memory.  Part
``k`` of a source depends only on ``(seed, date, source, k)`` and the plan, so parts can be written
in any order, in any process, and always come out byte-identical.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lakeloop.conf import ConfError
from lakeloop.paths import project_root
from lakeloop.schemas import SourceSchema, load_schema

from lakeloop_apps.recommender.datagen import files
from lakeloop_apps.recommender.datagen.defects import (
    KINDS,
    QUARANTINE_KINDS,
    VALID_KINDS,
    applicable_kinds,
    apply_defect,
)
from lakeloop_apps.recommender.datagen.render import join_tokens, render_lines, rows_tokens
from lakeloop_apps.recommender.datagen.response import react
from lakeloop_apps.recommender.datagen.sources import Exposures, event_frame, events_frame, items_frame, users_frame
from lakeloop_apps.recommender.datagen.world import EPOCH_DAY, rng_for, world

__all__ = ["Plan", "Task", "SOURCES", "make_plan", "default_schemas", "plan_tasks", "is_reaction_part", "run_task",
           "build_manifest", "GENERATOR_VERSION"]

GENERATOR_VERSION = 1
SOURCES: dict[str, tuple[int, str]] = {"events": (1, "jsonl"), "users": (2, "jsonl"), "items": (3, "csv")}
CHUNK_ROWS = 100_000
HEAD_ROWS = 10_000              # the first chunk of a part is small: the next part regenerates it
MAX_CHUNKS_PER_PART = 255       # chunk number has 8 bits in the session counter
_ROW_BITS, _PART_BITS = 28, 16  # event counter: day | part | row in part


@dataclass(frozen=True)
class Plan:
    """Everything that determines a day's bytes."""

    seed: int
    events: int
    users: int
    items: int
    bad_fraction: float
    parts: Mapping[str, int]
    schemas: Mapping[str, SourceSchema]
    chunk_rows: int = CHUNK_ROWS
    exposures: Exposures | None = field(default=None, compare=False)

    def rows(self, source: str) -> int:
        return {"events": self.events, "users": self.users, "items": self.items}[source]

    def part_bounds(self, source: str, part: int) -> tuple[int, int]:
        n, k = self.rows(source), self.parts[source]
        return n * part // k, n * (part + 1) // k

    def params(self) -> dict[str, Any]:
        exposed = 0 if self.exposures is None else int(np.count_nonzero(np.diff(self.exposures.offsets)))
        return {"events": self.events, "users": self.users, "items": self.items, "bad_fraction": self.bad_fraction,
                "parts": dict(self.parts), "chunk_rows": self.chunk_rows, "exposed_users": exposed}


@dataclass(frozen=True)
class Task:
    """One file: part ``part`` of ``source`` on ``date``."""

    landing: str
    date: str
    source: str
    part: int

    @property
    def day(self) -> int:
        return (dt.date.fromisoformat(self.date) - EPOCH_DAY).days

    @property
    def fmt(self) -> str:
        return SOURCES[self.source][1]

    @property
    def gz(self) -> bool:
        return self.source == "events" and self.part % 2 == 1  # events arrive both plain and gzipped

    @property
    def name(self) -> str:
        return files.part_name(self.part, self.fmt, self.gz)


def make_plan(*, events: int, users: int, items: int, seed: int, bad_fraction: float, parts: int | None = None,
              max_part_rows: int = 1_000_000, exposures: Mapping[int, Sequence[int]] | None = None,
              schemas: Mapping[str, SourceSchema] | None = None, chunk_rows: int = CHUNK_ROWS) -> Plan:
    """Validate the parameters and split each source into parts of at most ``max_part_rows`` rows.

    ``parts`` fixes the number of event parts; by default there are at least two, so that both
    plain and gzipped files appear.  ``schemas`` defaults to the project's ``schemas/<source>.yaml``.
    """
    schemas = dict(schemas) if schemas is not None else default_schemas()
    for source, (_, fmt) in SOURCES.items():
        if source not in schemas or schemas[source].format != fmt:
            raise ConfError(f"datagen: needs the {fmt} schema of source {source!r}")
    for name, value in (("events", events), ("users", users), ("items", items)):
        if not isinstance(value, (int, np.integer)) or value < (0 if name == "events" else 1):
            raise ConfError(f"datagen: {name} must be a{' non-negative' if name == 'events' else ' positive'} "
                             f"integer, got {value!r}")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ConfError(f"datagen: bad_fraction must be within [0, 1], got {bad_fraction!r}")
    if not 1 <= chunk_rows <= 1 << 20:  # sessions of a chunk are numbered in 20 bits
        raise ConfError(f"datagen: chunk_rows must be within [1, 1048576], got {chunk_rows!r}")
    max_rows = min(max_part_rows, chunk_rows * (MAX_CHUNKS_PER_PART - 1), 1 << _ROW_BITS)
    if max_rows < 1:
        raise ConfError(f"datagen: max_part_rows must be positive, got {max_part_rows!r}")
    counts = {"events": events, "users": users, "items": items}
    n_parts = {s: max(1, math.ceil(n / max_rows)) for s, n in counts.items()}
    if parts is not None:
        if parts < 1 or math.ceil(events / parts) > max_rows:
            raise ConfError(f"datagen: parts={parts} gives event parts of more than {max_rows} rows or none")
        n_parts["events"] = parts
    else:
        n_parts["events"] = max(n_parts["events"], min(2, max(events, 1)))
    if max(n_parts.values()) >= 1 << _PART_BITS:
        raise ConfError(f"datagen: too many parts ({max(n_parts.values())}); raise max_part_rows")
    return Plan(seed=int(seed), events=int(events), users=int(users), items=int(items),
                bad_fraction=float(bad_fraction), parts=n_parts,
                schemas=schemas, chunk_rows=chunk_rows,
                exposures=None if exposures is None else Exposures.build(exposures, users, items))


def default_schemas() -> dict[str, SourceSchema]:
    """The schemas of the generated sources from the project's ``schemas/`` folder."""
    root = project_root() / "schemas"
    return {s: load_schema(root / f"{s}.yaml", fmt, s) for s, (_, fmt) in SOURCES.items()}


def plan_tasks(landing: str, dates: Sequence[str], plan: Plan) -> list[Task]:
    """Every file of every date, largest sources first (they take longest); with exposures, each date
    also gets the reaction part (:func:`is_reaction_part`)."""
    order = sorted(SOURCES, key=plan.rows, reverse=True)
    extra = {s: int(s == "events" and plan.exposures is not None) for s in SOURCES}
    return [Task(landing, d, s, k) for d in dates for s in order for k in range(plan.parts[s] + extra[s])]


def is_reaction_part(plan: Plan, task: Task) -> bool:
    """The events part after the regular ones holds the reactions to the exposures (all good lines)."""
    return task.source == "events" and task.part == plan.parts["events"]


@dataclass
class _Chunk:
    """A chunk before duplicates are resolved: its good lines and the kind planned for each row."""

    lines: Any            # Arrow string array, one good line per row, each ending in "\n"
    kinds: np.ndarray     # index into KINDS per row
    frame: dict

    def line(self, i: int) -> bytes:
        return self.lines[i].as_py().encode("utf-8")


def _chunk_starts(plan: Plan, task: Task) -> list[int]:
    """Source row where each chunk of the part starts, and where the part ends.

    Chunk 0 holds at most ``HEAD_ROWS`` rows: the next part copies duplicates from it and so
    generates it a second time.
    """
    lo, hi = plan.part_bounds(task.source, task.part)
    head = min(hi, lo + min(HEAD_ROWS, plan.chunk_rows))
    return ([lo] if hi > lo else []) + list(range(head, hi, plan.chunk_rows)) + [hi]


def _chunk_bounds(plan: Plan, task: Task, chunk: int) -> tuple[int, int]:
    starts = _chunk_starts(plan, task)
    return starts[chunk], starts[chunk + 1]


def _n_bad(plan: Plan, start: int, stop: int) -> int:
    """Bad rows among source rows [start, stop): cumulative rounding makes the day's total exact."""
    f = plan.bad_fraction
    return math.floor(stop * f + 0.5) - math.floor(start * f + 0.5)


def _frame(plan: Plan, task: Task, chunk: int, rng: np.random.Generator, start: int, stop: int) -> dict:
    w = world(plan.seed, plan.users, plan.items)
    if task.source == "users":
        return users_frame(w, start, stop - start)
    if task.source == "items":
        return items_frame(w, task.day, start, stop - start)
    lo, _ = plan.part_bounds(task.source, task.part)
    base = _counter_base(task)
    return events_frame(w, rng, task.day, id_base=base + start - lo, n=stop - start,
                        session_base=base | (chunk << 20))


def _counter_base(task: Task) -> int:
    """First event counter of an events part: day | part | row in part."""
    return (task.day << (_PART_BITS + _ROW_BITS)) | (task.part << _ROW_BITS)


def _base_chunk(plan: Plan, task: Task, chunk: int) -> tuple[_Chunk, np.random.Generator]:
    start, stop = _chunk_bounds(plan, task, chunk)
    rng = rng_for(plan.seed, task.day, SOURCES[task.source][0], task.part, chunk)
    frame = _frame(plan, task, chunk, rng, start, stop)
    n = stop - start
    kinds = np.zeros(n, dtype=np.int8)
    n_bad = _n_bad(plan, start, stop)
    codes = np.array([KINDS.index(k) for k in applicable_kinds(plan.schemas[task.source], task.fmt)], np.int8)
    bad = rng.choice(n, size=n_bad, replace=False)
    kinds[bad] = codes[rng.integers(0, len(codes), n_bad)]
    return _Chunk(render_lines(plan.schemas[task.source], frame, task.fmt), kinds, frame), rng


_DUP, _GOOD = KINDS.index("duplicate"), KINDS.index("good")
_FALLBACK = KINDS.index("malformed")  # for a duplicate with no earlier good line to copy


def _duplicate(rnd: random.Random, chunk: _Chunk, good: np.ndarray, pos: int,
               earlier: _Chunk | None, earlier_good: np.ndarray) -> bytes | None:
    """A copy of an earlier good line: from this chunk before ``pos`` or from the previous part."""
    n_local = int(np.searchsorted(good, pos))
    if len(earlier_good) and (not n_local or rnd.random() < 0.5):
        return earlier.line(int(earlier_good[rnd.randrange(len(earlier_good))]))
    if n_local:
        return chunk.line(int(good[rnd.randrange(n_local)]))
    return None


def _chunk_bytes(plan: Plan, task: Task, chunk: int, counts: Counter) -> bytes:
    """The final bytes of one chunk; adds the kind of each of its rows to ``counts``."""
    base, rng = _base_chunk(plan, task, chunk)
    schema = plan.schemas[task.source]
    rnd = random.Random(int(rng.integers(0, 2**63)))
    good = np.flatnonzero(base.kinds == _GOOD)
    bad = np.flatnonzero(base.kinds != _GOOD)
    dups = bad[base.kinds[bad] == _DUP]
    earlier = None  # chunk 0 of the previous part, whose good lines may reappear here
    if chunk == 0 and task.part > 0 and len(dups):
        earlier = _base_chunk(plan, Task(task.landing, task.date, task.source, task.part - 1), 0)[0]
    earlier_good = np.flatnonzero(earlier.kinds == _GOOD) if earlier is not None else good[:0]
    replacements: dict[int, bytes] = {}
    for pos in dups:
        line = _duplicate(rnd, base, good, int(pos), earlier, earlier_good)
        if line is None:
            base.kinds[pos] = _FALLBACK
        else:
            replacements[int(pos)] = line
    defective = bad[base.kinds[bad] != _DUP]
    for pos, tokens in zip(defective, rows_tokens(schema, base.frame, defective, task.fmt), strict=True):
        line = apply_defect(KINDS[base.kinds[pos]], rnd, schema, tokens, task.fmt)
        replacements[int(pos)] = (line + "\n").encode("utf-8")
    counts.update({KINDS[k]: int(c) for k, c in zip(*np.unique(base.kinds, return_counts=True), strict=True)})
    return _splice(base.lines, replacements)


def _splice(lines, replacements: dict[int, bytes]) -> bytes:
    """The bytes of an Arrow array of lines with some lines replaced."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    pieces: list[bytes] = []
    done = int(offsets[0])
    for pos in sorted(replacements):
        pieces += [data[done:int(offsets[pos])].to_pybytes(), replacements[pos]]
        done = int(offsets[pos + 1])
    pieces.append(data[done:int(offsets[-1])].to_pybytes())
    return b"".join(pieces)


def _header(schema: SourceSchema) -> bytes:
    return (join_tokens([(c.name, c.name) for c in schema.columns], "csv") + "\n").encode("utf-8")


def _reaction_task(plan: Plan, task: Task) -> dict[str, Any]:
    """Write the reaction part of a date: the reaction events, sorted by time, as good lines."""
    reactions = react(world(plan.seed, plan.users, plan.items), plan.exposures, plan.seed, task.day)
    n = len(reactions.events.ts)
    base = _counter_base(task)
    if n >= 1 << _ROW_BITS or reactions.exposed_users >= 1 << 20:
        raise ConfError(f"datagen: {n} reaction events of {reactions.exposed_users} users do not fit one part")
    order = np.argsort(reactions.events.ts, kind="stable")
    frame = event_frame(world(plan.seed, plan.users, plan.items), task.day, base + order, base,
                        reactions.events.take(order))
    path = files.partition_dir(task.landing, task.source, task.date) / task.name
    written = files.write_atomic(path, [_splice(render_lines(plan.schemas["events"], frame, task.fmt), {})],
                                 gz=task.gz)
    return {"date": task.date, "source": task.source, "part": task.part,
            "path": str(path.relative_to(task.landing)), "rows": n, "bytes": written.bytes,
            "sha256": written.sha256, "counts": {k: n if k == "good" else 0 for k in KINDS},
            "reactions": reactions.summary()}


def run_task(plan: Plan, task: Task) -> dict[str, Any]:
    """Write one part file; returns its manifest entry (path relative to landing, rows, bytes,
    sha256) and the count of each kind of row in it."""
    if is_reaction_part(plan, task):
        return _reaction_task(plan, task)
    counts: Counter = Counter()
    lo, hi = plan.part_bounds(task.source, task.part)
    n_chunks = len(_chunk_starts(plan, task)) - 1  # an empty part is an empty file

    def chunks() -> Iterator[bytes]:
        if task.fmt == "csv":
            yield _header(plan.schemas[task.source])
        for c in range(n_chunks):
            yield _chunk_bytes(plan, task, c, counts)

    path = files.partition_dir(task.landing, task.source, task.date) / task.name
    written = files.write_atomic(path, chunks(), gz=task.gz)
    return {"date": task.date, "source": task.source, "part": task.part,
            "path": str(path.relative_to(task.landing)), "rows": hi - lo, "bytes": written.bytes,
            "sha256": written.sha256, "counts": {k: counts.get(k, 0) for k in KINDS}}


def build_manifest(plan: Plan, date: str, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ground truth of one date: files, row counts per kind and the expected curation outcome;
    with exposures, ``reactions`` sums up the reaction part (:meth:`Reactions.summary`)."""
    sources: dict[str, Any] = {}
    for source, (_, fmt) in SOURCES.items():
        mine = sorted((r for r in results if r["date"] == date and r["source"] == source), key=lambda r: r["part"])
        counts = {k: sum(r["counts"][k] for r in mine) for k in KINDS}
        sources[source] = {
            "format": fmt,
            "files": [{k: r[k] for k in ("path", "rows", "bytes", "sha256")} for r in mine],
            "rows": sum(r["rows"] for r in mine),
            "counts": counts,
            "expected_silver": sum(counts[k] for k in VALID_KINDS),
            "expected_quarantine": {k: counts[k] for k in QUARANTINE_KINDS},
        }
    manifest = {"date": date, "seed": plan.seed, "generator_version": GENERATOR_VERSION,
                "params": plan.params(), "sources": sources}
    if plan.exposures is not None:
        part = next(r for r in results if r["date"] == date and r["source"] == "events" and "reactions" in r)
        manifest["reactions"] = {**part["reactions"], "path": part["path"]}
    return manifest
